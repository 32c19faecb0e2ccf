"""The sidecar's micro-batcher, against a stand-in core that takes IngestStripeEvents:
concurrent deliveries travel in few calls and each HTTP request is answered from its own
result (stored and duplicate 200, rejected 400); a failed call answers all of its
deliveries alike (503 or 500); batches keep within the byte limit; deliveries in flight
at stop are answered; and a core from before batching gets one call per delivery."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest

from nobill.v1 import billing_pb2, billing_pb2_grpc
from nobill.webhooks import core_client
from nobill.webhooks.core_client import CoreClient, ServiceToken
from nobill.webhooks.sidecar import RunningSidecar, start_sidecar
from test_sidecar import StandInCore, post

R = billing_pb2


@dataclass
class BatchingCore(billing_pb2_grpc.BillingServiceServicer):
    """Answers each delivery by its event id: `evt_dup...` duplicate, `evt_bad...` rejected,
    anything else stored; or fails whole calls with `code`. Records every call."""

    code: grpc.StatusCode = grpc.StatusCode.OK
    calls: list[tuple[list[bytes], dict[str, str]]] = field(default_factory=list)
    release: threading.Event | None = None
    arrived: threading.Event = field(default_factory=threading.Event)
    short_answer: bool = False  # answer one result too few

    def IngestStripeEvents(self, request, context):  # noqa: N802 (gRPC method name)
        self.arrived.set()
        if self.release is not None:
            self.release.wait(10)
        self.calls.append(([d.payload for d in request.deliveries], dict(context.invocation_metadata())))
        if self.code is not grpc.StatusCode.OK:
            context.abort(self.code, f"stand-in says {self.code.name}")
        results = [_result(delivery.payload) for delivery in request.deliveries]
        return billing_pb2.IngestStripeEventsResponse(results=results[:-1] if self.short_answer else results)


def _result(payload: bytes) -> billing_pb2.StripeDeliveryResult:
    event = json.loads(payload)
    if event["id"].startswith("evt_bad"):
        return billing_pb2.StripeDeliveryResult(
            outcome=R.STRIPE_DELIVERY_OUTCOME_REJECTED, reject_reason=R.STRIPE_DELIVERY_REJECT_REASON_SIGNATURE_INVALID,
            message="bad signature: no signatures found matching",
        )
    outcome = R.STRIPE_DELIVERY_OUTCOME_DUPLICATE if event["id"].startswith("evt_dup") else R.STRIPE_DELIVERY_OUTCOME_STORED
    return billing_pb2.StripeDeliveryResult(outcome=outcome, event_id=event["id"], event_type=event["type"])


def _serve(servicer: billing_pb2_grpc.BillingServiceServicer) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    billing_pb2_grpc.add_BillingServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


@pytest.fixture
def core() -> Iterator[tuple[BatchingCore, int]]:
    servicer = BatchingCore()
    server, port = _serve(servicer)
    yield servicer, port
    server.stop(0)


@pytest.fixture
def sidecar(core: tuple[BatchingCore, int]) -> Iterator[RunningSidecar]:
    running = start_sidecar("127.0.0.1:0", CoreClient(f"127.0.0.1:{core[1]}", ServiceToken(token="sidecar-token")))
    yield running
    running.stop(grace=1)


def _body(event_id: str, padding: int = 0) -> bytes:
    return json.dumps({"id": event_id, "object": "event", "type": "invoice.paid", "padding": "x" * padding}).encode()


def _post_all(port: int, bodies: list[bytes]) -> list[tuple[int, dict]]:
    """POST every body at once (a thread each); the answers in the bodies' order."""
    answers: list[tuple[int, dict] | None] = [None] * len(bodies)

    def send(index: int) -> None:
        status, _, answer = post(port, bodies[index])
        answers[index] = (status, json.loads(answer))

    threads = [threading.Thread(target=send, args=(index,)) for index in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert all(answer is not None for answer in answers)
    return answers  # type: ignore[return-value]


def test_concurrent_deliveries_travel_in_few_calls_and_each_gets_its_own_answer(sidecar, core) -> None:
    servicer, _ = core
    servicer.release = threading.Event()
    bodies = [_body(f"evt_{index}") for index in range(40)]
    answers: list[list[tuple[int, dict]]] = []
    sender = threading.Thread(target=lambda: answers.append(_post_all(sidecar.port, bodies)))
    sender.start()
    assert servicer.arrived.wait(10)
    threading.Event().wait(0.5)  # the rest queue behind the calls in flight
    servicer.release.set()
    sender.join(30)

    [answered] = answers
    assert answered == [(200, {"received": True, "id": f"evt_{index}", "duplicate": False}) for index in range(40)]
    sizes = [len(payloads) for payloads, _ in servicer.calls]
    assert sum(sizes) == 40 and len(sizes) <= 1 + core_client.MAX_BATCHES_IN_FLIGHT, sizes
    assert sorted(p for payloads, _ in servicer.calls for p in payloads) == sorted(bodies)
    for _, metadata in servicer.calls:  # one request id per call
        assert metadata["authorization"] == "Bearer sidecar-token" and len(metadata["x-request-id"]) == 32


def test_stored_duplicate_and_rejected_deliveries_of_one_batch_are_answered_200_200_400(sidecar, core) -> None:
    answers = _post_all(sidecar.port, [_body("evt_new"), _body("evt_dup_1"), _body("evt_bad_1")])
    assert answers == [
        (200, {"received": True, "id": "evt_new", "duplicate": False}),
        (200, {"received": True, "id": "evt_dup_1", "duplicate": True}),
        (400, {"error": "bad signature: no signatures found matching"}),
    ]


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED])
def test_a_batch_the_core_cannot_store_now_is_503_for_each_delivery(sidecar, core, code) -> None:
    core[0].code = code
    assert {status for status, _ in _post_all(sidecar.port, [_body(f"evt_{i}") for i in range(5)])} == {503}


def test_a_batch_the_core_refuses_is_500_naming_the_calls_request_id(sidecar, core) -> None:
    servicer, _ = core
    servicer.code = grpc.StatusCode.PERMISSION_DENIED
    status, _, answer = post(sidecar.port, _body("evt_1"))
    assert status == 500
    [(_, metadata)] = servicer.calls
    assert metadata["x-request-id"] in json.loads(answer)["error"]


def test_a_core_that_answers_the_wrong_number_of_results_is_500(sidecar, core) -> None:
    core[0].short_answer = True
    assert {status for status, _ in _post_all(sidecar.port, [_body(f"evt_{i}") for i in range(3)])} == {500}


def test_a_batch_keeps_within_the_byte_limit(sidecar, core, monkeypatch) -> None:
    servicer, _ = core
    monkeypatch.setattr(core_client, "MAX_BATCH_BYTES", 250_000)
    servicer.release = threading.Event()
    bodies = [_body(f"evt_{index}", padding=100_000) for index in range(7)]
    answers: list[list[tuple[int, dict]]] = []
    sender = threading.Thread(target=lambda: answers.append(_post_all(sidecar.port, bodies)))
    sender.start()
    assert servicer.arrived.wait(10)
    threading.Event().wait(0.5)
    servicer.release.set()
    sender.join(30)
    assert [status for status, _ in answers[0]] == [200] * 7
    assert all(sum(len(p) for p in payloads) <= 250_000 for payloads, _ in servicer.calls)
    assert sum(len(payloads) for payloads, _ in servicer.calls) == 7


def test_deliveries_in_a_batch_in_flight_at_stop_are_answered(core) -> None:
    servicer, port = core
    servicer.release = threading.Event()
    running = start_sidecar("127.0.0.1:0", CoreClient(f"127.0.0.1:{port}", ServiceToken(token="t")))
    answers: list[list[tuple[int, dict]]] = []
    sender = threading.Thread(target=lambda: answers.append(_post_all(running.port, [_body("evt_a"), _body("evt_b")])))
    sender.start()
    assert servicer.arrived.wait(10)
    stopper = threading.Thread(target=running.stop, kwargs={"grace": 5})
    stopper.start()
    stopper.join(0.5)
    assert stopper.is_alive(), "stop must wait for the deliveries in flight"
    servicer.release.set()
    sender.join(10)
    stopper.join(10)
    assert [status for status, _ in answers[0]] == [200, 200]


def test_a_core_from_before_batching_gets_one_call_per_delivery() -> None:
    servicer = StandInCore()  # IngestStripeEvent only: IngestStripeEvents is UNIMPLEMENTED
    server, port = _serve(servicer)
    client = CoreClient(f"127.0.0.1:{port}", ServiceToken(token="t"))
    running = start_sidecar("127.0.0.1:0", client)
    try:
        assert {status for status, _ in _post_all(running.port, [_body(f"evt_{i}") for i in range(4)])} == {200}
        assert post(running.port, _body("evt_later"))[0] == 200
        assert len(servicer.calls) == 5
        tried = client.batches_sent
        assert 1 <= tried <= 4
        assert post(running.port, _body("evt_last"))[0] == 200
        assert client.batches_sent == tried, "after UNIMPLEMENTED it stops trying batches for a while"
        assert len(servicer.calls) == 6
    finally:
        running.stop(grace=1)
        server.stop(0)

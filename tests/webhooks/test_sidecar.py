"""The webhook sidecar's HTTP contract, against a stand-in core that records what it is handed.

The sidecar is a separate process from the core in production; here the core is a real gRPC
server whose IngestStripeEvent answers what each test sets, so every status mapping is seen
over real HTTP and real gRPC."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest

from nobill.v1 import billing_pb2, billing_pb2_grpc
from nobill.webhooks.core_client import CoreClient, ServiceToken
from nobill.webhooks.sidecar import MAX_BODY_BYTES, RunningSidecar, start_sidecar


@dataclass
class StandInCore(billing_pb2_grpc.BillingServiceServicer):
    """Answers IngestStripeEvent with `code` (OK: a stored event) and records each call."""

    code: grpc.StatusCode = grpc.StatusCode.OK
    duplicate: bool = False
    calls: list[tuple[bytes, str, dict[str, str]]] = field(default_factory=list)
    # When set, each call waits for `release` after announcing itself on `arrived`.
    release: threading.Event | None = None
    arrived: threading.Event = field(default_factory=threading.Event)

    def IngestStripeEvent(self, request, context):  # noqa: N802 (gRPC method name)
        self.arrived.set()
        if self.release is not None:
            self.release.wait(10)
        self.calls.append((request.payload, request.signature_header, dict(context.invocation_metadata())))
        if self.code is not grpc.StatusCode.OK:
            context.abort(self.code, f"stand-in says {self.code.name}")
        event = json.loads(request.payload)
        return billing_pb2.IngestStripeEventResponse(event_id=event["id"], event_type=event["type"], duplicate=self.duplicate)


@pytest.fixture
def core() -> Iterator[tuple[StandInCore, int]]:
    servicer = StandInCore()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    billing_pb2_grpc.add_BillingServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(0)


@pytest.fixture
def sidecar(core: tuple[StandInCore, int]) -> Iterator[RunningSidecar]:
    running = start_sidecar("127.0.0.1:0", CoreClient(f"127.0.0.1:{core[1]}", ServiceToken(token="sidecar-token")))
    yield running
    running.stop(grace=1)


EVENT = json.dumps({"id": "evt_1", "object": "event", "type": "invoice.paid"}).encode()
SIGNATURE = "t=1700000000,v1=abc"


def post(port: int, body: bytes, *, path: str = "/stripe/webhooks", method: str = "POST",
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    connection.request(method, path, body=body, headers={"Stripe-Signature": SIGNATURE, **(headers or {})})
    response = connection.getresponse()
    answer = response.status, dict(response.getheaders()), response.read()
    connection.close()
    return answer


def test_a_stored_event_is_acknowledged_with_the_raw_body_and_header_forwarded(sidecar, core) -> None:
    servicer, _ = core
    body = EVENT + b"  \n"  # bytes the signature covers, whitespace included
    status, _, answer = post(sidecar.port, body)
    assert status == 200
    assert json.loads(answer) == {"received": True, "id": "evt_1", "duplicate": False}
    [(payload, header, metadata)] = servicer.calls
    assert payload == body
    assert header == SIGNATURE
    assert metadata["authorization"] == "Bearer sidecar-token"
    assert len(metadata["x-request-id"]) == 32


def test_a_redelivery_is_acknowledged_and_said_to_be_a_duplicate(sidecar, core) -> None:
    core[0].duplicate = True
    status, _, answer = post(sidecar.port, EVENT)
    assert status == 200
    assert json.loads(answer)["duplicate"] is True


def test_a_signature_the_core_refuses_is_400(sidecar, core) -> None:
    core[0].code = grpc.StatusCode.INVALID_ARGUMENT
    status, _, answer = post(sidecar.port, EVENT)
    assert status == 400
    assert "INVALID_ARGUMENT" in json.loads(answer)["error"]


def test_no_signature_header_is_400_without_bothering_the_core(sidecar, core) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", sidecar.port, timeout=15)
    connection.request("POST", "/stripe/webhooks", body=EVENT)
    response = connection.getresponse()
    assert response.status == 400
    assert b"Stripe-Signature" in response.read()
    assert core[0].calls == []


def test_an_empty_body_is_400(sidecar, core) -> None:
    status, _, _ = post(sidecar.port, b"")
    assert status == 400
    assert core[0].calls == []


def test_a_body_over_one_mebibyte_is_413(sidecar, core) -> None:
    status, _, _ = post(sidecar.port, b"x" * (MAX_BODY_BYTES + 1))
    assert status == 413
    assert core[0].calls == []


def test_a_chunked_body_over_one_mebibyte_is_413(sidecar, core) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", sidecar.port, timeout=15)
    chunks = iter([b"x" * 65536] * (MAX_BODY_BYTES // 65536 + 2))
    connection.request("POST", "/stripe/webhooks", body=chunks, headers={"Stripe-Signature": SIGNATURE}, encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 413
    assert core[0].calls == []


def test_a_body_of_exactly_one_mebibyte_is_forwarded(sidecar, core) -> None:
    core[0].code = grpc.StatusCode.INVALID_ARGUMENT  # not an event: the core's call, not the sidecar's
    status, _, _ = post(sidecar.port, b"x" * MAX_BODY_BYTES)
    assert status == 400
    assert len(core[0].calls) == 1


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED])
def test_a_core_that_cannot_store_now_is_503_so_stripe_retries(sidecar, core, code) -> None:
    core[0].code = code
    status, headers, _ = post(sidecar.port, EVENT)
    assert status == 503
    assert headers["Retry-After"] == "5"


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INTERNAL])
def test_a_misconfigured_or_broken_core_is_500_so_stripe_keeps_the_event(sidecar, core, code) -> None:
    core[0].code = code
    status, _, answer = post(sidecar.port, EVENT)
    assert status == 500
    assert "request id" in json.loads(answer)["error"]


def test_a_core_that_is_not_running_is_503() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    running = start_sidecar("127.0.0.1:0", CoreClient(f"127.0.0.1:{dead_port}", ServiceToken(token="t"), timeout=2))
    try:
        status, _, _ = post(running.port, EVENT)
        assert status == 503
    finally:
        running.stop(grace=1)


def test_other_paths_are_404_and_other_methods_405(sidecar, core) -> None:
    assert post(sidecar.port, EVENT, path="/stripe/webhook")[0] == 404
    assert post(sidecar.port, EVENT, path="/")[0] == 404
    for method in ("GET", "PUT", "DELETE"):
        assert post(sidecar.port, b"", method=method)[0] == 405
    assert core[0].calls == []


def test_health_is_200_while_serving_and_503_while_draining(core) -> None:
    running = start_sidecar("127.0.0.1:0", CoreClient(f"127.0.0.1:{core[1]}", ServiceToken(token="t")))
    assert post(running.port, b"", path="/healthz", method="GET")[0] == 200
    running._draining.set()
    assert post(running.port, b"", path="/healthz", method="GET")[0] == 503
    assert post(running.port, EVENT)[0] == 503
    running.stop(grace=1)


def test_deliveries_in_flight_at_stop_are_answered(core) -> None:
    servicer, port = core
    servicer.release = threading.Event()
    running = start_sidecar("127.0.0.1:0", CoreClient(f"127.0.0.1:{port}", ServiceToken(token="t")))
    answers: list[int] = []
    sender = threading.Thread(target=lambda: answers.append(post(running.port, EVENT)[0]))
    sender.start()
    assert servicer.arrived.wait(10)
    stopper = threading.Thread(target=running.stop, kwargs={"grace": 5})
    stopper.start()
    stopper.join(0.5)
    assert stopper.is_alive(), "stop must wait for the delivery in flight"
    servicer.release.set()
    sender.join(10)
    stopper.join(10)
    assert answers == [200]
    assert len(servicer.calls) == 1


def test_minted_tokens_are_renewed_before_they_expire() -> None:
    minted: list[int] = []

    def mint(lifetime: int) -> str:
        minted.append(lifetime)
        return f"token-{len(minted)}"

    token = ServiceToken(mint=mint)
    assert token.current() == "token-1"
    assert token.current() == "token-1"
    token._renew_at = 0.0  # as if the renewal time had come
    assert token.current() == "token-2"
    assert minted == [3600, 3600]


def test_deliveries_before_the_core_is_known_are_503_then_forwarded(core) -> None:
    servicer, port = core
    target: dict[str, str] = {}
    running = start_sidecar("127.0.0.1:0", CoreClient(lambda: target.get("addr"), ServiceToken(token="t")))
    try:
        assert post(running.port, EVENT)[0] == 503
        target["addr"] = f"127.0.0.1:{port}"
        assert post(running.port, EVENT)[0] == 200
        assert len(servicer.calls) == 1
    finally:
        running.stop(grace=1)

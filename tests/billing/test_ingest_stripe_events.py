"""IngestStripeEvents: a batch of deliveries in one transaction. Each delivery is judged on
its own (stored, duplicate, or rejected with a reason, in the request's order); only the
good ones are stored; one apply message carries the batch's newly stored handled events; a
request wrong as a whole is INVALID_ARGUMENT with a BadRequest and stores nothing."""

from __future__ import annotations

import json
import time
import uuid

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from billing_helpers import BillingWorld
from nobill.billing import inbox
from nobill.db.unit_of_work import UnitOfWork
from nobill.stripe.webhooks import sign
from nobill.v1 import billing_pb2, billing_pb2_grpc
from support import bearer, code_of, mint, new_user

R = billing_pb2


def _event(event_type: str = "product.updated", **object_fields: object) -> dict:
    return {
        "id": f"evt_batch_{uuid.uuid4().hex}", "object": "event", "api_version": "2026-10-28.endive",
        "created": int(time.time()), "livemode": False, "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None}, "type": event_type,
        "data": {"object": {"id": "prod_x", "object": "product", **object_fields}},
    }


def _signed(world: BillingWorld, event: dict, **sign_options: int) -> billing_pb2.StripeWebhookDelivery:
    payload = json.dumps(event).encode()
    return billing_pb2.StripeWebhookDelivery(payload=payload, signature_header=sign(payload, world.webhook_secret, **sign_options))


def _ingest(world: BillingWorld, deliveries: list[billing_pb2.StripeWebhookDelivery], token: str | None = None):  # noqa: ANN202
    stub = billing_pb2_grpc.BillingServiceStub(world.channel)
    return stub.IngestStripeEvents(
        billing_pb2.IngestStripeEventsRequest(deliveries=deliveries), metadata=bearer(token or world.ingest_token()), timeout=20
    )


def _states(world: BillingWorld, event_ids: list[str]) -> dict[str, str]:
    return {event_id: record.state for event_id, record in inbox.find(database=world.database, event_ids=event_ids).items()}


def test_a_mixed_batch_gets_one_result_per_delivery_in_order(billing: BillingWorld) -> None:
    ignored, handled, earlier, twice = _event(), _event("customer.subscription.updated", customer="cus_nobody"), _event(), _event()
    _ingest(billing, [_signed(billing, earlier)])  # stored before: its redelivery is a duplicate
    forged_payload = json.dumps(_event()).encode()
    stale, malformed = _event(), b"this is not json"
    deliveries = [
        _signed(billing, ignored),
        billing_pb2.StripeWebhookDelivery(payload=forged_payload, signature_header=sign(forged_payload, "whsec_someone_else")),
        _signed(billing, handled),
        _signed(billing, earlier),
        _signed(billing, stale, timestamp=int(time.time()) - 301),
        billing_pb2.StripeWebhookDelivery(payload=malformed, signature_header=sign(malformed, billing.webhook_secret)),
        _signed(billing, twice),
        billing_pb2.StripeWebhookDelivery(payload=json.dumps(_event()).encode(), signature_header=""),
        _signed(billing, twice),  # the same event again within the batch
    ]
    results = _ingest(billing, deliveries).results
    assert [(r.outcome, r.reject_reason) for r in results] == [
        (R.STRIPE_DELIVERY_OUTCOME_STORED, R.STRIPE_DELIVERY_REJECT_REASON_UNSPECIFIED),
        (R.STRIPE_DELIVERY_OUTCOME_REJECTED, R.STRIPE_DELIVERY_REJECT_REASON_SIGNATURE_INVALID),
        (R.STRIPE_DELIVERY_OUTCOME_STORED, R.STRIPE_DELIVERY_REJECT_REASON_UNSPECIFIED),
        (R.STRIPE_DELIVERY_OUTCOME_DUPLICATE, R.STRIPE_DELIVERY_REJECT_REASON_UNSPECIFIED),
        (R.STRIPE_DELIVERY_OUTCOME_REJECTED, R.STRIPE_DELIVERY_REJECT_REASON_TIMESTAMP_OUTSIDE_TOLERANCE),
        (R.STRIPE_DELIVERY_OUTCOME_REJECTED, R.STRIPE_DELIVERY_REJECT_REASON_NOT_A_STRIPE_EVENT),
        (R.STRIPE_DELIVERY_OUTCOME_STORED, R.STRIPE_DELIVERY_REJECT_REASON_UNSPECIFIED),
        (R.STRIPE_DELIVERY_OUTCOME_REJECTED, R.STRIPE_DELIVERY_REJECT_REASON_SIGNATURE_MISSING),
        (R.STRIPE_DELIVERY_OUTCOME_DUPLICATE, R.STRIPE_DELIVERY_REJECT_REASON_UNSPECIFIED),
    ]
    assert [(r.event_id, r.event_type) for r in results[:4]] == [
        (ignored["id"], "product.updated"), ("", ""), (handled["id"], "customer.subscription.updated"), (earlier["id"], "product.updated"),
    ]
    assert all(r.message for r in results if r.outcome == R.STRIPE_DELIVERY_OUTCOME_REJECTED)
    assert not any(r.message for r in results if r.outcome != R.STRIPE_DELIVERY_OUTCOME_REJECTED)
    assert results[6].event_id == results[8].event_id == twice["id"]
    states = _states(billing, [ignored["id"], handled["id"], earlier["id"], twice["id"], stale["id"]])
    assert states[ignored["id"]] == "ignored" and states[twice["id"]] == "ignored"
    assert states[handled["id"]] in ("pending", "parked")  # its customer is nobody's: retried, then parked
    assert stale["id"] not in states, "a rejected delivery stores nothing"


@pytest.mark.parametrize("case", ["empty", "too_many", "too_large"])
def test_a_request_wrong_as_a_whole_is_invalid_argument_and_stores_nothing(billing: BillingWorld, case: str) -> None:
    events = []
    if case == "too_many":
        events = [_event() for _ in range(inbox.MAX_BATCH_DELIVERIES + 1)]
    elif case == "too_large":  # five deliveries of 900 KiB: each fine, together over 4 MiB
        events = [_event(padding="x" * 900 * 1024) for _ in range(5)]
    with pytest.raises(grpc.RpcError) as failure:
        _ingest(billing, [_signed(billing, event) for event in events])
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(failure.value)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert any(detail.Unpack(bad_request) for detail in status.details)
    assert bad_request.field_violations[0].field == "deliveries"
    assert _states(billing, [event["id"] for event in events]) == {}


def test_only_the_webhooks_ingest_scope_may_ingest_batches(billing: BillingWorld) -> None:
    deliveries = [_signed(billing, _event())]
    user = new_user(billing.channel)
    assert code_of(lambda: _ingest(billing, deliveries, user.token)) == grpc.StatusCode.PERMISSION_DENIED
    other = mint("svc-other", service=True, scopes=("usage:write",), orgs=("*",))
    assert code_of(lambda: _ingest(billing, deliveries, other)) == grpc.StatusCode.PERMISSION_DENIED


def test_a_batch_sends_one_apply_message_for_its_newly_stored_handled_events(billing: BillingWorld, monkeypatch) -> None:  # noqa: ANN001
    sent: list[tuple[str, tuple, float]] = []
    monkeypatch.setattr(inbox, "send", lambda actor, *args, delay_seconds=0: sent.append((actor, args, delay_seconds)))
    def delivery(event: dict) -> inbox.Delivery:
        payload = json.dumps(event).encode()
        return inbox.Delivery(payload, sign(payload, billing.webhook_secret))

    handled = [_event("invoice.paid", customer="cus_nobody") for _ in range(3)]
    already = _event("customer.subscription.updated", customer="cus_nobody")
    with UnitOfWork(billing.database) as uow:
        inbox.ingest_batch(uow=uow, deliveries=[delivery(already)], secrets=billing.settings.stripe_webhook_secrets)
        uow.commit()
    sent.clear()
    deliveries = [delivery(event) for event in [*handled, already, _event(), _event()]]
    with UnitOfWork(billing.database) as uow:
        results = inbox.ingest_batch(uow=uow, deliveries=deliveries, secrets=billing.settings.stripe_webhook_secrets, apply_delay=0.25)
        assert sent == [], "nothing is sent before the commit"
        uow.commit()
    assert [r.outcome for r in results] == [inbox.STORED] * 3 + [inbox.DUPLICATE] + [inbox.STORED] * 2
    assert sent == [(inbox.APPLY_ACTOR, (sorted(e["id"] for e in handled),), 0.25)]
    sent.clear()
    with UnitOfWork(billing.database) as uow:  # only redeliveries and ignored types: no message
        inbox.ingest_batch(uow=uow, deliveries=deliveries[3:], secrets=billing.settings.stripe_webhook_secrets)
        uow.commit()
    assert sent == []


def test_ingest_stripe_event_is_a_batch_of_one(billing: BillingWorld) -> None:
    event = _event()
    payload = json.dumps(event).encode()
    stub = billing_pb2_grpc.BillingServiceStub(billing.channel)
    single = billing_pb2.IngestStripeEventRequest(payload=payload, signature_header=sign(payload, billing.webhook_secret))
    first = stub.IngestStripeEvent(single, metadata=bearer(billing.ingest_token()), timeout=10)
    assert (first.event_id, first.duplicate) == (event["id"], False)
    [again] = _ingest(billing, [billing_pb2.StripeWebhookDelivery(payload=payload, signature_header=single.signature_header)]).results
    assert again.outcome == R.STRIPE_DELIVERY_OUTCOME_DUPLICATE
    forged = billing_pb2.IngestStripeEventRequest(payload=payload, signature_header=sign(payload, "whsec_someone_else"))
    with pytest.raises(grpc.RpcError) as failure:
        stub.IngestStripeEvent(forged, metadata=bearer(billing.ingest_token()), timeout=10)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "bad signature" in (failure.value.details() or "")
    # Over the batch cap but one delivery: refused for its body, as the released RPC always was.
    huge = b"x" * (inbox.MAX_BATCH_PAYLOAD_BYTES + 1)
    with pytest.raises(grpc.RpcError) as failure:
        stub.IngestStripeEvent(billing_pb2.IngestStripeEventRequest(payload=huge, signature_header=sign(huge, billing.webhook_secret)),
                               metadata=bearer(billing.ingest_token()), timeout=10)
    status = rpc_status.from_call(failure.value)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert any(detail.Unpack(bad_request) for detail in status.details)
    assert bad_request.field_violations[0].field == "payload"


def test_a_correctly_signed_event_postgresql_cannot_store_is_rejected_alone(billing: BillingWorld) -> None:
    good, nul = _event(), _event(name="a\u0000b")
    results = _ingest(billing, [_signed(billing, nul), _signed(billing, good)]).results
    assert [(r.outcome, r.reject_reason) for r in results] == [
        (R.STRIPE_DELIVERY_OUTCOME_REJECTED, R.STRIPE_DELIVERY_REJECT_REASON_NOT_A_STRIPE_EVENT),
        (R.STRIPE_DELIVERY_OUTCOME_STORED, R.STRIPE_DELIVERY_REJECT_REASON_UNSPECIFIED),
    ]
    assert _states(billing, [good["id"], nul["id"]]) == {good["id"]: "ignored"}

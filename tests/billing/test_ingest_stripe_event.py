"""IngestStripeEvent: Stripe's signature scheme (300 s tolerance, any configured secret),
store-before-acknowledge under the event id, duplicates change nothing, and everything
that is not a correctly signed Stripe event is INVALID_ARGUMENT and changes nothing."""

from __future__ import annotations

import json
import time
import uuid

import grpc
import pytest
from sqlalchemy import create_engine

from billing_helpers import BillingWorld, stripe_client
from nobill.billing import inbox
from nobill.db.database import Database
from nobill.stripe.webhooks import sign
from nobill.v1 import billing_pb2, billing_pb2_grpc
from support import bearer, code_of, mint, new_user


def _event(event_type: str = "product.updated") -> dict:
    """A Stripe-shaped event with a fresh id (its type is one NOBill stores and ignores)."""
    return {
        "id": f"evt_test_{uuid.uuid4().hex}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
        "data": {"object": {"id": "prod_x", "object": "product", "name": "x"}},
    }


def _ingest(world: BillingWorld, payload: bytes, header: str, token: str | None = None):  # noqa: ANN202
    stub = billing_pb2_grpc.BillingServiceStub(world.channel)
    return stub.IngestStripeEvent(
        billing_pb2.IngestStripeEventRequest(payload=payload, signature_header=header),
        metadata=bearer(token or world.ingest_token()), timeout=10,
    )


def _received_at(world: BillingWorld, event_id: str):  # noqa: ANN202
    return inbox.find(database=world.database, event_ids=[event_id])[event_id].received_at


def _state(world: BillingWorld, event_id: str) -> str | None:
    record = inbox.find(database=world.database, event_ids=[event_id]).get(event_id)
    return record.state if record else None


def test_a_signed_event_is_stored_under_its_id_and_a_redelivery_is_a_duplicate(billing: BillingWorld) -> None:
    event = _event()
    payload = json.dumps(event).encode()
    first = _ingest(billing, payload, sign(payload, billing.webhook_secret))
    assert (first.event_id, first.event_type, first.duplicate) == (event["id"], "product.updated", False)
    assert _state(billing, event["id"]) == "ignored"  # stored, not a type billing acts on
    received = _received_at(billing, event["id"])
    again = _ingest(billing, payload, sign(payload, billing.webhook_secret))
    assert again.duplicate and again.event_id == event["id"]
    assert _received_at(billing, event["id"]) == received, "the stored event is untouched"


def test_any_configured_secret_may_have_signed_the_event(billing: BillingWorld) -> None:
    retired = billing.settings.stripe_webhook_secrets[0]
    assert retired != billing.webhook_secret
    for secret in (retired, billing.webhook_secret):
        payload = json.dumps(_event()).encode()
        assert not _ingest(billing, payload, sign(payload, secret)).duplicate


def test_events_from_the_sandbox_are_accepted_as_stripe_sent_them(billing: BillingWorld) -> None:
    owner, org_id = billing.new_org()
    customer = billing.customer_id(org_id)
    events = stripe_client(billing.sandbox_url).v1.events.list({"type": "customer.created", "limit": 100})
    created = next(e for e in events.data if e.data.object.id == customer)
    payload = json.dumps(created.to_dict()).encode()
    # The sandbox delivered it already (webhook endpoint → receiver → IngestStripeEvent).
    assert _ingest(billing, payload, sign(payload, billing.webhook_secret)).duplicate


@pytest.mark.parametrize(
    "case",
    ["unsigned", "forged", "stale", "future", "tampered", "not_json", "not_an_event", "garbage_header", "no_v1", "oversized"],
)
def test_what_is_not_a_correctly_signed_stripe_event_is_rejected_and_changes_nothing(billing: BillingWorld, case: str) -> None:
    event = _event()
    payload = json.dumps(event).encode()
    header = sign(payload, billing.webhook_secret)
    if case == "unsigned":
        header = ""
    elif case == "forged":
        header = sign(payload, "whsec_someone_else")
    elif case == "stale":
        header = sign(payload, billing.webhook_secret, timestamp=int(time.time()) - 301)
    elif case == "future":
        header = sign(payload, billing.webhook_secret, timestamp=int(time.time()) + 301)
    elif case == "tampered":
        payload = payload.replace(b"product.updated", b"invoice.paid")
    elif case == "not_json":
        payload = b"this is not json"
        header = sign(payload, billing.webhook_secret)
    elif case == "not_an_event":
        payload = json.dumps({"id": "cus_123", "object": "customer"}).encode()
        header = sign(payload, billing.webhook_secret)
    elif case == "garbage_header":
        header = "t=abc,v1=nothex"
    elif case == "no_v1":
        header = header.split(",")[0]
    elif case == "oversized":  # correctly signed, but no Stripe event is a mebibyte
        event["data"]["object"]["padding"] = "x" * (1024 * 1024)
        payload = json.dumps(event).encode()
        header = sign(payload, billing.webhook_secret)
    assert code_of(lambda: _ingest(billing, payload, header)) == grpc.StatusCode.INVALID_ARGUMENT
    assert _state(billing, event["id"]) is None, "nothing stored"


def test_only_the_webhooks_ingest_scope_may_ingest(billing: BillingWorld) -> None:
    payload = json.dumps(_event()).encode()
    header = sign(payload, billing.webhook_secret)
    user = new_user(billing.channel)
    assert code_of(lambda: _ingest(billing, payload, header, user.token)) == grpc.StatusCode.PERMISSION_DENIED
    other = mint("svc-other", service=True, scopes=("usage:write",), orgs=("*",))
    assert code_of(lambda: _ingest(billing, payload, header, other)) == grpc.StatusCode.PERMISSION_DENIED


def test_ingest_answers_unavailable_while_the_database_is_down(billing: BillingWorld) -> None:
    from nobill.api.server import build_server

    engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none", connect_args={"connect_timeout": 2})
    running = build_server(billing.settings, Database(engine, "nobill_app"))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = billing_pb2_grpc.BillingServiceStub(channel)
            payload = json.dumps(_event()).encode()
            with pytest.raises(grpc.RpcError) as error:
                stub.IngestStripeEvent(
                    billing_pb2.IngestStripeEventRequest(payload=payload, signature_header=sign(payload, billing.webhook_secret)),
                    metadata=bearer(billing.ingest_token()), timeout=20,
                )
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        running.stop(grace=0)
        engine.dispose()

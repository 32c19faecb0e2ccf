"""Stripe deliveries over HTTP: the webhook sidecar in front of the real core. A correctly
signed event is stored before the 200; forged, unsigned, stale, oversized and malformed
bodies are refused and leave nothing behind; a redelivery is acknowledged and is a duplicate."""

from __future__ import annotations

import http.client
import json
import time
import uuid
from urllib.parse import urlsplit

from sqlalchemy import func, select

from billing_helpers import BillingWorld
from nobill.billing.tables import stripe_event_ids
from nobill.db.unit_of_work import UnitOfWork
from nobill.stripe.webhooks import sign


def _event() -> dict:
    return {
        "id": f"evt_http_{uuid.uuid4().hex}", "object": "event", "api_version": "2026-10-28.endive",
        "created": int(time.time()), "livemode": False, "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None}, "type": "product.updated",
        "data": {"object": {"id": "prod_http", "object": "product", "name": "x"}},
    }


def _post(world: BillingWorld, body: bytes, signature: str | None) -> tuple[int, bytes]:
    url = urlsplit(world.webhooks_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    connection.request("POST", url.path, body=body, headers=headers)
    response = connection.getresponse()
    answer = response.status, response.read()
    connection.close()
    return answer


def _stored(world: BillingWorld, event_id: str) -> int:
    with UnitOfWork(world.database) as uow:
        return uow.execute(
            select(func.count()).select_from(stripe_event_ids).where(stripe_event_ids.c.event_id == event_id)
        ).scalar_one()


def test_a_signed_delivery_is_stored_before_the_200_and_a_redelivery_is_a_duplicate(billing: BillingWorld) -> None:
    event = _event()
    body = json.dumps(event).encode()
    status, answer = _post(billing, body, sign(body, billing.webhook_secret))
    assert status == 200 and json.loads(answer)["duplicate"] is False
    assert _stored(billing, event["id"]) == 1  # already there when the 200 arrived
    status, answer = _post(billing, body, sign(body, billing.webhook_secret))
    assert status == 200 and json.loads(answer)["duplicate"] is True
    assert _stored(billing, event["id"]) == 1


def test_bad_deliveries_are_refused_and_change_nothing(billing: BillingWorld) -> None:
    cases: dict[str, tuple[bytes, str | None, int]] = {}
    event = _event()
    body = json.dumps(event).encode()
    cases["unsigned"] = (body, None, 400)
    cases["forged"] = (body, sign(body, "whsec_" + "x" * 32), 400)
    cases["stale"] = (body, sign(body, billing.webhook_secret, timestamp=int(time.time()) - 301), 400)
    cases["from the future"] = (body, sign(body, billing.webhook_secret, timestamp=int(time.time()) + 301), 400)
    tampered = body.replace(b"product.updated", b"product.deleted")
    cases["tampered after signing"] = (tampered, sign(body, billing.webhook_secret), 400)
    malformed = b'{"id": "evt_not_json'
    cases["malformed"] = (malformed, sign(malformed, billing.webhook_secret), 400)
    not_event = json.dumps({"id": event["id"], "object": "customer"}).encode()
    cases["not an event"] = (not_event, sign(not_event, billing.webhook_secret), 400)
    oversized = json.dumps({**event, "padding": "x" * (1024 * 1024)}).encode()
    cases["oversized"] = (oversized, sign(oversized, billing.webhook_secret), 413)
    for name, (payload, signature, expected) in cases.items():
        status, _ = _post(billing, payload, signature)
        assert status == expected, name
    assert _stored(billing, event["id"]) == 0


def _sample(name: str, labels: dict[str, str]) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_webhook_events_and_stripe_calls_are_counted(billing: BillingWorld) -> None:
    ignored = {"type": "product.updated", "result": "ignored"}
    duplicate = {"type": "product.updated", "result": "duplicate"}
    rejected = {"type": "unknown", "result": "rejected"}
    before = {key: _sample("nobill_stripe_webhook_events_total", labels)
              for key, labels in (("ignored", ignored), ("duplicate", duplicate), ("rejected", rejected))}
    body = json.dumps(_event()).encode()
    assert _post(billing, body, sign(body, billing.webhook_secret))[0] == 200
    assert _post(billing, body, sign(body, billing.webhook_secret))[0] == 200
    assert _post(billing, body, sign(body, "whsec_" + "y" * 32))[0] == 400
    assert _sample("nobill_stripe_webhook_events_total", ignored) == before["ignored"] + 1
    assert _sample("nobill_stripe_webhook_events_total", duplicate) == before["duplicate"] + 1
    assert _sample("nobill_stripe_webhook_events_total", rejected) == before["rejected"] + 1
    # The world synced the catalog through the gateway: its calls were counted by endpoint.
    assert _sample("nobill_stripe_requests_total", {"endpoint": "billing.meters.list", "outcome": "ok"}) >= 1

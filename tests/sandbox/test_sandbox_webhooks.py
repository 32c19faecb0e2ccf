"""Webhook endpoints, events, signed delivery, retries with backoff, and webhook chaos."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time

import pytest
import stripe

from sandbox_helpers import advance


def endpoint_for(client, receiver, events=("*",)):
    return client.v1.webhook_endpoints.create({"url": receiver.url, "enabled_events": list(events)})


def deliveries(control, **query):
    suffix = "&".join(f"{k}={v}" for k, v in query.items())
    return control("GET", f"/_sandbox/webhooks/deliveries?{suffix}")["data"]


def test_webhook_endpoint_lifecycle(client, webhook_receiver):
    endpoint = client.v1.webhook_endpoints.create(
        {"url": webhook_receiver.url, "enabled_events": ["customer.created", "invoice.paid"], "description": "NOBill", "metadata": {"env": "dev"}}
    )
    assert endpoint.id.startswith("we_") and endpoint.secret.startswith("whsec_") and endpoint.status == "enabled"
    retrieved = client.v1.webhook_endpoints.retrieve(endpoint.id)
    assert "secret" not in retrieved.last_response.data  # shown once, at creation
    assert retrieved.enabled_events == ["customer.created", "invoice.paid"]
    updated = client.v1.webhook_endpoints.update(endpoint.id, {"disabled": True, "enabled_events": ["*"], "description": ""})
    assert (updated.status, updated.enabled_events, updated.description) == ("disabled", ["*"], None)
    assert [e.id for e in client.v1.webhook_endpoints.list().data] == [endpoint.id]
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.webhook_endpoints.create({"url": webhook_receiver.url, "enabled_events": ["customer.exploded"]})
    assert caught.value.param == "enabled_events[0]"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.webhook_endpoints.create({"url": "ftp://example.com", "enabled_events": ["*"]})
    assert caught.value.param == "url"
    assert client.v1.webhook_endpoints.delete(endpoint.id).deleted is True


def test_events_are_signed_exactly_as_stripe_signs_them(client, control, webhook_receiver):
    endpoint = endpoint_for(client, webhook_receiver, ["customer.created"])
    customer = client.v1.customers.create({"email": "signed@example.com"})
    [delivery] = webhook_receiver.wait_for(lambda got: len(got) == 1)
    header = delivery.headers["Stripe-Signature"]
    parts = dict(part.split("=", 1) for part in header.split(","))
    assert set(parts) == {"t", "v1"}
    assert abs(int(parts["t"]) - time.time()) < 10
    expected = hmac.new(endpoint.secret.encode(), f"{parts['t']}.".encode() + delivery.body, hashlib.sha256).hexdigest()
    assert parts["v1"] == expected
    assert delivery.headers["Content-Type"].startswith("application/json")
    assert delivery.headers["User-Agent"].startswith("Stripe/1.0")
    event = client.construct_event(delivery.body, header, endpoint.secret)
    assert (event.type, event.data.object.id, event.data.object.email) == ("customer.created", customer.id, "signed@example.com")
    assert event.api_version == "2026-10-28.endive"
    assert event.request.id == customer.last_response.request_id
    with pytest.raises(stripe.SignatureVerificationError):
        client.construct_event(delivery.body, header, "whsec_wrong")
    with pytest.raises(stripe.SignatureVerificationError):
        client.construct_event(delivery.body.replace(b"signed@", b"forged@"), header, endpoint.secret)
    control("POST", "/_sandbox/webhooks/wait", {"timeout": 5})
    assert client.v1.events.retrieve(event.id).pending_webhooks == 0


def test_only_subscribed_events_reach_enabled_endpoints(client, control, webhook_receiver):
    endpoint_for(client, webhook_receiver, ["product.created"])
    client.v1.customers.create({})
    client.v1.products.create({"name": "A"})
    control("POST", "/_sandbox/webhooks/wait", {"timeout": 5})
    assert [e["type"] for e in webhook_receiver.events()] == ["product.created"]
    assert client.v1.events.list({"type": "customer.created"}).data[0].pending_webhooks == 0
    disabled = client.v1.webhook_endpoints.list().data[0]
    client.v1.webhook_endpoints.update(disabled.id, {"disabled": True})
    client.v1.products.create({"name": "B"})
    control("POST", "/_sandbox/webhooks/wait", {"timeout": 5})
    assert len(webhook_receiver.events()) == 1


def test_failed_deliveries_are_retried_with_backoff_until_answered(client, control, webhook_receiver):
    webhook_receiver.statuses = [500, 503]
    endpoint_for(client, webhook_receiver, ["customer.created"])
    client.v1.customers.create({})
    [delivery] = webhook_receiver.wait_for(lambda got: len(got) == 1)
    control("POST", "/_sandbox/webhooks/wait", {"timeout": 5})
    assert webhook_receiver.answers == [500, 503, 200]
    log = deliveries(control, type="customer.created")
    assert [row["outcome"] for row in log] == ["failed_will_retry", "failed_will_retry", "delivered"]
    assert [row["status"] for row in log] == [500, 503, 200]
    gaps = [later["at"] - earlier["at"] for earlier, later in zip(log, log[1:])]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # the configured backoff (0.05 s, then 0.1 s)
    event_id = json.loads(delivery.body)["id"]
    assert client.v1.events.retrieve(event_id).pending_webhooks == 0
    assert [e.id for e in client.v1.events.list({"delivery_success": True}).data] == [event_id]


def test_deliveries_that_never_succeed_are_abandoned_and_stay_pending(client, control, webhook_receiver):
    webhook_receiver.statuses = [500] * 10
    endpoint_for(client, webhook_receiver, ["customer.created"])
    customer = client.v1.customers.create({})
    control("POST", "/_sandbox/webhooks/wait", {"timeout": 5})
    assert webhook_receiver.answers == [500] * 4  # the first attempt and three retries
    assert deliveries(control)[-1]["outcome"] == "failed_gave_up"
    event = client.v1.events.list({"type": "customer.created"}).data[0]
    assert event.data.object.id == customer.id and event.pending_webhooks == 1
    assert [e.id for e in client.v1.events.list({"delivery_success": False}).data] == [event.id]


def test_no_answer_counts_as_a_failure(client, control, webhook_receiver):
    control("POST", "/_sandbox/settings", {"webhook_timeout": 0.2, "webhook_retry_schedule": [0.05]})
    webhook_receiver.hang_seconds = 0.5
    endpoint_for(client, webhook_receiver, ["customer.created"])
    client.v1.customers.create({})
    control("POST", "/_sandbox/webhooks/wait", {"timeout": 5})
    log = deliveries(control)
    assert [row["outcome"] for row in log] == ["failed_will_retry", "failed_gave_up"]
    assert all(row["status"] is None and "timed out" in row["error"] for row in log)


def test_an_unreachable_endpoint_is_retried_then_abandoned(client, control):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client.v1.webhook_endpoints.create({"url": f"http://127.0.0.1:{port}/hook", "enabled_events": ["*"]})
    client.v1.customers.create({})
    assert control("POST", "/_sandbox/webhooks/wait", {"timeout": 5}) == {"idle": True, "pending": 0}
    log = deliveries(control)
    assert [row["outcome"] for row in log] == ["failed_will_retry"] * 3 + ["failed_gave_up"]
    assert "Connection" in log[0]["error"]


def test_chaos_delivers_each_event_k_times(client, control, webhook_receiver):
    control("POST", "/_sandbox/webhooks/chaos", {"duplicate": 3})
    endpoint_for(client, webhook_receiver, ["customer.created"])
    client.v1.customers.create({})
    client.v1.customers.create({})
    control("POST", "/_sandbox/webhooks/wait", {"timeout": 5})
    ids = [e["id"] for e in webhook_receiver.events()]
    assert len(ids) == 6 and len(set(ids)) == 2 and all(ids.count(i) == 3 for i in ids)
    assert all(e.pending_webhooks == 0 for e in client.v1.events.list().data)


def test_chaos_shuffles_order_within_a_window(client, control, webhook_receiver):
    control("POST", "/_sandbox/webhooks/chaos", {"shuffle_window": 0.5, "seed": 7})
    endpoint_for(client, webhook_receiver, ["customer.created"])
    created = [client.v1.customers.create({"metadata": {"n": str(n)}}).id for n in range(12)]
    control("POST", "/_sandbox/webhooks/wait", {"timeout": 5})
    received = [e["data"]["object"]["id"] for e in webhook_receiver.events()]
    assert sorted(received) == sorted(created)
    assert received != created


def test_chaos_delays_every_delivery(client, control, webhook_receiver):
    control("POST", "/_sandbox/webhooks/chaos", {"delay": 0.4})
    endpoint_for(client, webhook_receiver, ["customer.created"])
    sent = time.monotonic()
    client.v1.customers.create({})
    [delivery] = webhook_receiver.wait_for(lambda got: len(got) == 1)
    assert delivery.received_at - sent >= 0.4


def test_chaos_drops_deliveries_and_redelivers_them_later(client, control, webhook_receiver):
    control("POST", "/_sandbox/webhooks/chaos", {"drop_rate": 1.0, "redeliver_after": 0.3})
    assert control("GET", "/_sandbox/webhooks/chaos")["drop_rate"] == 1.0
    endpoint_for(client, webhook_receiver, ["customer.created"])
    sent = time.monotonic()
    client.v1.customers.create({})
    control("POST", "/_sandbox/webhooks/wait", {"timeout": 5})
    [delivery] = webhook_receiver.deliveries
    assert delivery.received_at - sent >= 0.3
    assert [row["outcome"] for row in deliveries(control)] == ["dropped", "delivered"]
    control("POST", "/_sandbox/webhooks/chaos", {"duplicate": 0}, expect=400)
    control("DELETE", "/_sandbox/webhooks/chaos")
    assert control("GET", "/_sandbox/webhooks/chaos")["drop_rate"] == 0


def test_events_api_lists_and_filters(client, clock):
    first = client.v1.customers.create({})
    client.v1.products.create({"name": "P"})
    on_clock = client.v1.customers.create({"test_clock": clock.id})
    assert [e.type for e in client.v1.events.list({"type": "customer.*"}).data] == ["customer.created", "customer.created"]
    both = client.v1.events.list({"types": ["product.created", "test_helpers.test_clock.created"]}).data
    assert [e.type for e in both] == ["product.created", "test_helpers.test_clock.created"]
    clock_event = client.v1.events.list({"type": "customer.created"}).data[0]
    assert (clock_event.data.object.id, clock_event.created) == (on_clock.id, clock.frozen_time)
    assert [e.data.object.id for e in client.v1.events.list({"created": {"lt": clock.frozen_time + 1}}).data] == [on_clock.id]
    event = client.v1.events.retrieve(client.v1.events.list({"limit": 1, "type": "customer.created", "starting_after": clock_event.id}).data[0].id)
    assert event.data.object.id == first.id and event.id.startswith("evt_")
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.events.retrieve("evt_missing")
    assert caught.value.http_status == 404


def test_events_from_the_clock_have_no_request(client, catalog, clock):
    customer = client.v1.customers.create({"test_clock": clock.id})
    client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.usage.id}], "trial_period_days": 5})
    advance(client, clock, clock.frozen_time + 5 * 86_400)
    notice = client.v1.events.list({"type": "customer.subscription.trial_will_end"}).data[0]
    assert (notice.request.id, notice.request.idempotency_key) == (None, None)
    created = client.v1.events.list({"type": "customer.subscription.created"}).data[0]
    assert created.request.id is not None and created.request.idempotency_key is not None

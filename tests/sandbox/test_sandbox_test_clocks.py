"""Test clocks, and the real-time ticker for objects that are not on a clock."""

from __future__ import annotations

import time

import pytest
import stripe

from nobill.sandbox.clock_polling import wait_until_ready
from sandbox_helpers import advance

DAY = 86_400
HOUR = 3_600


def test_clock_lifecycle(client, clock):
    assert clock.id.startswith("clock_") and clock.status == "ready" and clock.name == "test"
    assert clock.deletes_after == clock.created + 30 * DAY
    assert client.v1.test_helpers.test_clocks.retrieve(clock.id).frozen_time == clock.frozen_time
    ready = advance(client, clock, clock.frozen_time + 3600)
    assert (ready.status, ready.frozen_time, ready.status_details.to_dict()) == ("ready", clock.frozen_time + 3600, {})
    types = [e.type for e in client.v1.events.list({"type": "test_helpers.*"}).data]
    assert types == ["test_helpers.test_clock.ready", "test_helpers.test_clock.advancing", "test_helpers.test_clock.created"]
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": clock.frozen_time})
    assert caught.value.param == "frozen_time"
    assert [c.id for c in client.v1.test_helpers.test_clocks.list().data] == [clock.id]
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.test_helpers.test_clocks.create({})  # type: ignore[typeddict-item]
    assert caught.value.code == "parameter_missing"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": clock.frozen_time + 3 * 366 * DAY})
    assert "two years" in caught.value.user_message


def test_advancing_is_asynchronous_and_clients_must_poll_until_ready(client, control, catalog, clock):
    """Stripe answers `advancing` and finishes later; nothing on the clock changes until then."""
    control("POST", "/_sandbox/settings", {"test_clock_advance_delay": 1.0})
    customer = client.v1.customers.create({"test_clock": clock.id, "payment_method": "pm_card_visa", "invoice_settings": {"default_payment_method": "pm_card_visa"}})
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.base.id}]})
    period_end = subscription["items"].data[0].current_period_end
    started = client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": period_end + 2 * HOUR})
    assert (started.status, started.frozen_time) == ("advancing", clock.frozen_time)
    assert started.status_details.advancing.target_frozen_time == period_end + 2 * HOUR
    # Code that reads right away sees the world before the advance, as it would on Stripe.
    assert len(client.v1.invoices.list({"customer": customer.id}).data) == 1
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.subscriptions.update(subscription.id, {"metadata": {"k": "v"}})
    assert "advancing" in caught.value.user_message
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": period_end + 3 * HOUR})
    assert "already advancing" in caught.value.user_message
    # The control API's webhook wait also waits for clocks to finish advancing.
    assert control("POST", "/_sandbox/webhooks/wait", {"timeout": 10})["idle"] is True
    assert client.v1.test_helpers.test_clocks.retrieve(clock.id).status == "ready"
    ready = wait_until_ready(client, clock.id, timeout=10)
    assert (ready.status, ready.frozen_time) == ("ready", period_end + 2 * HOUR)
    assert [i.status for i in client.v1.invoices.list({"customer": customer.id}).data] == ["paid", "paid"]
    ready_event = client.v1.events.list({"type": "test_helpers.test_clock.ready"}).data[0]
    assert ready_event.data.object.status == "ready"
    client.v1.subscriptions.update(subscription.id, {"metadata": {"k": "v"}})


def test_a_clock_moves_at_most_two_intervals_of_its_shortest_subscription(client, catalog, clock):
    weekly = client.v1.prices.create({"product": catalog.product.id, "currency": "usd", "unit_amount": 100, "recurring": {"interval": "week"}})
    customer = client.v1.customers.create({"test_clock": clock.id, "payment_method": "pm_card_visa", "invoice_settings": {"default_payment_method": "pm_card_visa"}})
    client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": weekly.id}]})
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": clock.frozen_time + 15 * DAY})
    assert "two intervals" in caught.value.user_message
    advance(client, clock, clock.frozen_time + 14 * DAY)
    invoices = client.v1.invoices.list({"customer": customer.id}).data
    assert [i.billing_reason for i in invoices] == ["subscription_cycle", "subscription_cycle", "subscription_create"]
    assert [i.status for i in invoices] == ["draft", "paid", "paid"]  # the newest finalizes an hour after the boundary
    assert [i.created for i in invoices] == [clock.frozen_time + 14 * DAY, clock.frozen_time + 7 * DAY, clock.frozen_time]


def test_deleting_a_clock_deletes_what_lives_on_it(client, catalog, clock):
    customer = client.v1.customers.create({"test_clock": clock.id, "payment_method": "pm_card_visa", "invoice_settings": {"default_payment_method": "pm_card_visa"}})
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.base.id}]})
    outsider = client.v1.customers.create({})
    deleted = client.v1.test_helpers.test_clocks.delete(clock.id)
    assert deleted.deleted is True
    for retrieve, object_id in (
        (client.v1.customers.retrieve, customer.id),
        (client.v1.subscriptions.retrieve, subscription.id),
        (client.v1.invoices.retrieve, subscription.latest_invoice),
        (client.v1.test_helpers.test_clocks.retrieve, clock.id),
    ):
        with pytest.raises(stripe.InvalidRequestError) as caught:
            retrieve(object_id)
        assert caught.value.http_status == 404
    assert client.v1.customers.retrieve(outsider.id).id == outsider.id


def test_objects_off_the_clock_follow_real_time(client, control, catalog):
    customer = client.v1.customers.create({"payment_method": "pm_card_visa", "invoice_settings": {"default_payment_method": "pm_card_visa"}})
    trial_end = int(time.time()) + 2
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.base.id}], "trial_end": trial_end})
    assert subscription.status == "trialing"
    # The sandbox's ticker ends the trial in real time (tests run it every 0.2 s).
    deadline = time.monotonic() + 10
    while client.v1.subscriptions.retrieve(subscription.id).status == "trialing" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.v1.subscriptions.retrieve(subscription.id).status == "active"
    assert control("POST", "/_sandbox/tick")["steps"] == 0

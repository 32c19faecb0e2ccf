"""Resuming paused subscriptions, `payment_behavior` `default_incomplete` and
`pending_if_incomplete`, `billing_cycle_anchor` on create and update, and switching
between monthly and yearly prices."""

from __future__ import annotations

from fractions import Fraction

import pytest
import stripe

from sandbox_helpers import advance
from test_sandbox_subscriptions import DAY, HOUR, _date, lines, paying_customer, period_of, prorated


def test_a_subscription_paused_at_trial_end_resumes_with_a_new_period(client, control, catalog, clock):
    customer = client.v1.customers.create({"test_clock": clock.id, "email": "p@example.com"})
    trial_end = clock.frozen_time + 5 * DAY
    subscription = client.v1.subscriptions.create(
        {
            "customer": customer.id,
            "items": [{"price": catalog.base.id}],
            "trial_end": trial_end,
            "trial_settings": {"end_behavior": {"missing_payment_method": "pause"}},
        }
    )
    advance(client, clock, trial_end + HOUR)
    assert client.v1.subscriptions.retrieve(subscription.id).status == "paused"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.subscriptions.resume(subscription.id, {"billing_cycle_anchor": "unchanged"})
    assert caught.value.param == "billing_cycle_anchor"
    card = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    client.v1.customers.update(customer.id, {"invoice_settings": {"default_payment_method": card.id}})
    resumed = client.v1.subscriptions.resume(subscription.id, {"billing_cycle_anchor": "now"})
    assert (resumed.status, resumed.billing_cycle_anchor) == ("active", trial_end + HOUR)
    assert resumed["items"].data[0].current_period_start == trial_end + HOUR
    invoice = client.v1.invoices.retrieve(resumed.latest_invoice)
    assert (invoice.status, invoice.amount_paid) == ("paid", 2000)
    assert client.v1.events.list({"type": "customer.subscription.resumed"}).data[0].data.object.id == subscription.id
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.subscriptions.resume(subscription.id)
    assert "paused" in caught.value.user_message


def test_a_resumed_subscription_whose_payment_fails_is_past_due(client, catalog, clock):
    customer = client.v1.customers.create({"test_clock": clock.id})
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": catalog.base.id}], "trial_period_days": 1, "trial_settings": {"end_behavior": {"missing_payment_method": "pause"}}}
    )
    advance(client, clock, clock.frozen_time + DAY + 60)
    resumed = client.v1.subscriptions.resume(subscription.id)
    assert resumed.status == "past_due"
    assert client.v1.invoices.retrieve(resumed.latest_invoice).status == "open"


def test_default_incomplete_leaves_the_first_invoice_for_the_customer_to_pay(client, catalog, clock):
    customer = client.v1.customers.create({"test_clock": clock.id})
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": catalog.base.id}], "payment_behavior": "default_incomplete"}
    )
    invoice = client.v1.invoices.retrieve(subscription.latest_invoice)
    assert (subscription.status, invoice.status, invoice.attempt_count, invoice.amount_due) == ("incomplete", "open", 0, 2000)
    card = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    client.v1.invoices.pay(invoice.id, {"payment_method": card.id})
    assert client.v1.subscriptions.retrieve(subscription.id).status == "active"
    # An update that bills at once with default_incomplete waits for the customer too.
    item = subscription["items"].data[0]
    updated = client.v1.subscriptions.update(
        subscription.id,
        {"items": [{"id": item.id, "quantity": 3}], "proration_behavior": "always_invoice", "payment_behavior": "default_incomplete"},
    )
    assert updated.status == "past_due"
    assert client.v1.invoices.retrieve(updated.latest_invoice).status == "open"


def test_pending_if_incomplete_keeps_the_change_pending_until_it_is_paid(client, control, catalog, clock):
    customer = paying_customer(client, clock)
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.seat.id, "quantity": 2}]})
    item = subscription["items"].data[0]
    control("POST", f"/_sandbox/customers/{customer.id}/payment_behavior", {"behavior": "decline"})
    change = {"items": [{"id": item.id, "quantity": 5}], "proration_behavior": "always_invoice", "payment_behavior": "pending_if_incomplete"}
    held = client.v1.subscriptions.update(subscription.id, change)  # type: ignore[arg-type]
    assert (held.status, held["items"].data[0].quantity) == ("active", 2)
    assert held.pending_update.subscription_items[0].quantity == 5
    assert held.pending_update.expires_at == clock.frozen_time + 23 * HOUR
    invoice = client.v1.invoices.retrieve(held.latest_invoice)
    assert (invoice.status, invoice.billing_reason) == ("open", "subscription_update")
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.subscriptions.update(subscription.id, {"metadata": {"a": "b"}, "payment_behavior": "pending_if_incomplete"})
    assert caught.value.param == "metadata"
    control("POST", f"/_sandbox/customers/{customer.id}/payment_behavior", {"behavior": "succeed"})
    client.v1.invoices.pay(invoice.id)
    applied = client.v1.subscriptions.retrieve(subscription.id)
    assert (applied.pending_update, applied["items"].data[0].quantity) == (None, 5)
    assert client.v1.events.list({"type": "customer.subscription.pending_update_applied"}).data

    # Unpaid, the pending update expires after 23 hours and its invoice is voided.
    control("POST", f"/_sandbox/customers/{customer.id}/payment_behavior", {"behavior": "decline"})
    held = client.v1.subscriptions.update(subscription.id, {**change, "items": [{"id": item.id, "quantity": 8}]})  # type: ignore[arg-type]
    assert held.pending_update is not None
    advance(client, clock, clock.frozen_time + 23 * HOUR + 1)
    expired = client.v1.subscriptions.retrieve(subscription.id)
    assert (expired.pending_update, expired["items"].data[0].quantity) == (None, 5)
    assert client.v1.invoices.retrieve(held.latest_invoice).status == "void"
    assert client.v1.events.list({"type": "customer.subscription.pending_update_expired"}).data


@pytest.mark.parametrize("behavior", ["create_prorations", "none"])
def test_a_billing_cycle_anchor_on_create_bills_the_short_first_period(client, catalog, clock, behavior):
    customer = paying_customer(client, clock)
    anchor = clock.frozen_time + 10 * DAY
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": catalog.base.id}], "billing_cycle_anchor": anchor, "proration_behavior": behavior}
    )
    assert (subscription.billing_cycle_anchor, period_of(client, subscription.id)) == (anchor, (clock.frozen_time, anchor))
    first = client.v1.invoices.retrieve(subscription.latest_invoice)
    whole_start = anchor - (period_length := _month_before(anchor))
    expected = 0 if behavior == "none" else prorated(2000, whole_start, anchor, clock.frozen_time)
    assert first.amount_paid == expected
    advance(client, clock, anchor + HOUR)
    renewal = client.v1.invoices.list({"subscription": subscription.id}).data[0]
    assert (renewal.amount_paid, renewal.period_end) == (2000, anchor)
    assert period_length > 0
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.seat.id}], "billing_cycle_anchor": clock.frozen_time - 1})
    assert caught.value.param == "billing_cycle_anchor"


def _month_before(anchor):
    from nobill.sandbox.billing_periods import add_intervals

    return anchor - add_intervals(anchor, "month", 1, -1)


def test_billing_cycle_anchor_now_on_update_starts_a_new_period_and_credits_the_old(client, catalog, clock):
    customer = paying_customer(client, clock)
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.seat.id, "quantity": 2}]})
    start, end = period_of(client, subscription.id)
    at = start + 10 * DAY
    advance(client, clock, at)
    reset = client.v1.subscriptions.update(subscription.id, {"billing_cycle_anchor": "now"})
    assert reset.billing_cycle_anchor == at and period_of(client, subscription.id)[0] == at
    invoice = client.v1.invoices.retrieve(reset.latest_invoice)
    assert invoice.billing_reason == "subscription_update" and invoice.status == "paid"
    assert lines(invoice) == sorted([("2 × Pro (at $5.00 / month)", 1000), (f"Unused time on 2 × Pro after {_date(at)}", -prorated(1000, start, end, at))])


@pytest.mark.parametrize("behavior", ["create_prorations", "none"])
def test_switching_from_monthly_to_yearly_bills_the_year_now_and_credits_the_month(client, catalog, clock, behavior):
    yearly = client.v1.prices.create({"product": catalog.product.id, "currency": "usd", "unit_amount": 20000, "recurring": {"interval": "year"}})
    customer = paying_customer(client, clock)
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.base.id}]})
    start, end = period_of(client, subscription.id)
    at = start + 6 * DAY
    advance(client, clock, at)
    item = subscription["items"].data[0]
    switched = client.v1.subscriptions.update(
        subscription.id, {"items": [{"id": item.id, "price": yearly.id}], "proration_behavior": behavior}
    )
    new_start, new_end = period_of(client, subscription.id)
    assert (switched.billing_cycle_anchor, new_start) == (at, at)
    assert 365 * DAY <= new_end - new_start <= 366 * DAY
    invoice = client.v1.invoices.retrieve(switched.latest_invoice)
    credit = prorated(2000, start, end, at)
    expected = [("1 × Pro (at $200.00 / year)", 20000)]
    if behavior != "none":
        expected.append((f"Unused time on 1 × Pro after {_date(at)}", -credit))
    assert lines(invoice) == sorted(expected)
    assert invoice.amount_paid == 20000 - (credit if behavior != "none" else 0)
    # And back to monthly: the unused part of the year is credited.
    back = client.v1.subscriptions.update(subscription.id, {"items": [{"id": item.id, "price": catalog.base.id}]})
    assert client.v1.invoices.retrieve(back.latest_invoice).amount_due == 0  # the year's credit covers the month
    assert client.v1.customers.retrieve(customer.id).balance < 0
    assert Fraction(1) > 0

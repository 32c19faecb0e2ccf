"""Subscriptions and Subscription Items: create, update price and quantity with each
`proration_behavior`, trials, cancellation, statuses, invoices they produce."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

import pytest
import stripe

from sandbox_helpers import advance

DAY = 86_400
HOUR = 3_600


def paying_customer(client, clock=None, card="pm_card_visa"):
    params = {"email": "payer@example.com", "payment_method": card, "invoice_settings": {"default_payment_method": card}}
    if clock is not None:
        params["test_clock"] = clock.id
    return client.v1.customers.create(params)




def period_of(client, subscription_id):
    item = client.v1.subscriptions.retrieve(subscription_id)["items"].data[0]
    return item.current_period_start, item.current_period_end


def prorated(amount, start, end, at):
    value = Decimal(amount) * Decimal(Fraction(end - at, end - start).numerator) / Decimal(Fraction(end - at, end - start).denominator)
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def lines(invoice):
    return sorted((line.description, line.amount) for line in invoice.lines.data)


def test_create_charges_the_first_period_in_advance(client, catalog, clock):
    customer = paying_customer(client, clock)
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": catalog.base.id}, {"price": catalog.seat.id, "quantity": 3}, {"price": catalog.usage.id}], "metadata": {"org": "o1"}}
    )
    assert subscription.id.startswith("sub_") and subscription.status == "active"
    assert (subscription.start_date, subscription.billing_cycle_anchor, subscription.currency) == (clock.frozen_time, clock.frozen_time, "usd")
    item = subscription["items"].data[0]
    assert item.id.startswith("si_")
    assert item.current_period_start == clock.frozen_time
    assert 28 * DAY <= item.current_period_end - item.current_period_start <= 31 * DAY
    invoice = client.v1.invoices.retrieve(subscription.latest_invoice)
    assert invoice.id.startswith("in_") and invoice.billing_reason == "subscription_create"
    assert (invoice.status, invoice.amount_due, invoice.amount_paid, invoice.amount_remaining) == ("paid", 3500, 3500, 0)
    assert invoice.parent.subscription_details.subscription == subscription.id
    assert invoice.parent.subscription_details.metadata["org"] == "o1"
    assert invoice.number.endswith("-0001")
    assert lines(invoice) == [("1 × Pro (at $20.00 / month)", 2000), ("3 × Pro (at $5.00 / month)", 1500)]
    assert [e.type for e in client.v1.events.list({"types": ["customer.subscription.created", "customer.subscription.updated"]}).data] == [
        "customer.subscription.updated",
        "customer.subscription.created",
    ]
    assert client.v1.events.list({"type": "customer.subscription.created"}).data[0].data.object.status == "incomplete"


def test_renewals_bill_seats_in_advance_and_usage_in_arrears(client, catalog, clock):
    customer = paying_customer(client, clock)
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": catalog.seat.id, "quantity": 2}, {"price": catalog.usage.id}]}
    )
    start, end = period_of(client, subscription.id)
    for value in (1000, 234):
        client.v1.billing.meter_events.create({"event_name": "api_calls", "payload": {"stripe_customer_id": customer.id, "value": str(value)}})
    advance(client, clock, end)
    renewal = client.v1.invoices.list({"subscription": subscription.id}).data[0]
    assert (renewal.billing_reason, renewal.status) == ("subscription_cycle", "draft")
    assert renewal.automatically_finalizes_at == end + HOUR
    assert (renewal.period_start, renewal.period_end) == (start, end)
    assert lines(renewal) == [("1234 × Pro (at $0.005 / month)", 617), ("2 × Pro (at $5.00 / month)", 1000)]
    usage_line = next(line for line in renewal.lines.data if line.quantity == 1234)
    assert (usage_line.period.start, usage_line.period.end) == (start, end)
    assert usage_line.pricing.price_details.price == catalog.usage.id
    assert period_of(client, subscription.id)[0] == end
    advance(client, clock, end + HOUR)
    renewal = client.v1.invoices.retrieve(renewal.id)
    assert (renewal.status, renewal.amount_paid, renewal.attempt_count) == ("paid", 1617, 1)
    assert renewal.number.endswith("-0002")


@pytest.mark.parametrize("behavior", ["create_prorations", "always_invoice", "none"])
def test_seat_changes_with_each_proration_behavior(client, catalog, clock, behavior):
    customer = paying_customer(client, clock)
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.seat.id, "quantity": 3}]})
    start, end = period_of(client, subscription.id)
    at = start + 10 * DAY
    advance(client, clock, at)
    item = subscription["items"].data[0]
    updated = client.v1.subscription_items.update(item.id, {"quantity": 5, "proration_behavior": behavior})
    assert updated.quantity == 5
    credit, charge = prorated(1500, start, end, at), prorated(2500, start, end, at)
    proration_lines = [("Remaining time on 5 × Pro after " + _date(at), charge), ("Unused time on 3 × Pro after " + _date(at), -credit)]
    invoices = client.v1.invoices.list({"subscription": subscription.id}).data
    if behavior == "always_invoice":
        immediate = invoices[0]
        assert (immediate.billing_reason, immediate.status, immediate.amount_paid) == ("subscription_update", "paid", charge - credit)
        assert lines(immediate) == proration_lines
        assert all(line.parent.subscription_item_details.proration for line in immediate.lines.data)
    else:
        assert len(invoices) == 1
    advance(client, clock, end)
    renewal = client.v1.invoices.list({"subscription": subscription.id}).data[0]
    expected = [("5 × Pro (at $5.00 / month)", 2500)]
    if behavior == "create_prorations":
        expected = sorted(expected + proration_lines)
    assert lines(renewal) == expected
    item_change = next(
        e for e in client.v1.events.list({"type": "customer.subscription.updated"}).auto_paging_iter()
        if e.created == at and "items" in e.data.previous_attributes
    )
    assert item_change.data.previous_attributes["items"]["data"][0]["quantity"] == 3
    assert item_change.data.object["items"]["data"][0]["quantity"] == 5


def _date(timestamp):
    from datetime import datetime, timezone

    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return f"{moment.day} {moment.strftime('%b %Y')}"


def test_price_changes_prorate_old_and_new_price(client, catalog, clock):
    premium = client.v1.prices.create({"product": catalog.product.id, "currency": "usd", "unit_amount": 5000, "recurring": {"interval": "month"}})
    customer = paying_customer(client, clock)
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.base.id}]})
    start, end = period_of(client, subscription.id)
    at = start + 5 * DAY
    advance(client, clock, at)
    item = subscription["items"].data[0]
    updated = client.v1.subscriptions.update(
        subscription.id, {"items": [{"id": item.id, "price": premium.id}], "proration_behavior": "always_invoice"}
    )
    assert updated["items"].data[0].price.id == premium.id
    invoice = client.v1.invoices.retrieve(updated.latest_invoice)
    assert invoice.amount_paid == prorated(5000, start, end, at) - prorated(2000, start, end, at)


def test_update_with_error_if_incomplete_changes_nothing_when_the_card_fails(client, control, catalog):
    customer = paying_customer(client)
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.seat.id, "quantity": 1}]})
    control("POST", f"/_sandbox/customers/{customer.id}/payment_behavior", {"behavior": "decline"})
    item = subscription["items"].data[0]
    with pytest.raises(stripe.CardError):
        client.v1.subscription_items.update(item.id, {"quantity": 9, "proration_behavior": "always_invoice", "payment_behavior": "error_if_incomplete"})
    assert client.v1.subscription_items.retrieve(item.id).quantity == 1


def test_always_invoice_with_a_failing_card_makes_the_subscription_past_due(client, control, catalog):
    customer = paying_customer(client)
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.seat.id, "quantity": 1}]})
    control("POST", f"/_sandbox/customers/{customer.id}/payment_behavior", {"behavior": "decline"})
    client.v1.subscription_items.update(subscription["items"].data[0].id, {"quantity": 4, "proration_behavior": "always_invoice"})
    subscription = client.v1.subscriptions.retrieve(subscription.id, {"expand": ["latest_invoice"]})
    assert subscription.status == "past_due"
    assert (subscription.latest_invoice.status, subscription.latest_invoice.attempt_count) == ("open", 1)
    assert subscription.latest_invoice.next_payment_attempt is not None
    control("POST", f"/_sandbox/customers/{customer.id}/payment_behavior", {"behavior": "succeed"})
    paid = client.v1.invoices.pay(subscription.latest_invoice.id)
    assert paid.status == "paid"
    assert client.v1.subscriptions.retrieve(subscription.id).status == "active"
    assert client.v1.customers.retrieve(customer.id).delinquent is False


def test_a_first_payment_that_fails_leaves_the_subscription_incomplete(client, control, catalog, clock):
    customer = paying_customer(client, clock, card="pm_card_chargeCustomerFail")
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.base.id}]})
    invoice = client.v1.invoices.retrieve(subscription.latest_invoice)
    assert (subscription.status, invoice.status, invoice.attempt_count, invoice.next_payment_attempt) == ("incomplete", "open", 1, None)
    assert client.v1.customers.retrieve(customer.id).delinquent is True
    with pytest.raises(stripe.CardError):
        client.v1.invoices.pay(invoice.id)
    control("POST", f"/_sandbox/customers/{customer.id}/payment_behavior", {"behavior": "succeed"})
    assert client.v1.invoices.pay(invoice.id).status == "paid"
    assert client.v1.subscriptions.retrieve(subscription.id).status == "active"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.pay(invoice.id)

    control("POST", f"/_sandbox/customers/{customer.id}/payment_behavior", {"behavior": "decline"})
    expiring = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.seat.id}]})
    assert expiring.status == "incomplete"
    advance(client, clock, clock.frozen_time + 23 * HOUR + 1)
    assert client.v1.subscriptions.retrieve(expiring.id).status == "incomplete_expired"
    assert client.v1.invoices.retrieve(expiring.latest_invoice).status == "void"


def test_creation_without_a_payment_method_or_with_error_if_incomplete(client, catalog):
    bare = client.v1.customers.create({})
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.subscriptions.create({"customer": bare.id, "items": [{"price": catalog.base.id}]})
    assert "no attached payment source or default payment method" in caught.value.user_message
    failing = paying_customer(client, card="pm_card_chargeCustomerFail")
    with pytest.raises(stripe.CardError):
        client.v1.subscriptions.create({"customer": failing.id, "items": [{"price": catalog.base.id}], "payment_behavior": "error_if_incomplete"})
    assert client.v1.subscriptions.list({"customer": failing.id, "status": "all"}).data == []
    metered_only = client.v1.subscriptions.create({"customer": bare.id, "items": [{"price": catalog.usage.id}]})
    assert metered_only.status == "active"  # nothing is due up front for usage
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.subscriptions.create({"customer": bare.id, "items": [{"price": catalog.base.id}], "payment_behavior": "pending_if_incomplete"})
    assert caught.value.param == "payment_behavior" and "only used with updates" in caught.value.user_message


def test_item_rules(client, catalog):
    customer = paying_customer(client)
    yearly = client.v1.prices.create({"product": catalog.product.id, "currency": "usd", "unit_amount": 100, "recurring": {"interval": "year"}})
    euro = client.v1.prices.create({"product": catalog.product.id, "currency": "eur", "unit_amount": 100, "recurring": {"interval": "month"}})
    one_time = client.v1.prices.create({"product": catalog.product.id, "currency": "usd", "unit_amount": 100})

    def rejected(items, param):
        with pytest.raises(stripe.InvalidRequestError) as caught:
            client.v1.subscriptions.create({"customer": customer.id, "items": items})
        assert caught.value.param == param, caught.value.user_message

    rejected([{"price": catalog.usage.id, "quantity": 2}], "items[0][quantity]")
    rejected([{"price": catalog.base.id}, {"price": catalog.base.id}], "items")
    rejected([{"price": catalog.base.id}, {"price": yearly.id}], "items")
    rejected([{"price": catalog.base.id}, {"price": euro.id}], "items")
    rejected([{"price": one_time.id}], "items[0][price]")
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.base.id}]})
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.subscription_items.delete(subscription["items"].data[0].id)
    assert "at least one active plan" in caught.value.user_message
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": euro.id}]})  # the customer pays in usd


def test_subscription_item_endpoints(client, catalog):
    customer = paying_customer(client)
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.base.id}]})
    added = client.v1.subscription_items.create(
        {"subscription": subscription.id, "price": catalog.seat.id, "quantity": 2, "metadata": {"role": "seats"}, "proration_behavior": "none"}
    )
    assert (added.subscription, added.quantity, added.metadata["role"]) == (subscription.id, 2, "seats")
    listed = client.v1.subscription_items.list({"subscription": subscription.id})
    assert [i.id for i in listed.data] == [subscription["items"].data[0].id, added.id]
    assert listed.url == f"/v1/subscription_items?subscription={subscription.id}"
    metered = client.v1.subscription_items.create({"subscription": subscription.id, "price": catalog.usage.id})
    assert metered.quantity is None
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscription_items.update(metered.id, {"quantity": 3})
    removed = client.v1.subscription_items.delete(added.id, {"proration_behavior": "none"})
    assert removed.deleted is True
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.subscription_items.retrieve(added.id)
    assert caught.value.http_status == 404
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.subscription_items.list({})  # type: ignore[typeddict-item]
    assert caught.value.param == "subscription"


def test_cancel_at_period_end_then_renewal_ends_it(client, catalog, clock):
    customer = paying_customer(client, clock)
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.base.id}]})
    _, end = period_of(client, subscription.id)
    scheduled = client.v1.subscriptions.update(subscription.id, {"cancel_at_period_end": True})
    assert (scheduled.status, scheduled.cancel_at_period_end, scheduled.cancel_at, scheduled.canceled_at) == ("active", True, end, clock.frozen_time)
    # While the cancellation is pending the reason already reads `cancellation_requested`.
    assert scheduled.cancellation_details.reason == "cancellation_requested"
    resumed = client.v1.subscriptions.update(subscription.id, {"cancel_at_period_end": False})
    assert (resumed.cancel_at, resumed.canceled_at, resumed.cancellation_details.reason) == (None, None, None)
    client.v1.subscriptions.update(subscription.id, {"cancel_at_period_end": True})
    advance(client, clock, end + 10)
    ended = client.v1.subscriptions.retrieve(subscription.id)
    assert (ended.status, ended.ended_at, ended.cancellation_details.reason) == ("canceled", end, "cancellation_requested")
    assert len(client.v1.invoices.list({"subscription": subscription.id}).data) == 1  # nothing more to bill
    assert client.v1.events.list({"type": "customer.subscription.deleted"}).data[0].data.object.id == subscription.id
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.update(subscription.id, {"metadata": {"a": "b"}})


@pytest.mark.parametrize("behavior", ["create_prorations", "always_invoice", "none"])
def test_cancel_at_inside_the_period_credits_the_unused_time(client, catalog, clock, behavior):
    customer = paying_customer(client, clock)
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.seat.id, "quantity": 2}]})
    start, end = period_of(client, subscription.id)
    cancel_at = start + 12 * DAY
    scheduled = client.v1.subscriptions.update(subscription.id, {"cancel_at": cancel_at, "proration_behavior": behavior})
    assert (scheduled.cancel_at, scheduled.cancel_at_period_end, scheduled.status) == (cancel_at, False, "active")
    assert scheduled.cancellation_details.reason == "cancellation_requested"
    credit = prorated(1000, start, end, cancel_at)
    invoices = client.v1.invoices.list({"subscription": subscription.id}).data
    if behavior == "always_invoice":
        assert invoices[0].billing_reason == "subscription_update"
        assert lines(invoices[0]) == [(f"Unused time on 2 × Pro after {_date(cancel_at)}", -credit)]
    else:
        assert len(invoices) == 1
    advance(client, clock, cancel_at + 10)
    ended = client.v1.subscriptions.retrieve(subscription.id)
    assert (ended.status, ended.ended_at, ended.cancellation_details.reason) == ("canceled", cancel_at, "cancellation_requested")
    # The credit that was not invoiced stays with the customer for the next invoice.
    balance = client.v1.customers.retrieve(customer.id).balance
    assert balance == {"create_prorations": -credit, "always_invoice": -credit, "none": 0}[behavior]


def test_cancel_at_in_a_later_period_prorates_that_period(client, catalog, clock):
    customer = paying_customer(client, clock)
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": catalog.seat.id, "quantity": 2}], "proration_behavior": "none"}
    )
    _, end = period_of(client, subscription.id)
    cancel_at = end + 10 * DAY
    client.v1.subscriptions.update(subscription.id, {"cancel_at": cancel_at, "proration_behavior": "none"})
    advance(client, clock, end)
    new_start, new_end = period_of(client, subscription.id)
    renewal = client.v1.invoices.list({"subscription": subscription.id}).data[0]
    assert lines(renewal) == sorted(
        [("2 × Pro (at $5.00 / month)", 1000), (f"Unused time on 2 × Pro after {_date(cancel_at)}", -prorated(1000, new_start, new_end, cancel_at))]
    )


def test_moving_or_withdrawing_cancel_at_takes_the_earlier_credit_back(client, catalog, clock):
    customer = paying_customer(client, clock)
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.seat.id, "quantity": 2}]})
    start, end = period_of(client, subscription.id)
    client.v1.subscriptions.update(subscription.id, {"cancel_at": start + 10 * DAY})
    client.v1.subscriptions.update(subscription.id, {"cancel_at": start + 20 * DAY})
    withdrawn = client.v1.subscriptions.update(subscription.id, {"cancel_at": ""})
    assert (withdrawn.cancel_at, withdrawn.cancellation_details.reason) == (None, None)
    advance(client, clock, end)
    renewal = client.v1.invoices.list({"subscription": subscription.id}).data[0]
    prorations = [line.amount for line in renewal.lines.data if line.parent.subscription_item_details.proration]
    assert sum(prorations) == 0 and len(prorations) == 4
    # `max_period_end` names the end of the current period.
    at_end = client.v1.subscriptions.update(subscription.id, {"cancel_at": "max_period_end"})
    assert at_end.cancel_at == period_of(client, subscription.id)[1]


def test_cancel_now_and_listing_by_status(client, catalog):
    customer = paying_customer(client)
    keep = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.seat.id}]})
    stop = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.base.id}]})
    canceled = client.v1.subscriptions.cancel(stop.id, {"cancellation_details": {"comment": "too pricey", "feedback": "too_expensive"}})
    assert canceled.status == "canceled" and canceled.ended_at is not None
    assert canceled.cancellation_details.to_dict() == {"comment": "too pricey", "feedback": "too_expensive", "reason": "cancellation_requested"}
    assert [s.id for s in client.v1.subscriptions.list({"customer": customer.id}).data] == [keep.id]
    assert {s.id for s in client.v1.subscriptions.list({"status": "all"}).data} == {keep.id, stop.id}
    assert [s.id for s in client.v1.subscriptions.list({"status": "canceled"}).data] == [stop.id]
    assert [s.id for s in client.v1.subscriptions.list({"price": catalog.seat.id}).data] == [keep.id]
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.subscriptions.cancel(stop.id)
    assert caught.value.http_status == 404


def test_cancel_now_with_invoice_now_bills_usage_and_prorate_credits(client, catalog, clock):
    customer = paying_customer(client, clock)
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.seat.id, "quantity": 2}, {"price": catalog.usage.id}]})
    start, end = period_of(client, subscription.id)
    advance(client, clock, start + 10 * DAY)
    client.v1.billing.meter_events.create({"event_name": "api_calls", "payload": {"stripe_customer_id": customer.id, "value": "400"}})
    client.v1.subscriptions.cancel(subscription.id, {"invoice_now": True, "prorate": True})
    final = client.v1.invoices.list({"subscription": subscription.id}).data[0]
    credit = prorated(1000, start, end, start + 10 * DAY)
    assert lines(final) == sorted([("400 × Pro (at $0.005 / month)", 200), (f"Unused time on 2 × Pro after {_date(start + 10 * DAY)}", -credit)])
    assert final.status == "paid" and final.amount_due == 0
    assert client.v1.customers.retrieve(customer.id).balance == 200 - credit


def test_trials_end_with_an_invoice_or_per_trial_settings(client, control, catalog, clock):
    customer = client.v1.customers.create({"test_clock": clock.id})
    trial_end = clock.frozen_time + 10 * DAY
    invoiced = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.base.id}], "trial_end": trial_end})
    paused = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": catalog.seat.id}], "trial_period_days": 10, "trial_settings": {"end_behavior": {"missing_payment_method": "pause"}}}
    )
    ended = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": catalog.usage.id}], "trial_period_days": 10, "trial_settings": {"end_behavior": {"missing_payment_method": "cancel"}}}
    )
    assert {invoiced.status, paused.status, ended.status} == {"trialing"}
    advance(client, clock, trial_end - 3 * DAY)
    notices = client.v1.events.list({"type": "customer.subscription.trial_will_end"}).data
    assert sorted(e.data.object.id for e in notices) == sorted([invoiced.id, paused.id, ended.id])
    assert all(e.created == trial_end - 3 * DAY for e in notices)
    advance(client, clock, trial_end + 2 * HOUR)
    assert client.v1.subscriptions.retrieve(paused.id).status == "paused"
    assert client.v1.subscriptions.retrieve(ended.id).status == "canceled"
    after_trial = client.v1.subscriptions.retrieve(invoiced.id, {"expand": ["latest_invoice"]})
    assert after_trial.status == "past_due"  # the trial-end invoice could not be charged: no card
    assert (after_trial.latest_invoice.billing_reason, after_trial.latest_invoice.amount_due) == ("subscription_cycle", 2000)
    assert after_trial.billing_cycle_anchor == trial_end


def test_trial_end_now_starts_billing_at_once(client, catalog, clock):
    customer = paying_customer(client, clock)
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.base.id}], "trial_period_days": 30})
    advance(client, clock, clock.frozen_time + 2 * DAY)
    now = clock.frozen_time + 2 * DAY
    ended = client.v1.subscriptions.update(subscription.id, {"trial_end": "now"})
    assert (ended.status, ended.trial_end, ended.billing_cycle_anchor) == ("active", now, now)
    advance(client, clock, now + HOUR)
    invoice = client.v1.invoices.retrieve(client.v1.subscriptions.retrieve(subscription.id).latest_invoice)
    assert (invoice.status, invoice.amount_paid) == ("paid", 2000)


def test_dunning_settings_decide_retries_and_the_final_status(client, control, catalog, clock):
    control("POST", "/_sandbox/settings", {"dunning_retry_days": [1, 2], "dunning_final_action": "unpaid"})
    customer = paying_customer(client, clock)
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.base.id}]})
    _, end = period_of(client, subscription.id)
    control("POST", f"/_sandbox/customers/{customer.id}/payment_behavior", {"behavior": "decline"})
    advance(client, clock, end + HOUR)
    invoice = client.v1.invoices.list({"subscription": subscription.id}).data[0]
    assert (invoice.attempt_count, invoice.next_payment_attempt) == (1, end + HOUR + DAY)
    assert client.v1.subscriptions.retrieve(subscription.id).status == "past_due"
    advance(client, clock, end + HOUR + 2 * DAY)
    invoice = client.v1.invoices.retrieve(invoice.id)
    assert (invoice.attempt_count, invoice.next_payment_attempt, invoice.status) == (3, None, "open")
    assert client.v1.subscriptions.retrieve(subscription.id).status == "unpaid"
    assert len(client.v1.events.list({"type": "invoice.payment_failed"}).data) == 3

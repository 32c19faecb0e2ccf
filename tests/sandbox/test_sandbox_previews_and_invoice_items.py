"""`invoices.create_preview` (what a change will cost, changing nothing) and
`/v1/invoiceitems` (one-off charges and credits)."""

from __future__ import annotations

import pytest
import stripe

from sandbox_helpers import advance, stripe_example_objects
from test_sandbox_object_shapes import check_parsed
from test_sandbox_subscriptions import DAY, HOUR, lines, paying_customer, period_of


def seats(client, catalog, clock, quantity=3):
    customer = paying_customer(client, clock)
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.seat.id, "quantity": quantity}]})
    return customer, subscription, subscription["items"].data[0]


@pytest.mark.parametrize("behavior", ["create_prorations", "always_invoice"])
def test_a_seat_change_preview_bills_exactly_what_the_change_then_bills(client, catalog, clock, behavior):
    customer, subscription, item = seats(client, catalog, clock)
    start, end = period_of(client, subscription.id)
    advance(client, clock, start + 8 * DAY)
    events_before = [e.id for e in client.v1.events.list({"limit": 100}).data]
    change = {"items": [{"id": item.id, "quantity": 7}], "proration_behavior": behavior, "proration_date": start + 8 * DAY}
    preview = client.v1.invoices.create_preview({"subscription": subscription.id, "subscription_details": change})
    check_parsed(preview, stripe.Invoice, stripe_example_objects())
    assert preview.status == "draft" and preview.number is None and preview.id.startswith("upcoming_")
    # Nothing changed: no invoice, no event, the same quantity.
    assert len(client.v1.invoices.list({"subscription": subscription.id}).data) == 1
    assert [e.id for e in client.v1.events.list({"limit": 100}).data] == events_before
    assert client.v1.subscription_items.retrieve(item.id).quantity == 3

    client.v1.subscriptions.update(subscription.id, change)  # type: ignore[arg-type]
    if behavior == "always_invoice":
        real = client.v1.invoices.list({"subscription": subscription.id}).data[0]
        assert real.billing_reason == preview.billing_reason == "subscription_update"
    else:
        advance(client, clock, end)
        real = client.v1.invoices.list({"subscription": subscription.id}).data[0]
        assert preview.billing_reason == "subscription_cycle" and preview.period_end == end
    assert lines(preview) == lines(real)
    assert preview.amount_due == real.amount_due


def test_previews_of_the_next_invoice_a_new_subscription_and_a_cancellation(client, catalog, clock):
    customer, subscription, item = seats(client, catalog, clock, quantity=2)
    client.v1.subscription_items.update(item.id, {"quantity": 4})  # a pending proration
    _, end = period_of(client, subscription.id)
    upcoming = client.v1.invoices.create_preview({"subscription": subscription.id})
    assert upcoming.period_end == end and upcoming.amount_due == 2000 + 1000  # 4 seats ahead, 2 added seats prorated over the whole period
    recurring = client.v1.invoices.create_preview({"subscription": subscription.id, "preview_mode": "recurring"})
    assert recurring.amount_due == 2000
    fresh = client.v1.invoices.create_preview(
        {"customer": customer.id, "subscription_details": {"items": [{"price": catalog.base.id}, {"price": catalog.seat.id, "quantity": 3}]}}
    )
    assert (fresh.billing_reason, fresh.amount_due) == ("subscription_create", 3500)
    assert len(client.v1.subscriptions.list({"customer": customer.id}).data) == 1
    client.v1.subscriptions.update(subscription.id, {"cancel_at_period_end": True})
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.invoices.create_preview({"subscription": subscription.id, "preview_mode": "recurring"})
    assert caught.value.code == "invoice_upcoming_none"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.invoices.create_preview({"subscription": subscription.id, "subscription_details": {"trial_end": "now"}})
    assert caught.value.param == "subscription_details[trial_end]" and "does not simulate" in caught.value.user_message


def test_invoice_items_go_on_the_next_invoice_and_can_be_changed_until_then(client, catalog, clock):
    customer, subscription, _ = seats(client, catalog, clock, quantity=1)
    _, end = period_of(client, subscription.id)
    setup = client.v1.prices.create({"product": catalog.product.id, "currency": "usd", "unit_amount": 2500})
    onboarding = client.v1.invoice_items.create({"customer": customer.id, "pricing": {"price": setup.id}, "quantity": 2, "description": "Onboarding"})
    check_parsed(onboarding, stripe.InvoiceItem, stripe_example_objects())
    assert (onboarding.amount, onboarding.currency, onboarding.invoice, onboarding.pricing.price_details.price) == (5000, "usd", None, setup.id)
    credit = client.v1.invoice_items.create({"customer": customer.id, "amount": -700, "currency": "usd", "description": "Goodwill"})
    client.v1.invoice_items.update(credit.id, {"amount": -900})
    mistake = client.v1.invoice_items.create({"customer": customer.id, "amount": 123, "currency": "usd"})
    assert client.v1.invoice_items.delete(mistake.id).deleted is True
    assert {i.id for i in client.v1.invoice_items.list({"customer": customer.id, "pending": True}).data} == {onboarding.id, credit.id}
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.invoice_items.create({"customer": customer.id, "pricing": {"price": catalog.seat.id}})
    assert caught.value.param == "pricing[price]"
    assert [e.type for e in client.v1.events.list({"type": "invoiceitem.*"}).data].count("invoiceitem.created") == 3

    advance(client, clock, end)
    draft = client.v1.invoices.list({"subscription": subscription.id}).data[0]
    assert lines(draft) == sorted([("1 × Pro (at $5.00 / month)", 500), ("Onboarding", 5000), ("Goodwill", -900)])
    # A draft in its grace hour takes more items; they are billed when it is finalized.
    late = client.v1.invoice_items.create({"customer": customer.id, "amount": 300, "currency": "usd", "invoice": draft.id, "description": "Late fee"})
    assert late.invoice == draft.id
    advance(client, clock, end + HOUR + 60)
    paid = client.v1.invoices.retrieve(draft.id)
    assert (paid.status, paid.amount_paid) == ("paid", 500 + 5000 - 900 + 300)
    assert client.v1.invoice_items.retrieve(onboarding.id).invoice == draft.id
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoice_items.update(late.id, {"amount": 1})

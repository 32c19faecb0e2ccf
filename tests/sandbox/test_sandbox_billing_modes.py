"""`billing_mode`: flexible by default (Stripe's default since 2025-09-30), classic on
request; the two credit seat reductions differently after an unbilled change."""

from __future__ import annotations

import pytest
import stripe

from sandbox_helpers import advance
from test_sandbox_subscriptions import DAY, paying_customer, period_of, prorated


def test_new_subscriptions_are_flexible_unless_classic_is_asked_for(client, catalog, clock):
    customer = paying_customer(client, clock)
    flexible = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.seat.id}]})
    assert (flexible.billing_mode.type, flexible.billing_mode.flexible.proration_discounts) == ("flexible", "included")
    classic = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": catalog.base.id}], "billing_mode": {"type": "classic"}}
    )
    assert (classic.billing_mode.type, classic.billing_mode.flexible) == ("classic", None)
    itemized = client.v1.subscriptions.create(
        {
            "customer": customer.id,
            "items": [{"price": catalog.usage.id}],
            "billing_mode": {"type": "flexible", "flexible": {"proration_discounts": "itemized"}},
        }
    )
    assert itemized.billing_mode.flexible.proration_discounts == "itemized"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.subscriptions.create(
            {"customer": customer.id, "items": [{"price": catalog.base.id}], "billing_mode": {"type": "fortnightly"}}  # type: ignore[typeddict-item]
        )
    assert caught.value.param == "billing_mode[type]"


@pytest.mark.parametrize("mode", ["flexible", "classic"])
def test_a_reduction_after_an_unbilled_increase_credits_what_each_mode_credits(client, catalog, clock, mode):
    """3 seats, 3→5 with `none` (nothing billed), then 5→4 with `always_invoice`: classic
    credits the unused time of 5 seats, flexible only of the 3 that were debited."""
    customer = paying_customer(client, clock)
    params = {"customer": customer.id, "items": [{"price": catalog.seat.id, "quantity": 3}]}
    if mode == "classic":
        params["billing_mode"] = {"type": "classic"}
    subscription = client.v1.subscriptions.create(params)
    start, end = period_of(client, subscription.id)
    item = subscription["items"].data[0]
    advance(client, clock, start + 5 * DAY)
    client.v1.subscription_items.update(item.id, {"quantity": 5, "proration_behavior": "none"})
    at = start + 9 * DAY
    advance(client, clock, at)
    client.v1.subscription_items.update(item.id, {"quantity": 4, "proration_behavior": "always_invoice"})
    invoice = client.v1.invoices.list({"subscription": subscription.id}).data[0]
    assert invoice.billing_reason == "subscription_update"
    credited_seats = 3 if mode == "flexible" else 5
    credit = next(line for line in invoice.lines.data if line.amount < 0)
    charge = next(line for line in invoice.lines.data if line.amount > 0)
    assert credit.amount == -prorated(500 * credited_seats, start, end, at)
    assert credit.description.startswith(f"Unused time on {credited_seats} × Pro")
    assert charge.amount == prorated(2000, start, end, at)
    # A second reduction credits the 4 seats that the always_invoice change debited, in both modes.
    client.v1.subscription_items.update(item.id, {"quantity": 2, "proration_behavior": "always_invoice"})
    again = client.v1.invoices.list({"subscription": subscription.id}).data[0]
    assert min(line.amount for line in again.lines.data) == -prorated(2000, start, end, at)


def test_flexible_mode_makes_no_empty_first_invoice_for_metered_items_only(client, catalog):
    customer = client.v1.customers.create({})
    flexible = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.usage.id}]})
    assert (flexible.status, flexible.latest_invoice) == ("active", None)
    assert client.v1.invoices.list({"customer": customer.id}).data == []
    classic = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": catalog.usage.id}], "billing_mode": {"type": "classic"}}
    )
    assert classic.status == "active"
    assert client.v1.invoices.retrieve(classic.latest_invoice).amount_due == 0


def test_checkout_subscriptions_take_the_billing_mode_too(client, control, catalog):
    session = client.v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "line_items": [{"price": catalog.base.id, "quantity": 1}],
            "subscription_data": {"billing_mode": {"type": "classic"}},
            "success_url": "https://example.com/ok",
        }
    )
    control("POST", f"/_sandbox/checkout/sessions/{session.id}/complete", {"outcome": "succeeded"})
    subscription = client.v1.subscriptions.retrieve(client.v1.checkout.sessions.retrieve(session.id).subscription)
    assert subscription.billing_mode.type == "classic"

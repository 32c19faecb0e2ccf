"""Checkout Sessions in subscription mode, the hosted page, and completion outcomes."""

from __future__ import annotations

import time

import pytest
import stripe

from sandbox_helpers import advance, http_raw

DAY = 86_400


def subscription_session(client, catalog, **extra):
    params = {
        "mode": "subscription",
        "line_items": [{"price": catalog.base.id, "quantity": 1}, {"price": catalog.seat.id, "quantity": 3}, {"price": catalog.usage.id}],
        "success_url": "https://app.example.com/billing/success?session={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://app.example.com/billing/cancel",
        **extra,
    }
    return client.v1.checkout.sessions.create(params)


def test_a_session_with_a_trial_completes_into_a_trialing_subscription(sandbox, client, control, catalog):
    session = subscription_session(
        client,
        catalog,
        customer_email="owner@example.com",
        client_reference_id="org_123",
        metadata={"org_id": "org_123"},
        payment_method_collection="if_required",
        subscription_data={
            "trial_period_days": 14,
            "metadata": {"org_id": "org_123"},
            "trial_settings": {"end_behavior": {"missing_payment_method": "cancel"}},
        },
    )
    assert session.id.startswith("cs_test_") and session.status == "open" and session.payment_status == "unpaid"
    assert session.url == f"{sandbox.url}/checkout/{session.id}"
    assert (session.mode, session.amount_total, session.currency) == ("subscription", 0, "usd")
    assert session.payment_method_collection == "if_required"
    assert session.expires_at - session.created == DAY
    completed = control("POST", f"/_sandbox/checkout/sessions/{session.id}/complete", {"outcome": "succeeded"})
    assert (completed["status"], completed["payment_status"], completed["url"]) == ("complete", "no_payment_required", None)
    assert completed["customer_details"]["email"] == "owner@example.com"
    assert (completed["client_reference_id"], completed["metadata"]) == ("org_123", {"org_id": "org_123"})
    subscription = client.v1.subscriptions.retrieve(completed["subscription"])
    assert subscription.status == "trialing"
    assert subscription.trial_end - subscription.trial_start == 14 * DAY
    assert subscription.metadata.to_dict() == {"org_id": "org_123"}
    assert subscription.trial_settings.end_behavior.missing_payment_method == "cancel"
    assert subscription.default_payment_method is not None
    assert sorted((i.price.id, i.quantity) for i in subscription["items"].data) == sorted(
        [(catalog.base.id, 1), (catalog.seat.id, 3), (catalog.usage.id, None)]
    )
    assert completed["invoice"] == subscription.latest_invoice
    assert client.v1.invoices.retrieve(subscription.latest_invoice).amount_due == 0
    assert client.v1.customers.retrieve(subscription.customer).email == "owner@example.com"
    event = client.v1.events.list({"type": "checkout.session.completed"}).data[0]
    assert event.data.object.id == session.id
    assert [s.id for s in client.v1.checkout.sessions.list({"status": "complete"}).data] == [session.id]
    assert [s.id for s in client.v1.checkout.sessions.list({"subscription": subscription.id}).data] == [session.id]
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.checkout.sessions.expire(session.id)
    assert "status of `open`" in caught.value.user_message


def test_a_session_without_trial_charges_the_first_invoice(client, control, catalog):
    session = subscription_session(client, catalog, subscription_data={"trial_end": int(time.time()) + 3 * DAY, "description": "x"})
    assert session.amount_total == 0
    paid_now = subscription_session(client, catalog)
    assert paid_now.amount_total == 2000 + 3 * 500
    completed = control("POST", f"/_sandbox/checkout/sessions/{paid_now.id}/complete", {"outcome": "succeeded", "email": "buyer@example.com"})
    assert completed["payment_status"] == "paid"
    subscription = client.v1.subscriptions.retrieve(completed["subscription"], {"expand": ["latest_invoice"]})
    assert subscription.status == "active"
    assert (subscription.latest_invoice.status, subscription.latest_invoice.amount_paid) == ("paid", 3500)
    assert subscription.latest_invoice.billing_reason == "subscription_create"


def test_completion_outcomes(client, control, catalog):
    declined = subscription_session(client, catalog)
    body = control("POST", f"/_sandbox/checkout/sessions/{declined.id}/complete", {"outcome": "card_declined"}, expect=402)
    assert body["error"]["code"] == "card_declined"
    assert client.v1.checkout.sessions.retrieve(declined.id).status == "open"
    no_card = control("POST", f"/_sandbox/checkout/sessions/{declined.id}/complete", {"outcome": "no_payment_method"}, expect=400)
    assert "needs a payment method" in no_card["error"]["message"]
    later = control("POST", f"/_sandbox/checkout/sessions/{declined.id}/complete", {"outcome": "decline_later"})
    subscription = client.v1.subscriptions.retrieve(later["subscription"])
    assert subscription.status == "active"  # paid now; the card declines from the next charge on
    with pytest.raises(stripe.CardError):
        client.v1.subscriptions.create({"customer": subscription.customer, "items": [{"price": catalog.seat.id}], "payment_behavior": "error_if_incomplete", "default_payment_method": subscription.default_payment_method})
    trial = subscription_session(client, catalog, payment_method_collection="if_required", subscription_data={"trial_period_days": 7})
    started = control("POST", f"/_sandbox/checkout/sessions/{trial.id}/complete", {"outcome": "no_payment_method"})
    assert client.v1.subscriptions.retrieve(started["subscription"]).default_payment_method is None
    control("POST", f"/_sandbox/checkout/sessions/{trial.id}/complete", {"outcome": "succeeded"}, expect=400)
    control("POST", f"/_sandbox/checkout/sessions/{trial.id}/complete", {"outcome": "maybe"}, expect=400)
    control("POST", "/_sandbox/checkout/sessions/cs_test_missing/complete", {}, expect=404)


def test_the_hosted_page_shows_the_session_and_redirects_to_success_url(sandbox, client, catalog):
    session = subscription_session(client, catalog, customer_email="page@example.com")
    status, headers, page = http_raw(session.url)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"Pro" in page and b"page@example.com" in page and b"$35.00" in page
    status, headers, _ = http_raw(session.url, "POST", b"outcome=succeeded&email=page%40example.com", {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 303
    assert headers["Location"] == f"https://app.example.com/billing/success?session={session.id}"
    assert client.v1.checkout.sessions.retrieve(session.id).status == "complete"
    assert http_raw(session.url)[0] == 410


def test_line_items_list_and_expand(client, catalog):
    session = subscription_session(client, catalog)
    items = client.v1.checkout.sessions.line_items.list(session.id)
    assert [(i.price.id, i.quantity, i.amount_total) for i in items.data] == [
        (catalog.base.id, 1, 2000),
        (catalog.seat.id, 3, 1500),
        (catalog.usage.id, None, 0),
    ]
    assert items.data[0].id.startswith("li_") and items.data[0].description == "Pro"
    expanded = client.v1.checkout.sessions.retrieve(session.id, {"expand": ["line_items"]})
    assert len(expanded.line_items.data) == 3
    assert "line_items" not in client.v1.checkout.sessions.retrieve(session.id).last_response.data


def test_session_validation_follows_stripe(client, catalog):
    def rejected(expected_param, **params):
        with pytest.raises(stripe.InvalidRequestError) as caught:
            client.v1.checkout.sessions.create(params)
        assert caught.value.param == expected_param, caught.value.user_message
        return caught.value

    rejected("mode", line_items=[{"price": catalog.base.id, "quantity": 1}])
    assert "subscription` mode only" in rejected("mode", mode="payment", line_items=[{"price": catalog.base.id, "quantity": 1}]).user_message
    rejected("line_items", mode="subscription")
    rejected("line_items[0][quantity]", mode="subscription", line_items=[{"price": catalog.base.id}])
    rejected("line_items[1][quantity]", mode="subscription", line_items=[{"price": catalog.base.id, "quantity": 1}, {"price": catalog.usage.id, "quantity": 1}])
    rejected("line_items[0][price]", mode="subscription", line_items=[{"price": "price_missing", "quantity": 1}])
    rejected(
        "subscription_data[trial_end]",
        mode="subscription",
        line_items=[{"price": catalog.base.id, "quantity": 1}],
        subscription_data={"trial_end": int(time.time()) + DAY},
    )
    customer = client.v1.customers.create({})
    rejected("customer_email", mode="subscription", line_items=[{"price": catalog.base.id, "quantity": 1}], customer=customer.id, customer_email="x@example.com")
    rejected("expires_at", mode="subscription", line_items=[{"price": catalog.base.id, "quantity": 1}], expires_at=int(time.time()) + 60)
    rejected("shipping_address_collection", mode="subscription", line_items=[{"price": catalog.base.id, "quantity": 1}], shipping_address_collection={"allowed_countries": ["FR"]})


def test_sessions_expire_by_request_and_on_a_test_clock(client, catalog, clock):
    session = subscription_session(client, catalog)
    expired = client.v1.checkout.sessions.expire(session.id)
    assert (expired.status, expired.url) == ("expired", None)
    customer = client.v1.customers.create({"test_clock": clock.id})
    on_clock = subscription_session(client, catalog, customer=customer.id)
    assert on_clock.created == clock.frozen_time
    advance(client, clock, clock.frozen_time + DAY + 1)
    assert client.v1.checkout.sessions.retrieve(on_clock.id).status == "expired"
    assert len(client.v1.events.list({"type": "checkout.session.expired"}).data) == 2

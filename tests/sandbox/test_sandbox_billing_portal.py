"""The customer portal: configurations, sessions, and what customers do there arriving as
the same webhooks as API changes."""

from __future__ import annotations

import json

import pytest
import stripe

from sandbox_helpers import http_raw, stripe_example_objects
from test_sandbox_object_shapes import check_parsed
from test_sandbox_subscriptions import paying_customer


def test_a_portal_session_and_the_changes_a_customer_makes_there(client, control, catalog, clock, webhook_receiver):
    fixtures = stripe_example_objects()
    client.v1.webhook_endpoints.create({"url": webhook_receiver.url, "enabled_events": ["*"]})
    customer = paying_customer(client, clock)
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.seat.id, "quantity": 2}]})
    session = client.v1.billing_portal.sessions.create({"customer": customer.id, "return_url": "https://example.com/account"})
    check_parsed(session, stripe.billing_portal.Session, fixtures)
    assert session.id.startswith("bps_") and session.url.endswith(f"/billing_portal/{session.id}")
    configuration = client.v1.billing_portal.configurations.retrieve(session.configuration)
    check_parsed(configuration, stripe.billing_portal.Configuration, fixtures)
    assert configuration.is_default and configuration.features.subscription_cancel.mode == "at_period_end"

    actions = f"/_sandbox/billing_portal/sessions/{session.id}/actions"
    card = control("POST", actions, {"action": "update_payment_method", "card": "pm_card_mastercard"})
    assert client.v1.customers.retrieve(customer.id).invoice_settings.default_payment_method == card["id"]
    control("POST", actions, {"action": "update_subscription", "subscription": subscription.id, "quantity": 4})
    assert client.v1.subscriptions.retrieve(subscription.id)["items"].data[0].quantity == 4
    assert len(client.v1.invoice_items.list({"customer": customer.id, "pending": True}).data) == 2  # prorations
    canceled = control("POST", actions, {"action": "cancel_subscription", "subscription": subscription.id})
    assert (canceled["cancel_at_period_end"], canceled["cancellation_details"]["reason"]) == (True, "cancellation_requested")
    error = control("POST", actions, {"action": "cancel_subscription", "subscription": subscription.id, "reason": "too_expensive"}, expect=400)
    assert "cancellation reason" in error["error"]["message"]

    # The portal's changes are events like any other (newest first), sent to the endpoint.
    portal_types = ("payment_method.attached", "customer.updated", "customer.subscription.updated")
    recent = [e for e in client.v1.events.list({"limit": 100}).data if e.type in portal_types][:4]
    assert [e.type for e in recent] == [
        "customer.subscription.updated",
        "customer.subscription.updated",
        "customer.updated",
        "payment_method.attached",
    ]
    assert all(e.request.id is None for e in recent)
    control("POST", "/_sandbox/webhooks/wait", {"timeout": 10})
    delivered = {json.loads(d.body)["id"] for d in webhook_receiver.deliveries}
    assert {e.id for e in recent} <= delivered


def test_a_custom_configuration_and_the_portal_page(client, catalog, clock):
    customer = paying_customer(client, clock)
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.base.id}]})
    configuration = client.v1.billing_portal.configurations.create(
        {
            "features": {
                "invoice_history": {"enabled": True},
                "subscription_cancel": {
                    "enabled": True,
                    "mode": "immediately",
                    "proration_behavior": "create_prorations",
                    "cancellation_reason": {"enabled": True, "options": ["too_expensive", "unused"]},
                },
            },
            "business_profile": {"headline": "Acme billing"},
            "default_return_url": "https://example.com/back",
        }
    )
    assert (configuration.is_default, configuration.features.subscription_update.enabled) == (False, False)
    session = client.v1.billing_portal.sessions.create({"customer": customer.id, "configuration": configuration.id})
    assert session.return_url == "https://example.com/back"
    status, _, page = http_raw(session.url)
    assert status == 200 and b"Cancel plan" in page and b"Quantity" not in page
    body = f"action=cancel_subscription&subscription={subscription.id}".encode()
    status, _, page = http_raw(session.url, "POST", body, {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200 and b"Saved." in page
    ended = client.v1.subscriptions.retrieve(subscription.id)
    assert (ended.status, ended.cancellation_details.reason) == ("canceled", "cancellation_requested")
    assert client.v1.customers.retrieve(customer.id).balance < 0  # the unused time was credited
    listed = client.v1.billing_portal.configurations.list({"is_default": False})
    assert [c.id for c in listed.data] == [configuration.id]
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.billing_portal.sessions.create({"customer": customer.id, "flow_data": {"type": "payment_method_update"}})
    assert caught.value.param == "flow_data"

"""The whole story on a test clock: checkout with a trial → trial end → renewal with usage →
failed payment → past_due → retries → canceled, with every webhook verified by
`StripeClient.construct_event` against the endpoint's secret."""

from __future__ import annotations

from collections import Counter

from sandbox_helpers import advance

DAY = 86_400
HOUR = 3_600

NOBILL_EVENTS = [
    "checkout.session.completed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.trial_will_end",
    "invoice.created",
    "invoice.finalized",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.payment_succeeded",
]


def test_trial_checkout_renewal_failed_payment_past_due_canceled(client, control, catalog, clock, webhook_receiver):
    endpoint = client.v1.webhook_endpoints.create({"url": webhook_receiver.url, "enabled_events": NOBILL_EVENTS})
    advance_to = lambda to: advance(client, clock, to)  # noqa: E731
    usage = lambda value: client.v1.billing.meter_events.create(  # noqa: E731
        {"event_name": "api_calls", "payload": {"stripe_customer_id": customer.id, "value": str(value)}}
    )
    customer = client.v1.customers.create({"email": "founder@example.com", "test_clock": clock.id})
    session = client.v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "customer": customer.id,
            "client_reference_id": "org_42",
            "line_items": [{"price": catalog.base.id, "quantity": 1}, {"price": catalog.seat.id, "quantity": 3}, {"price": catalog.usage.id}],
            "subscription_data": {"trial_period_days": 14, "metadata": {"org_id": "org_42"}},
            "success_url": "https://app.example.com/done",
        }
    )
    control("POST", f"/_sandbox/checkout/sessions/{session.id}/complete", {"outcome": "succeeded"})
    subscription = client.v1.subscriptions.retrieve(client.v1.checkout.sessions.retrieve(session.id).subscription)
    assert subscription.status == "trialing"
    trial_end = subscription.trial_end
    assert trial_end == clock.frozen_time + 14 * DAY

    advance_to(trial_end - 3 * DAY)
    usage(999)  # during the trial: not billed
    advance_to(trial_end + HOUR)
    subscription = client.v1.subscriptions.retrieve(subscription.id, {"expand": ["latest_invoice"]})
    assert subscription.status == "active"
    assert (subscription.latest_invoice.status, subscription.latest_invoice.amount_paid) == ("paid", 3500)
    period_end = subscription["items"].data[0].current_period_end

    usage(1500)
    usage(500)
    advance_to(period_end + HOUR)
    renewal = client.v1.invoices.retrieve(client.v1.subscriptions.retrieve(subscription.id).latest_invoice)
    assert (renewal.status, renewal.amount_paid, renewal.billing_reason) == ("paid", 2000 + 1500 + 1000, "subscription_cycle")

    control("POST", f"/_sandbox/customers/{customer.id}/payment_behavior", {"behavior": "decline"})
    next_end = client.v1.subscriptions.retrieve(subscription.id)["items"].data[0].current_period_end
    advance_to(next_end + HOUR)
    subscription = client.v1.subscriptions.retrieve(subscription.id, {"expand": ["latest_invoice"]})
    failing = subscription.latest_invoice
    assert subscription.status == "past_due"
    assert (failing.status, failing.attempt_count, failing.next_payment_attempt) == ("open", 1, next_end + HOUR + 3 * DAY)
    assert client.v1.customers.retrieve(customer.id).delinquent is True

    advance_to(next_end + HOUR + 5 * DAY)
    assert client.v1.invoices.retrieve(failing.id).attempt_count == 3
    assert client.v1.subscriptions.retrieve(subscription.id).status == "past_due"
    advance_to(next_end + HOUR + 7 * DAY)
    final = client.v1.invoices.retrieve(failing.id)
    assert (final.status, final.attempt_count, final.next_payment_attempt) == ("open", 4, None)
    subscription = client.v1.subscriptions.retrieve(subscription.id)
    assert subscription.status == "canceled"
    assert subscription.cancellation_details.reason == "payment_failed"
    assert subscription.ended_at == next_end + HOUR + 7 * DAY

    # Every event was delivered, signed as Stripe signs, and verifies with the secret.
    assert control("POST", "/_sandbox/webhooks/wait", {"timeout": 10})["idle"] is True
    delivered = {}
    for delivery in webhook_receiver.deliveries:
        event = client.construct_event(delivery.body, delivery.headers["Stripe-Signature"], endpoint.secret)
        delivered[event.id] = event
    recorded = [e for e in client.v1.events.list({"types": NOBILL_EVENTS, "limit": 100}).auto_paging_iter()]
    assert set(delivered) == {e.id for e in recorded}
    assert all(e.pending_webhooks == 0 for e in recorded)

    in_order = list(reversed(recorded))
    counts = Counter(e.type for e in in_order)
    assert counts["checkout.session.completed"] == 1
    assert counts["customer.subscription.trial_will_end"] == 1
    assert counts["customer.subscription.created"] == 1 and counts["customer.subscription.deleted"] == 1
    assert counts["invoice.created"] == 4  # trial start ($0), trial end, renewal, failing renewal
    assert counts["invoice.paid"] == 3 and counts["invoice.payment_succeeded"] == 3
    assert counts["invoice.payment_failed"] == 4
    statuses = [e.data.object.status for e in in_order if e.type.startswith("customer.subscription.") and e.type != "customer.subscription.trial_will_end"]
    assert [s for i, s in enumerate(statuses) if i == 0 or s != statuses[i - 1]] == ["trialing", "active", "past_due", "canceled"]
    assert all(e.data.object.metadata["org_id"] == "org_42" for e in in_order if e.type.startswith("customer.subscription."))
    trial_notice = next(e for e in in_order if e.type == "customer.subscription.trial_will_end")
    assert trial_notice.created == trial_end - 3 * DAY
    failures = [e for e in in_order if e.type == "invoice.payment_failed"]
    assert [e.created for e in failures] == [next_end + HOUR + d * DAY for d in (0, 3, 5, 7)]
    assert [e.data.object.attempt_count for e in failures] == [1, 2, 3, 4]

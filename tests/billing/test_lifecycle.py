"""End to end on a test clock: trial → checkout → active → renewal → failed payment →
past_due → paid → active → cancel → canceled, every step driven by Stripe's webhooks."""

from __future__ import annotations

import datetime as dt

from billing_helpers import BillingWorld, audit_events, control
from nobill.billing import service, subscriptions
from nobill.db.unit_of_work import UnitOfWork
from nobill.v1 import billing_pb2, common_pb2

HOUR = 3600
DAY = 24 * HOUR


def test_a_pro_subscription_lives_its_whole_life_through_webhooks(billing: BillingWorld) -> None:
    owner, org_id = billing.new_org()
    customer = billing.customer_id(org_id)
    trial = billing.subscription(owner, org_id)
    assert trial.status == common_pb2.SUBSCRIPTION_STATUS_TRIALING and trial.plan == common_pb2.PLAN_PRO

    # Checkout keeps the rest of the trial and needs no card while nothing is due.
    session = billing.checkout(owner, org_id, common_pb2.PLAN_PRO)
    stripe_session = billing.stripe.v1.checkout.sessions.retrieve(session.checkout_session_id)
    assert stripe_session.payment_method_collection == "if_required"
    assert stripe_session.customer == customer
    assert session.url
    billing.complete_checkout(session.checkout_session_id, "succeeded")
    subscribed = billing.wait_subscription(owner, org_id, lambda s: s.current_period_end.seconds > 0)
    assert subscribed.status == common_pb2.SUBSCRIPTION_STATUS_TRIALING
    assert subscribed.trial_end.seconds == trial.trial_end.seconds
    assert subscribed.seats == 1 and subscribed.has_payment_method

    # The trial ends: the first period is invoiced and paid.
    billing.advance(org_id, trial.trial_end.seconds + 2 * HOUR)
    active = billing.wait_subscription(owner, org_id, lambda s: s.status == common_pb2.SUBSCRIPTION_STATUS_ACTIVE)
    billing.wait_settled(org_id)
    paid = [i for i in billing.invoices(owner, org_id) if i.status == "paid" and i.amount_paid > 0]
    assert paid and all(i.currency == "usd" and i.period_end.seconds > i.period_start.seconds for i in paid)
    for invoice in paid:  # kept as Stripe has it (the sandbox has no hosted page: None there)
        on_stripe = billing.stripe.v1.invoices.retrieve(invoice.id)
        assert (invoice.amount_paid, invoice.hosted_invoice_url) == (on_stripe.amount_paid, on_stripe.hosted_invoice_url or "")

    # The renewal's payment fails: past_due, access kept for the grace period.
    control(billing.sandbox_url, "POST", f"customers/{customer}/payment_behavior", {"behavior": "decline"})
    billing.advance(org_id, active.current_period_end.seconds + 2 * HOUR)
    billing.wait_subscription(owner, org_id, lambda s: s.status == common_pb2.SUBSCRIPTION_STATUS_PAST_DUE)
    billing.wait_settled(org_id)
    entitlements = billing.entitlements(owner, org_id)
    assert entitlements.status == common_pb2.SUBSCRIPTION_STATUS_PAST_DUE and entitlements.access_allowed
    with UnitOfWork(billing.database, org_id=org_id) as uow:  # the grace period ends
        grace = dt.timedelta(days=billing.settings.past_due_grace_days)
        since = subscriptions.get(uow=uow, org_id=org_id).past_due_since
        assert since is not None
        assert service.entitlements(uow=uow, org_id=org_id, grace=grace, now=since + grace - dt.timedelta(seconds=1)).access_allowed
        assert not service.entitlements(uow=uow, org_id=org_id, grace=grace, now=since + grace).access_allowed
    assert any(i.status == "open" and i.amount_paid == 0 for i in billing.invoices(owner, org_id))

    # The card works again; the dunning retry pays: active.
    control(billing.sandbox_url, "POST", f"customers/{customer}/payment_behavior", {"behavior": "succeed"})
    billing.advance(org_id, active.current_period_end.seconds + 3 * DAY + 2 * HOUR)
    renewed = billing.wait_subscription(owner, org_id, lambda s: s.status == common_pb2.SUBSCRIPTION_STATUS_ACTIVE)
    billing.wait_settled(org_id)
    assert renewed.current_period_end.seconds > active.current_period_end.seconds
    assert all(i.status == "paid" for i in billing.invoices(owner, org_id) if i.amount_due > 0)

    # Cancel at the period's end: Stripe says so at once, the webhook confirms it.
    pending = owner.billing.CancelSubscription(
        billing_pb2.CancelSubscriptionRequest(org_id=org_id, at_period_end=True)
    ).subscription
    assert pending.cancel_at_period_end
    billing.wait_subscription(owner, org_id, lambda s: s.cancel_at_period_end)
    billing.advance(org_id, renewed.current_period_end.seconds + HOUR)
    billing.wait_subscription(owner, org_id, lambda s: s.status == common_pb2.SUBSCRIPTION_STATUS_CANCELED)
    gone = billing.entitlements(owner, org_id)
    assert not gone.access_allowed and list(gone.features) == []

    # ListInvoices pages newest first through everything Stripe reported.
    everything = billing.invoices(owner, org_id)
    paged, token = [], ""
    while True:
        page = owner.billing.ListInvoices(billing_pb2.ListInvoicesRequest(org_id=org_id, page_size=1, page_token=token))
        paged.extend(page.invoices)
        token = page.next_page_token
        if not token:
            break
    assert [i.id for i in paged] == [i.id for i in everything] and len(paged) >= 3
    assert [i.create_time.seconds for i in paged] == sorted((i.create_time.seconds for i in paged), reverse=True)

    # Every change is audited; Stripe's changes name Stripe and the event.
    events = audit_events(owner, org_id)
    stripe_events = [e for e in events if e.actor.type == common_pb2.ACTOR_TYPE_STRIPE]
    assert {"subscription.active", "subscription.past_due", "subscription.canceled"} <= {e.action for e in stripe_events}
    assert all(e.actor.id.startswith("evt_") and e.request_id == e.actor.id for e in stripe_events)
    requested = [e for e in events if e.action == "subscription.cancel_requested"]
    assert requested and requested[0].actor.type == common_pb2.ACTOR_TYPE_USER

"""Whatever Stripe's delivery order and duplicates, NOBill ends where Stripe is; and a
Stripe outage during membership changes converges once Stripe is back. Events for a
customer no org owns are retried, parked visibly, replayable, and routed (then applied)
once the customer's org is recorded."""

from __future__ import annotations

import json
import time
import uuid

from sqlalchemy import select

from billing_helpers import BillingWorld, control, wait_for
from nobill.billing import accounts, inbox, subscriptions
from nobill.billing.tables import stripe_events, stripe_unrouted_events
from nobill.db.unit_of_work import UnitOfWork
from nobill.stripe.webhooks import sign
from nobill.v1 import billing_pb2, billing_pb2_grpc, common_pb2
from support import bearer

HOUR = 3600
STATUS = {
    "trialing": common_pb2.SUBSCRIPTION_STATUS_TRIALING,
    "active": common_pb2.SUBSCRIPTION_STATUS_ACTIVE,
    "past_due": common_pb2.SUBSCRIPTION_STATUS_PAST_DUE,
    "canceled": common_pb2.SUBSCRIPTION_STATUS_CANCELED,
}


def _stripe_subscription_id(billing: BillingWorld, org_id: str) -> str | None:
    with UnitOfWork(billing.database, org_id=org_id) as uow:
        return accounts.get(uow=uow, org_id=org_id).stripe_subscription_id


def _matches_stripe(billing: BillingWorld, owner, org_id: str) -> bool:  # noqa: ANN001
    subscription_id = _stripe_subscription_id(billing, org_id)
    if subscription_id is None:
        return False
    on_stripe = billing.stripe.v1.subscriptions.retrieve(subscription_id)
    ours = billing.subscription(owner, org_id)
    seats = subscriptions.seat_quantity(on_stripe.to_dict())
    return (
        ours.status == STATUS[on_stripe.status]
        and ours.current_period_end.seconds == on_stripe["items"].data[0].current_period_end
        and ours.cancel_at_period_end == on_stripe.cancel_at_period_end
        and (seats is None or ours.seats == seats)
    )


def test_every_event_delivered_three_times_and_shuffled_converges(billing: BillingWorld) -> None:
    control(billing.sandbox_url, "POST", "webhooks/chaos", {"duplicate": 3, "shuffle_window": 1.0, "seed": 7})
    try:
        orgs = [billing.new_org() for _ in range(2)]
        for owner, org_id in orgs:
            billing.customer_id(org_id)
            session = billing.checkout(owner, org_id, common_pb2.PLAN_PRO)
            billing.complete_checkout(session.checkout_session_id)
        for owner, org_id in orgs:
            wait_for(lambda o=owner, i=org_id: _stripe_subscription_id(billing, i), timeout=30, what="the subscription")
        owner, org_id = orgs[0]
        trial_end = billing.subscription(owner, org_id).trial_end.seconds
        billing.advance(org_id, trial_end + 2 * HOUR)
        control(billing.sandbox_url, "POST", f"customers/{billing.customer_id(org_id)}/payment_behavior", {"behavior": "decline"})
        period_end = billing.stripe.v1.subscriptions.retrieve(_stripe_subscription_id(billing, org_id))["items"].data[0].current_period_end
        billing.advance(org_id, period_end + 2 * HOUR)
        owner.billing.CancelSubscription(billing_pb2.CancelSubscriptionRequest(org_id=org_id, at_period_end=True))
        billing.wait_settled(timeout=90)
    finally:
        control(billing.sandbox_url, "DELETE", "webhooks/chaos")
    for owner, org_id in orgs:
        assert wait_for(lambda o=owner, i=org_id: _matches_stripe(billing, o, i), timeout=30, what="NOBill to match Stripe")
    assert billing.subscription(*orgs[0]).status == common_pb2.SUBSCRIPTION_STATUS_PAST_DUE
    # Each event was delivered three times and stored once.
    deliveries = control(billing.sandbox_url, "GET", "webhooks/deliveries?outcome=delivered")
    delivered = [d["event"] for d in deliveries["data"]] if isinstance(deliveries, dict) else [d["event"] for d in deliveries]
    customer = billing.customer_id(orgs[0][1])
    with UnitOfWork(billing.database, org_id=orgs[0][1]) as uow:
        stored = list(uow.execute(select(stripe_events.c.event_id).where(stripe_events.c.stripe_customer_id == customer)).scalars())
    assert stored and len(stored) == len(set(stored))
    assert all(delivered.count(event_id) >= 3 for event_id in stored)


def test_a_stripe_outage_during_membership_changes_converges_after_recovery(billing: BillingWorld) -> None:
    owner, org_id = billing.new_org()
    trial = billing.subscribe(owner, org_id, common_pb2.PLAN_PRO)
    billing.wait_settled(org_id)
    control(billing.sandbox_url, "POST", "faults", {"outage": {"seconds": 60, "mode": "503"}})
    try:
        billing.add_members(owner, org_id, 2)  # membership works without Stripe
        assert billing.entitlements(owner, org_id).access_allowed
        assert billing.subscription(owner, org_id).status == trial.status
        time.sleep(3)  # the seat sync runs and fails transiently meanwhile
    finally:
        control(billing.sandbox_url, "DELETE", "faults")
    subscription_id = _stripe_subscription_id(billing, org_id)
    assert subscription_id

    def seats_on_stripe() -> int:
        on_stripe = billing.stripe.v1.subscriptions.retrieve(subscription_id).to_dict()
        return subscriptions.seat_quantity(on_stripe) or 0

    wait_for(lambda: seats_on_stripe() == 3, timeout=60, interval=0.5, what="the seat sync to catch up")
    billing.wait_settled(org_id)
    assert billing.subscription(owner, org_id).seats == 3


def test_an_event_for_an_unknown_customer_is_retried_parked_and_replayable(billing: BillingWorld) -> None:
    stranger = billing.stripe.v1.customers.create({"name": "not ours"})
    event = {
        "id": f"evt_test_{uuid.uuid4().hex}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "customer.subscription.updated",
        "data": {"object": {"id": "sub_unknown", "object": "subscription", "customer": stranger.id}},
    }
    payload = json.dumps(event).encode()
    stub = billing_pb2_grpc.BillingServiceStub(billing.channel)
    stub.IngestStripeEvent(
        billing_pb2.IngestStripeEventRequest(payload=payload, signature_header=sign(payload, billing.webhook_secret)),
        metadata=bearer(billing.ingest_token()), timeout=10,
    )

    def state() -> str:
        return inbox.find(database=billing.database, event_ids=[event["id"]])[event["id"]].state

    wait_for(lambda: state() == "parked", timeout=60, interval=0.3, what="the event to be parked")
    assert event["id"] in {e["event_id"] for e in inbox.parked(database=billing.database)}
    assert inbox.replay(database=billing.database, event_ids=[event["id"]]) == [event["id"]]
    wait_for(lambda: state() == "parked", timeout=60, interval=0.3, what="the replayed event to be parked again")


def test_an_event_that_arrived_before_its_customer_was_recorded_applies_once_it_is(billing: BillingWorld) -> None:
    from nobill.billing import customers, outbox
    from nobill.stripe.gateway import StripeGateway
    from test_customers_and_outbox import _org_without_enqueue

    org_id, row_id = _org_without_enqueue(billing)
    gateway = StripeGateway.from_settings(billing.settings)
    # Stripe creates the customer, NOBill's commit is lost: Stripe knows it, NOBill does not (yet).
    with UnitOfWork(billing.database, org_id=org_id) as uow:
        row = outbox.lock_pending(uow=uow, outbox_id=row_id)
        assert row is not None
        customers.create_customer(uow=uow, gateway=gateway, row=row)
        customer_id = accounts.stripe_customer_id(uow=uow, org_id=org_id)
    assert customer_id
    base = billing.stripe.v1.prices.list({"lookup_keys": ["nobill_starter_base_monthly"]}).data[0]
    created = billing.stripe.v1.subscriptions.create(
        {"customer": customer_id, "items": [{"price": base.id}], "trial_period_days": 7, "metadata": {"org_id": org_id}}
    )

    def parked_event() -> str | None:
        # Unrouted, it waits in the narrow table, without its body.
        with UnitOfWork(billing.database) as uow:
            return uow.execute(
                select(stripe_unrouted_events.c.event_id).where(
                    stripe_unrouted_events.c.stripe_customer_id == customer_id,
                    stripe_unrouted_events.c.event_type == "customer.subscription.created",
                    stripe_unrouted_events.c.state == "parked",
                )
            ).scalar_one_or_none()

    event_id = wait_for(parked_event, timeout=60, interval=0.3, what="the event to be parked")
    # Recording the customer routes what waited for it into the org's inbox: no replay needed.
    assert outbox.run(database=billing.database, gateway=gateway, org_id=org_id, outbox_id=row_id) == "done"
    wait_for(lambda: _subscription_of(billing, org_id) == created.id, timeout=30, what="the routed event to apply")

    def applied() -> bool:
        record = inbox.find(database=billing.database, event_ids=[event_id])[event_id]
        return (record.state, record.org_id) == ("applied", org_id)

    wait_for(applied, timeout=30, what="the routed event to be marked applied")
    assert inbox.replay(database=billing.database, event_ids=[event_id]) == [], "nothing parked is left of it"


def _subscription_of(billing: BillingWorld, org_id: str) -> str | None:
    with UnitOfWork(billing.database, org_id=org_id) as uow:
        return accounts.get(uow=uow, org_id=org_id).stripe_subscription_id

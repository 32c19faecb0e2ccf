"""Pro seats follow the member count: a burst of membership changes becomes one Stripe
quantity update, prorated on the next invoice; reconciliation finds and fixes drift."""

from __future__ import annotations

from sqlalchemy import func, select

from billing_helpers import BillingWorld, audit_events, wait_for
from nobill.billing import seats
from nobill.billing.tables import stripe_outbox
from nobill.db.unit_of_work import UnitOfWork
from nobill.stripe.gateway import StripeGateway
from nobill.v1 import common_pb2, tenancy_pb2

HOUR = 3600


def _seat_item(billing: BillingWorld, subscription_id: str):  # noqa: ANN202
    on_stripe = billing.stripe.v1.subscriptions.retrieve(subscription_id)
    return next(item for item in on_stripe["items"].data if item.price.lookup_key == "nobill_pro_seat_monthly")


def _seat_syncs(billing: BillingWorld, org_id: str) -> int:
    with UnitOfWork(billing.database, org_id=org_id) as uow:
        return uow.execute(
            select(func.count()).select_from(stripe_outbox).where(stripe_outbox.c.kind == "sync_seats")
        ).scalar_one()


def _active_pro(billing: BillingWorld):  # noqa: ANN202
    owner, org_id = billing.new_org()
    trial = billing.subscribe(owner, org_id, common_pb2.PLAN_PRO)
    billing.advance(org_id, trial.trial_end.seconds + 2 * HOUR)
    active = billing.wait_subscription(owner, org_id, lambda s: s.status == common_pb2.SUBSCRIPTION_STATUS_ACTIVE)
    billing.wait_settled(org_id)
    return owner, org_id, active


def test_a_burst_of_member_changes_is_one_prorated_seat_update(billing: BillingWorld) -> None:
    owner, org_id, active = _active_pro(billing)
    subscription_id = _stripe_subscription_id(billing, org_id)
    assert _seat_item(billing, subscription_id).quantity == 1
    added = billing.add_members(owner, org_id, 3)
    owner.tenancy.RemoveMember(tenancy_pb2.RemoveMemberRequest(org_id=org_id, user_id=added[0]))
    wait_for(lambda: _seat_item(billing, subscription_id).quantity == 3, timeout=30, what="3 seats on Stripe")
    billing.wait_settled(org_id)
    assert _seat_syncs(billing, org_id) == 1, "the four changes coalesced into one Stripe update"
    assert billing.subscription(owner, org_id).seats == 3

    # The next invoice carries the proration of the two seats added mid-period.
    billing.advance(org_id, active.current_period_end.seconds + 2 * HOUR)
    billing.wait_settled(org_id)
    invoices = billing.stripe.v1.invoices.list({"subscription": subscription_id, "limit": 100}).data
    renewal = max(invoices, key=lambda invoice: invoice.created)
    lines = billing.stripe.v1.invoices.line_items.list(renewal.id, {"limit": 100}).data
    prorations = [line for line in lines if line.parent.subscription_item_details and line.parent.subscription_item_details.proration]
    assert prorations and sum(line.amount for line in prorations) > 0
    seat_lines = [line for line in lines if line not in prorations and line.pricing.price_details.price == _seat_item(billing, subscription_id).price.id]
    assert [line.quantity for line in seat_lines] == [3]
    assert renewal.amount_due == sum(line.amount for line in lines)
    ours = {invoice.id: invoice for invoice in billing.invoices(owner, org_id)}
    assert ours[renewal.id].amount_due == renewal.amount_due


def test_reconciliation_finds_and_fixes_seat_drift(billing: BillingWorld) -> None:
    owner, org_id = billing.new_org()
    billing.subscribe(owner, org_id, common_pb2.PLAN_PRO)
    billing.wait_settled(org_id)
    subscription_id = _stripe_subscription_id(billing, org_id)
    item = _seat_item(billing, subscription_id)
    # Someone changed the quantity on Stripe's side (dashboard, a bug): drift.
    billing.stripe.v1.subscription_items.update(item.id, {"quantity": 5, "proration_behavior": "none"})
    drifts = seats.reconcile(database=billing.database, gateway=StripeGateway.from_settings(billing.settings))
    assert [(d.org_id, d.stripe_seats, d.members) for d in drifts if d.org_id == org_id] == [(org_id, 5, 1)]
    wait_for(lambda: _seat_item(billing, subscription_id).quantity == 1, timeout=30, what="the drift to be fixed")
    billing.wait_settled(org_id)
    assert "subscription.seat_drift_found" in {e.action for e in audit_events(owner, org_id)}
    again = seats.reconcile(database=billing.database, gateway=StripeGateway.from_settings(billing.settings))
    assert org_id not in {d.org_id for d in again}


def _stripe_subscription_id(billing: BillingWorld, org_id: str) -> str:
    from nobill.billing import accounts

    with UnitOfWork(billing.database, org_id=org_id) as uow:
        subscription_id = accounts.get(uow=uow, org_id=org_id).stripe_subscription_id
    assert subscription_id
    return subscription_id

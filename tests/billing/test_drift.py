"""Subscriptions changed outside NOBill: a snapshot's items are compared with the plan's;
NOBill corrects what it owns (base quantity, seats), flags the rest, audits it and shows it
in GetSubscription; reconciliation finds the same drift."""

from __future__ import annotations

from typing import Any

from billing_helpers import BillingWorld, audit_events, control, wait_for
from nobill.billing import drift, plans, seats
from nobill.billing.plans import PlanCode
from nobill.stripe.gateway import StripeGateway
from nobill.v1 import billing_pb2, common_pb2


def _key(plan: PlanCode, name: str) -> str:
    spec = plans.details(plan).price(name)
    assert spec is not None
    return spec.lookup_key


def _base_item(billing: BillingWorld, subscription_id: str) -> Any:
    on_stripe = billing.stripe.v1.subscriptions.retrieve(subscription_id)
    return next(item for item in on_stripe["items"].data if item.price.lookup_key == _key(PlanCode.PRO, "base"))


def test_a_base_quantity_changed_on_stripe_is_shown_audited_and_set_back(billing: BillingWorld) -> None:
    owner, org_id = billing.new_org()
    billing.subscribe(owner, org_id, common_pb2.PLAN_PRO)
    billing.wait_settled(org_id)
    subscription_id = billing.stripe.v1.subscriptions.list({"customer": billing.customer_id(org_id)}).data[0].id
    assert not billing.subscription(owner, org_id).drift
    base = _base_item(billing, subscription_id)

    # As the Dashboard would: Stripe then sends customer.subscription.updated.
    billing.stripe.v1.subscription_items.update(base.id, {"quantity": 3})
    # The correction's Stripe call is slow, so the drift stays visible while it is made.
    control(billing.sandbox_url, "POST", "faults", {"latency": {"ms": 3000, "path_prefix": "/v1/subscription_items"}})
    try:
        shown = billing.wait_subscription(owner, org_id, lambda s: len(s.drift) > 0, timeout=30)
    finally:
        control(billing.sandbox_url, "DELETE", "faults")
    assert [(d.kind, d.subscription_item_id, d.expected_quantity, d.actual_quantity, d.correcting) for d in shown.drift] == [
        (billing_pb2.SUBSCRIPTION_DRIFT_KIND_BASE_QUANTITY, base.id, 1, 3, True)
    ]
    found = [e for e in audit_events(owner, org_id) if e.action == "subscription.drift_found"]
    assert len(found) == 1 and "base_quantity" in str(found[0].after)

    wait_for(lambda: _base_item(billing, subscription_id).quantity == 1, timeout=30, what="the base quantity set back to 1")
    billing.wait_subscription(owner, org_id, lambda s: len(s.drift) == 0, timeout=30)
    actions = [e.action for e in audit_events(owner, org_id)]
    assert "subscription.drift_corrected" in actions and "subscription.drift_resolved" in actions


def test_reconciliation_reports_item_drift_too(billing: BillingWorld) -> None:
    owner, org_id = billing.new_org()
    billing.subscribe(owner, org_id, common_pb2.PLAN_PRO)
    billing.wait_settled(org_id)
    subscription_id = billing.stripe.v1.subscriptions.list({"customer": billing.customer_id(org_id)}).data[0].id
    billing.stripe.v1.subscription_items.update(_base_item(billing, subscription_id).id, {"quantity": 2})
    # Whether or not the change's webhook was applied first, reconciliation reports it.
    drifts = seats.reconcile(database=billing.database, gateway=StripeGateway.from_settings(billing.settings))
    ours = [d for d in drifts if d.org_id == org_id]
    assert [[item.kind for item in d.items] for d in ours] == [[drift.BASE_QUANTITY]]
    assert "quantity 2" in ours[0].message
    wait_for(lambda: _base_item(billing, subscription_id).quantity == 1, timeout=30, what="the base quantity set back to 1")
    billing.wait_subscription(owner, org_id, lambda s: len(s.drift) == 0, timeout=30)

"""ChangePlan and CancelSubscription ask Stripe and return the pending change; the
webhook confirms it. Plan limits are checked before Stripe is asked."""

from __future__ import annotations

import grpc
import pytest

from billing_helpers import BillingWorld, audit_events
from nobill.v1 import billing_pb2, common_pb2
from support import code_of


def _change(owner, org_id: str, plan: int) -> billing_pb2.Subscription:  # noqa: ANN001
    return owner.billing.ChangePlan(billing_pb2.ChangePlanRequest(org_id=org_id, plan=plan)).subscription


def test_an_upgrade_is_pending_until_the_webhook_confirms_it(billing: BillingWorld) -> None:
    owner, org_id = billing.new_org()
    subscribed = billing.subscribe(owner, org_id, common_pb2.PLAN_PRO)
    pending = _change(owner, org_id, common_pb2.PLAN_ENTERPRISE)
    assert pending.pending_plan == common_pb2.PLAN_ENTERPRISE
    confirmed = billing.wait_subscription(owner, org_id, lambda s: s.plan == common_pb2.PLAN_ENTERPRISE)
    assert confirmed.pending_plan == common_pb2.PLAN_UNSPECIFIED
    on_stripe = billing.stripe_subscription(_stripe_id(billing, org_id))
    lookup_keys = {item.price.lookup_key for item in on_stripe["items"].data}
    assert "nobill_enterprise_base_monthly" in lookup_keys and "nobill_pro_seat_monthly" not in lookup_keys
    assert confirmed.current_period_end.seconds == subscribed.current_period_end.seconds
    actions = [(e.action, e.actor.type) for e in audit_events(owner, org_id)]
    assert ("subscription.plan_change_requested", common_pb2.ACTOR_TYPE_USER) in actions
    assert ("subscription.plan_changed", common_pb2.ACTOR_TYPE_STRIPE) in actions


def test_downgrading_to_starter_with_more_than_one_member_names_the_limit(billing: BillingWorld) -> None:
    owner, org_id = billing.new_org()
    billing.subscribe(owner, org_id, common_pb2.PLAN_PRO)
    billing.add_members(owner, org_id, 1)
    error = pytest.raises(grpc.RpcError, _change, owner, org_id, common_pb2.PLAN_STARTER).value
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "Starter" in error.details() and "max_members=1" in error.details()
    assert billing.subscription(owner, org_id).pending_plan == common_pb2.PLAN_UNSPECIFIED


def test_change_plan_needs_a_subscription(billing: BillingWorld) -> None:
    owner, org_id = billing.new_org()
    assert code_of(lambda: _change(owner, org_id, common_pb2.PLAN_STARTER)) == grpc.StatusCode.FAILED_PRECONDITION


def test_cancel_now_is_confirmed_by_the_webhook(billing: BillingWorld) -> None:
    owner, org_id = billing.new_org()
    billing.subscribe(owner, org_id, common_pb2.PLAN_STARTER)
    answer = owner.billing.CancelSubscription(billing_pb2.CancelSubscriptionRequest(org_id=org_id, at_period_end=False))
    assert answer.subscription.status == common_pb2.SUBSCRIPTION_STATUS_CANCELED
    billing.wait_subscription(owner, org_id, lambda s: s.status == common_pb2.SUBSCRIPTION_STATUS_CANCELED)
    assert not billing.entitlements(owner, org_id).access_allowed
    # A canceled org may subscribe again.
    again = billing.subscribe(owner, org_id, common_pb2.PLAN_PRO)
    assert again.status in (common_pb2.SUBSCRIPTION_STATUS_ACTIVE, common_pb2.SUBSCRIPTION_STATUS_INCOMPLETE)


def _stripe_id(billing: BillingWorld, org_id: str) -> str:
    from nobill.billing import accounts
    from nobill.db.unit_of_work import UnitOfWork

    with UnitOfWork(billing.database, org_id=org_id) as uow:
        subscription_id = accounts.get(uow=uow, org_id=org_id).stripe_subscription_id
    assert subscription_id
    return subscription_id

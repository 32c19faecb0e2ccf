"""CreateCheckoutSession: the right prices per plan, one live subscription per org,
plan limits, and failing fast with UNAVAILABLE (and a retry hint) while Stripe is down."""

from __future__ import annotations

import time

import grpc
import pytest

from billing_helpers import BillingWorld, control, wait_for
from nobill.billing import accounts, plans
from nobill.db.unit_of_work import UnitOfWork
from nobill.v1 import billing_pb2, common_pb2
from support import code_of


def test_several_orgs_subscribe_independently_to_each_plan(billing: BillingWorld) -> None:
    chosen = {
        common_pb2.PLAN_STARTER: plans.PlanCode.STARTER,
        common_pb2.PLAN_PRO: plans.PlanCode.PRO,
        common_pb2.PLAN_ENTERPRISE: plans.PlanCode.ENTERPRISE,
    }
    orgs = {plan: billing.new_org() for plan in chosen}
    sessions = {plan: billing.checkout(owner, org_id, plan) for plan, (owner, org_id) in orgs.items()}
    for plan, session in sessions.items():
        items = billing.stripe.v1.checkout.sessions.line_items.list(session.checkout_session_id, {"limit": 100})
        keys = sorted(item.price.lookup_key for item in items.data)
        assert keys == sorted(price.lookup_key for price in plans.details(chosen[plan]).prices)
        billing.complete_checkout(session.checkout_session_id)
    for plan, (owner, org_id) in orgs.items():
        subscription = billing.wait_subscription(owner, org_id, lambda s, p=plan: s.plan == p and s.current_period_end.seconds > 0)
        assert subscription.status == common_pb2.SUBSCRIPTION_STATUS_TRIALING  # the rest of each org's trial
        with UnitOfWork(billing.database, org_id=org_id) as uow:
            account = accounts.get(uow=uow, org_id=org_id)
        assert account.plan is chosen[plan] and account.stripe_subscription_id
        assert account.metered is (chosen[plan] is plans.PlanCode.ENTERPRISE)
        entitlements = billing.entitlements(owner, org_id)
        assert set(entitlements.features) == set(plans.details(chosen[plan]).features)
    # Each org has its own customer and subscription.
    customers = {billing.customer_id(org_id) for _owner, org_id in orgs.values()}
    assert len(customers) == 3


def test_an_org_with_a_live_subscription_must_use_change_plan(billing: BillingWorld) -> None:
    owner, org_id = billing.new_org()
    billing.subscribe(owner, org_id, common_pb2.PLAN_STARTER)
    error = pytest.raises(grpc.RpcError, billing.checkout, owner, org_id, common_pb2.PLAN_PRO).value
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "ChangePlan" in error.details()


def test_starter_checkout_with_more_than_one_member_names_the_limit(billing: BillingWorld) -> None:
    owner, org_id = billing.new_org()
    billing.add_members(owner, org_id, 1)
    error = pytest.raises(grpc.RpcError, billing.checkout, owner, org_id, common_pb2.PLAN_STARTER).value
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "max_members=1" in error.details()


def test_checkout_urls_must_be_http(billing: BillingWorld) -> None:
    owner, org_id = billing.new_org()
    request = billing_pb2.CreateCheckoutSessionRequest(
        org_id=org_id, plan=common_pb2.PLAN_PRO, success_url="javascript:alert(1)", cancel_url="https://example.com"
    )
    assert code_of(lambda: owner.billing.CreateCheckoutSession(request)) == grpc.StatusCode.INVALID_ARGUMENT


def test_checkout_fails_fast_with_unavailable_during_a_stripe_outage(billing: BillingWorld) -> None:
    owner, org_id = billing.new_org()
    billing.customer_id(org_id)
    control(billing.sandbox_url, "POST", "faults", {"outage": {"seconds": 60, "mode": "503"}})
    try:
        errors = []
        for _ in range(5):
            started = time.monotonic()
            error = pytest.raises(grpc.RpcError, billing.checkout, owner, org_id, common_pb2.PLAN_PRO).value
            errors.append((error.code(), error.details(), time.monotonic() - started))
        assert all(code == grpc.StatusCode.UNAVAILABLE for code, _details, _took in errors)
        assert all("retry in" in details for _code, details, _took in errors)
        # Past the breaker's threshold (3 in these tests) Stripe is not even asked.
        assert "circuit breaker open" not in errors[0][1]
        assert "circuit breaker open" in errors[-1][1]
    finally:
        control(billing.sandbox_url, "DELETE", "faults")
    # After the outage (and the breaker's cooldown) checkout works again.
    session = wait_for(lambda: _try_checkout(billing, owner, org_id), timeout=30, interval=0.5, what="checkout after the outage")
    assert session.checkout_session_id.startswith("cs_")
    # Memberships, reads and entitlements never needed Stripe.
    assert billing.entitlements(owner, org_id).access_allowed


def _try_checkout(billing: BillingWorld, owner, org_id: str):  # noqa: ANN001, ANN202
    try:
        return billing.checkout(owner, org_id, common_pb2.PLAN_PRO)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error
        return None


def test_a_trialing_org_checks_out_without_a_card(billing: BillingWorld) -> None:
    owner, org_id = billing.new_org()
    trial_end = billing.subscription(owner, org_id).trial_end.seconds
    session = billing.checkout(owner, org_id, common_pb2.PLAN_PRO)
    billing.complete_checkout(session.checkout_session_id, "no_payment_method")
    subscribed = billing.wait_subscription(owner, org_id, lambda s: s.current_period_end.seconds > 0)
    assert subscribed.status == common_pb2.SUBSCRIPTION_STATUS_TRIALING and subscribed.trial_end.seconds == trial_end
    assert not subscribed.has_payment_method
    assert billing.entitlements(owner, org_id).access_allowed

"""BillingService's org-scoped RPCs through the real server: each answers exactly the
roles and service scopes that hold its permission; everyone else gets PERMISSION_DENIED
(a member without it) or NOT_FOUND (no standing in the org). This server has no Stripe
key, so what needs Stripe answers UNAVAILABLE and what needs a subscription
FAILED_PRECONDITION; billing's behaviour with Stripe is in tests/billing/."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from fixtures_api import EXPECTED_PERMISSIONS, ROLES, create_org, failure, join
from nobill.v1 import billing_pb2, common_pb2
from support import Client, new_service, new_user

OK = grpc.StatusCode.OK

# name → (permission, call, what an allowed caller gets on a fresh org without Stripe)
BILLING_RPCS: dict[str, tuple[str, Callable[[Client, str], Any], grpc.StatusCode]] = {
    "GetSubscription": (
        "billing:read", lambda c, o: c.billing.GetSubscription(billing_pb2.GetSubscriptionRequest(org_id=o)), OK,
    ),
    "CreateCheckoutSession": (
        "billing:manage",
        lambda c, o: c.billing.CreateCheckoutSession(billing_pb2.CreateCheckoutSessionRequest(
            org_id=o, plan=common_pb2.PLAN_PRO, success_url="https://example.com/ok",
            cancel_url="https://example.com/cancel")),
        grpc.StatusCode.UNAVAILABLE,
    ),
    "ChangePlan": (
        "billing:manage",
        lambda c, o: c.billing.ChangePlan(billing_pb2.ChangePlanRequest(org_id=o, plan=common_pb2.PLAN_STARTER)),
        grpc.StatusCode.FAILED_PRECONDITION,
    ),
    "CancelSubscription": (
        "billing:manage",
        lambda c, o: c.billing.CancelSubscription(billing_pb2.CancelSubscriptionRequest(org_id=o)),
        grpc.StatusCode.FAILED_PRECONDITION,
    ),
    "ListInvoices": (
        "invoices:read", lambda c, o: c.billing.ListInvoices(billing_pb2.ListInvoicesRequest(org_id=o)), OK,
    ),
    "GetEntitlements": (
        "org:read", lambda c, o: c.billing.GetEntitlements(billing_pb2.GetEntitlementsRequest(org_id=o)), OK,
    ),
}


def _code(call: Callable[[], Any]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return OK


@pytest.fixture(scope="module")
def org_by_role(channel) -> tuple[str, dict[str, Client], Client]:  # noqa: ANN001
    owner = new_user(channel)
    org = create_org(owner)
    clients = {"owner": owner}
    for role in ("admin", "member", "billing_manager"):
        clients[role] = join(channel, owner, org.id, ROLES[role])[0]
    stranger = new_user(channel)
    create_org(stranger)
    return org.id, clients, stranger


@pytest.mark.parametrize("rpc", list(BILLING_RPCS))
@pytest.mark.parametrize("role", list(ROLES))
def test_a_billing_rpc_answers_exactly_the_roles_with_its_permission(org_by_role, role: str, rpc: str) -> None:  # noqa: ANN001
    org_id, clients, _ = org_by_role
    permission, call, allowed = BILLING_RPCS[rpc]
    expected = allowed if permission in EXPECTED_PERMISSIONS[role] else grpc.StatusCode.PERMISSION_DENIED
    assert _code(lambda: call(clients[role], org_id)) == expected


@pytest.mark.parametrize("rpc", list(BILLING_RPCS))
def test_a_billing_rpc_is_not_found_to_a_non_member(org_by_role, rpc: str) -> None:  # noqa: ANN001
    org_id, _, stranger = org_by_role
    _, call, _ = BILLING_RPCS[rpc]
    assert failure(lambda: call(stranger, org_id)).code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("rpc", list(BILLING_RPCS))
def test_a_billing_rpc_follows_a_services_scopes_and_orgs(channel, org_by_role, rpc: str) -> None:  # noqa: ANN001
    org_id, _, _ = org_by_role
    permission, call, allowed = BILLING_RPCS[rpc]
    scoped = new_service(channel, scopes=(permission,), orgs=(org_id,))
    unscoped = new_service(channel, scopes=("org:read",) if permission != "org:read" else (), orgs=(org_id,))
    elsewhere = new_service(channel, scopes=(permission,), orgs=("org_" + "1" * 26,))
    assert _code(lambda: call(scoped, org_id)) == allowed
    assert _code(lambda: call(unscoped, org_id)) == grpc.StatusCode.PERMISSION_DENIED
    assert _code(lambda: call(elsewhere, org_id)) == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("rpc", list(BILLING_RPCS))
def test_a_billing_rpc_validates_the_org_id(org_by_role, rpc: str) -> None:  # noqa: ANN001
    _, clients, _ = org_by_role
    _, call, _ = BILLING_RPCS[rpc]
    assert failure(lambda: call(clients["owner"], "bogus")).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_new_org_is_on_a_pro_trial_with_full_pro_entitlements(channel) -> None:  # noqa: ANN001
    owner = new_user(channel)
    org = create_org(owner)
    subscription = owner.billing.GetSubscription(billing_pb2.GetSubscriptionRequest(org_id=org.id)).subscription
    assert subscription.status == common_pb2.SUBSCRIPTION_STATUS_TRIALING and subscription.plan == common_pb2.PLAN_PRO
    assert subscription.trial_end.seconds == org.trial_end.seconds and subscription.sync_error == ""
    entitlements = owner.billing.GetEntitlements(billing_pb2.GetEntitlementsRequest(org_id=org.id))
    assert entitlements.access_allowed and "audit_log" in entitlements.features
    assert owner.billing.ListInvoices(billing_pb2.ListInvoicesRequest(org_id=org.id)).invoices == []
    too_big = billing_pb2.ListInvoicesRequest(org_id=org.id, page_size=101)
    assert failure(lambda: owner.billing.ListInvoices(too_big)).code() == grpc.StatusCode.INVALID_ARGUMENT

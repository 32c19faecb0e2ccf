"""What answers without a token (health, reflection), what answers any principal
(ListPlans), and the RPCs that are not implemented yet: UNIMPLEMENTED to an allowed
caller, PERMISSION_DENIED / NOT_FOUND to a disallowed one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from fixtures_api import EXPECTED_PERMISSIONS, ROLES, create_org, failure, join
from nobill.v1 import billing_pb2, common_pb2
from support import Client, new_service, new_user

NOBILL_SERVICES = {
    "nobill.v1.TenancyService",
    "nobill.v1.BillingService",
    "nobill.v1.AuditService",
}
# Served by the grpc.aio usage server on its own port (NOBILL_USAGE_GRPC_ADDR).
USAGE_SERVICES = {"nobill.v1.UsageService"}


# --- health and reflection ------------------------------------------------------------


@pytest.mark.parametrize("service", ["", *sorted(NOBILL_SERVICES)])
def test_health_check_answers_without_a_token(channel, service: str) -> None:
    stub = health_pb2_grpc.HealthStub(channel)

    response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)

    assert response.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("service", ["", *sorted(USAGE_SERVICES)])
def test_the_usage_servers_health_check_answers_without_a_token(usage_channel, service: str) -> None:
    stub = health_pb2_grpc.HealthStub(usage_channel)

    response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)

    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_usage_is_not_served_on_the_main_port(channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)

    error = failure(lambda: stub.Check(health_pb2.HealthCheckRequest(service="nobill.v1.UsageService"), timeout=5))

    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_the_usage_servers_reflection_lists_usage_without_a_token(usage_channel) -> None:
    response = _reflect(usage_channel, reflection_pb2.ServerReflectionRequest(list_services=""))

    names = {service.name for service in response.list_services_response.service}
    assert USAGE_SERVICES <= names and "grpc.health.v1.Health" in names
    assert not NOBILL_SERVICES & names


def test_health_check_of_an_unknown_service_is_not_found(channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)

    error = failure(lambda: stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5))

    assert error.code() == grpc.StatusCode.NOT_FOUND


def _reflect(
    channel: grpc.Channel, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
    assert len(responses) == 1
    return responses[0]


def test_reflection_lists_the_services_without_a_token(channel) -> None:
    response = _reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))

    names = {service.name for service in response.list_services_response.service}
    assert NOBILL_SERVICES <= names
    assert "grpc.health.v1.Health" in names


def test_reflection_serves_the_contract_without_a_token(channel) -> None:
    response = _reflect(
        channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol="nobill.v1.TenancyService")
    )

    files = response.file_descriptor_response.file_descriptor_proto
    assert files, response
    assert any(b"CreateOrganization" in serialized for serialized in files)


# --- ListPlans: any principal ---------------------------------------------------------


def test_list_plans_answers_a_user_and_a_service(channel) -> None:
    user = new_user(channel)
    service = new_service(channel, scopes=(), orgs=())

    for caller in (user, service):
        plans = caller.billing.ListPlans(billing_pb2.ListPlansRequest()).plans
        by_plan = {plan.plan: plan for plan in plans}
        assert set(by_plan) == {common_pb2.PLAN_STARTER, common_pb2.PLAN_PRO, common_pb2.PLAN_ENTERPRISE}
        assert len(plans) == 3
        assert by_plan[common_pb2.PLAN_STARTER].max_members == 1


def test_list_plans_needs_a_token(channel) -> None:
    code = failure(lambda: Client(channel, None).billing.ListPlans(billing_pb2.ListPlansRequest())).code()

    assert code == grpc.StatusCode.UNAUTHENTICATED


# --- IngestStripeEvent: services with the webhooks:ingest scope only ------------------


def test_ingest_stripe_event_is_for_services_with_the_scope(channel) -> None:
    request = billing_pb2.IngestStripeEventRequest(payload=b"{}", signature_header="t=1,v1=00")
    user = new_user(channel)
    unscoped = new_service(channel, scopes=("billing:manage",), orgs=("*",))
    webhooks = new_service(channel, scopes=("webhooks:ingest",), orgs=())

    assert failure(lambda: user.billing.IngestStripeEvent(request)).code() == grpc.StatusCode.PERMISSION_DENIED
    assert failure(lambda: unscoped.billing.IngestStripeEvent(request)).code() == grpc.StatusCode.PERMISSION_DENIED
    assert failure(lambda: webhooks.billing.IngestStripeEvent(request)).code() == grpc.StatusCode.UNIMPLEMENTED


# --- org-scoped RPCs that are not implemented yet -------------------------------------


UNIMPLEMENTED_RPCS: dict[str, tuple[str, Callable[[Client, str], Any]]] = {
    "GetSubscription": (
        "billing:read", lambda c, o: c.billing.GetSubscription(billing_pb2.GetSubscriptionRequest(org_id=o))),
    "CreateCheckoutSession": (
        "billing:manage",
        lambda c, o: c.billing.CreateCheckoutSession(billing_pb2.CreateCheckoutSessionRequest(
            org_id=o, plan=common_pb2.PLAN_PRO, success_url="https://example.com/ok",
            cancel_url="https://example.com/cancel")),
    ),
    "ChangePlan": (
        "billing:manage",
        lambda c, o: c.billing.ChangePlan(billing_pb2.ChangePlanRequest(org_id=o, plan=common_pb2.PLAN_STARTER)),
    ),
    "CancelSubscription": (
        "billing:manage",
        lambda c, o: c.billing.CancelSubscription(billing_pb2.CancelSubscriptionRequest(org_id=o)),
    ),
    "ListInvoices": ("invoices:read", lambda c, o: c.billing.ListInvoices(billing_pb2.ListInvoicesRequest(org_id=o))),
    "GetEntitlements": (
        "org:read", lambda c, o: c.billing.GetEntitlements(billing_pb2.GetEntitlementsRequest(org_id=o))),
}


@pytest.fixture(scope="module")
def org_by_role(channel) -> tuple[str, dict[str, Client], Client]:
    """One org with a signed-in user per role, and a stranger (these RPCs change nothing)."""
    owner = new_user(channel)
    org = create_org(owner)
    clients = {"owner": owner}
    for role in ("admin", "member", "billing_manager"):
        clients[role] = join(channel, owner, org.id, ROLES[role])[0]
    stranger = new_user(channel)
    create_org(stranger)
    return org.id, clients, stranger


@pytest.mark.parametrize("rpc", list(UNIMPLEMENTED_RPCS))
@pytest.mark.parametrize("role", list(ROLES))
def test_an_unimplemented_rpc_is_unimplemented_only_to_an_allowed_caller(org_by_role, role: str, rpc: str) -> None:
    org_id, clients, _ = org_by_role
    permission, call = UNIMPLEMENTED_RPCS[rpc]
    expected = (
        grpc.StatusCode.UNIMPLEMENTED if permission in EXPECTED_PERMISSIONS[role] else grpc.StatusCode.PERMISSION_DENIED
    )

    error = failure(lambda: call(clients[role], org_id))

    assert error.code() == expected, error.details()


@pytest.mark.parametrize("rpc", list(UNIMPLEMENTED_RPCS))
def test_an_unimplemented_rpc_is_not_found_to_a_non_member(org_by_role, rpc: str) -> None:
    org_id, _, stranger = org_by_role
    _, call = UNIMPLEMENTED_RPCS[rpc]

    error = failure(lambda: call(stranger, org_id))

    assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()


@pytest.mark.parametrize("rpc", list(UNIMPLEMENTED_RPCS))
def test_an_unimplemented_rpc_follows_a_services_scopes_and_orgs(channel, org_by_role, rpc: str) -> None:
    org_id, _, _ = org_by_role
    permission, call = UNIMPLEMENTED_RPCS[rpc]
    scoped = new_service(channel, scopes=(permission,), orgs=(org_id,))
    unscoped = new_service(channel, scopes=("org:read",) if permission != "org:read" else (), orgs=(org_id,))
    elsewhere = new_service(channel, scopes=(permission,), orgs=("org_" + "1" * 26,))

    assert failure(lambda: call(scoped, org_id)).code() == grpc.StatusCode.UNIMPLEMENTED
    assert failure(lambda: call(unscoped, org_id)).code() == grpc.StatusCode.PERMISSION_DENIED
    assert failure(lambda: call(elsewhere, org_id)).code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("rpc", list(UNIMPLEMENTED_RPCS))
def test_an_unimplemented_rpc_still_validates_the_org_id(org_by_role, rpc: str) -> None:
    _, clients, _ = org_by_role
    _, call = UNIMPLEMENTED_RPCS[rpc]

    error = failure(lambda: call(clients["owner"], "bogus"))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()

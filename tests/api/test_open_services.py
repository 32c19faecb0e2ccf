"""What answers without a token (health and reflection, on the main and the usage port),
what answers any principal (ListPlans), and IngestStripeEvent's scope. Every RPC is
implemented now; each service's tests hold its role matrix."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from fixtures_api import failure
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
    # Allowed, and refused for its content: this server has no signing secret configured.
    assert failure(lambda: webhooks.billing.IngestStripeEvent(request)).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_ingest_stripe_events_is_for_services_with_the_scope(channel) -> None:
    request = billing_pb2.IngestStripeEventsRequest(
        deliveries=[billing_pb2.StripeWebhookDelivery(payload=b"{}", signature_header="t=1,v1=00")]
    )
    user = new_user(channel)
    unscoped = new_service(channel, scopes=("billing:manage",), orgs=("*",))
    webhooks = new_service(channel, scopes=("webhooks:ingest",), orgs=())

    assert failure(lambda: user.billing.IngestStripeEvents(request)).code() == grpc.StatusCode.PERMISSION_DENIED
    assert failure(lambda: unscoped.billing.IngestStripeEvents(request)).code() == grpc.StatusCode.PERMISSION_DENIED
    # Allowed; its one delivery is rejected on its own: this server has no signing secret configured.
    [result] = webhooks.billing.IngestStripeEvents(request).results
    assert result.outcome == billing_pb2.STRIPE_DELIVERY_OUTCOME_REJECTED
    assert result.reject_reason == billing_pb2.STRIPE_DELIVERY_REJECT_REASON_NO_SIGNING_SECRET

"""Failed calls carry google.rpc.Status details (grpcio-status): ErrorInfo with a stable
reason on every error, BadRequest field violations for INVALID_ARGUMENT, RetryInfo for
UNAVAILABLE and RESOURCE_EXHAUSTED. The message text is the one clients always saw."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from fixtures_api import UNKNOWN_ORG_ID, create_org, failure
from nobill.api.status import ERROR_DOMAIN, abort_aio, status_for
from nobill.errors import InvalidArgument, ResourceExhausted, Unavailable
from nobill.v1 import tenancy_pb2
from support import Client, new_service, new_user


def _details(error: grpc.RpcError) -> dict[str, object]:
    """The status's details, unpacked, by type name."""
    status = rpc_status.from_call(error)
    assert status is not None, "no grpc-status-details-bin in the trailers"
    assert status.code == error.code().value[0] and status.message == error.details()
    unpacked: dict[str, object] = {}
    for detail in status.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, error_details_pb2.RetryInfo):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                unpacked[kind.DESCRIPTOR.name] = message
    return unpacked


def test_invalid_argument_names_the_field_in_a_bad_request_violation(channel) -> None:
    owner = new_user(channel)
    request_id = uuid.uuid4().hex
    error = failure(
        lambda: owner.tenancy.CreateOrganization(
            tenancy_pb2.CreateOrganizationRequest(name=""), metadata=(("x-request-id", request_id),)
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "name is required"
    details = _details(error)
    (violation,) = details["BadRequest"].field_violations
    assert violation.field == "name" and violation.description == "name is required"
    info = details["ErrorInfo"]
    # A stable reason that says what is wrong, not the status code again.
    assert info.reason == "FIELD_REQUIRED" and info.domain == ERROR_DOMAIN
    assert info.metadata["field"] == "name" and info.metadata["request_id"] == request_id
    assert "RetryInfo" not in details
    # The request id is still echoed next to the details.
    assert dict(error.trailing_metadata())["x-request-id"] == request_id


def test_an_invalid_org_id_is_a_violation_of_org_id(channel) -> None:
    owner = new_user(channel)
    error = failure(lambda: owner.tenancy.GetOrganization(tenancy_pb2.GetOrganizationRequest(org_id="nope")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _details(error)["BadRequest"].field_violations[0].field == "org_id"
    assert _details(error)["ErrorInfo"].reason == "FIELD_INVALID"


def test_an_org_the_caller_cannot_see_has_a_stable_reason(channel) -> None:
    owner = new_user(channel)
    error = failure(lambda: owner.tenancy.GetOrganization(tenancy_pb2.GetOrganizationRequest(org_id=UNKNOWN_ORG_ID)))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    details = _details(error)
    assert details["ErrorInfo"].reason == "ORG_NOT_FOUND" and "BadRequest" not in details


def test_a_missing_permission_is_named_in_the_error_info(channel) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    service = new_service(channel, scopes=("org:read",), orgs=(org.id,))
    error = failure(
        lambda: service.tenancy.AddMember(tenancy_pb2.AddMemberRequest(org_id=org.id, email="x@example.com", role=1))
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    info = _details(error)["ErrorInfo"]
    assert info.reason == "SCOPE_MISSING" and info.metadata["permission"] == "members:manage"


def test_a_refused_token_gets_details_and_its_request_id(channel) -> None:
    caller = Client(channel, "not-a-token")
    request_id = uuid.uuid4().hex
    error = failure(
        lambda: caller.tenancy.ListOrganizations(
            tenancy_pb2.ListOrganizationsRequest(), metadata=(("x-request-id", request_id),)
        )
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    info = _details(error)["ErrorInfo"]
    assert info.reason == "UNAUTHENTICATED" and info.metadata["request_id"] == request_id


@pytest.mark.parametrize(
    ("error", "code", "seconds"),
    [
        (Unavailable("Stripe is unavailable; retry shortly", retry_after=2.5), grpc.StatusCode.UNAVAILABLE, 2.5),
        (ResourceExhausted("too many calls; slow down"), grpc.StatusCode.RESOURCE_EXHAUSTED, 1.0),
    ],
)
def test_retryable_errors_say_when_to_retry(error, code, seconds) -> None:
    status = status_for(error, method="/nobill.v1.TenancyService/GetOrganization", request_id="r1")
    assert status.code == code and status.details == error.message
    rich = dict(status.trailing_metadata)[rpc_status.GRPC_DETAILS_METADATA_KEY]
    from google.rpc import status_pb2

    parsed = status_pb2.Status.FromString(rich)
    retry = error_details_pb2.RetryInfo()
    assert any(detail.Unpack(retry) for detail in parsed.details if detail.Is(retry.DESCRIPTOR))
    assert retry.retry_delay.ToMilliseconds() == seconds * 1000


def test_an_unexpected_error_is_internal_and_names_the_request_id_only() -> None:
    status = status_for(RuntimeError("secret detail"), method="/x.Y/Z", request_id="req-9")
    assert status.code == grpc.StatusCode.INTERNAL
    assert status.details == "internal error (request id req-9)" and status.reason == "INTERNAL"


def test_the_mapping_serves_a_grpc_aio_server_too() -> None:
    """A grpc.aio servicer ends a call with the same status and details via abort_aio."""

    async def scenario() -> grpc.RpcError:
        async def behavior(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            error = InvalidArgument("quantity must be positive", field="quantity")
            await abort_aio(context, status_for(error, method="/test.Aio/Record", request_id="aio-1"))

        handler = grpc.method_handlers_generic_handler(
            "test.Aio", {"Record": grpc.unary_unary_rpc_method_handler(behavior)}
        )
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = channel.unary_unary("/test.Aio/Record")(b"", timeout=10)
                try:
                    await call
                except grpc.aio.AioRpcError as error:
                    return error
                raise AssertionError("the call succeeded")
        finally:
            await server.stop(None)

    error = asyncio.run(scenario())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error.details() == "quantity must be positive"
    details = _details(error)
    assert details["BadRequest"].field_violations[0].field == "quantity"
    assert details["ErrorInfo"].metadata["request_id"] == "aio-1"

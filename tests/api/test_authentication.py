"""Bearer-token authentication at the gRPC edge: every NOBill RPC refuses a call without a
valid token with UNAUTHENTICATED and a message that does not say what was wrong; the
role always comes from the membership, never from the token."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import grpc
import jwt
import pytest

from fixtures_api import create_org, failure, join, unique_email
from nobill.v1 import audit_pb2, billing_pb2, common_pb2, tenancy_pb2, usage_pb2
from support import TEST_SECRET, Client, mint, new_user

SERVICE_FILES = (tenancy_pb2, billing_pb2, usage_pb2, audit_pb2)

# Every method of every NOBill service, as (path, client_streaming).
ALL_METHODS = [
    (f"/{service.full_name}/{method.name}", method.client_streaming)
    for module in SERVICE_FILES
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]

# Words that would tell an attacker which check their token failed.
REVEALING_WORDS = (
    "expire", "signature", "alg", "none", "secret", "issuer", "audience", "nbf", "kid", "claim", "base64",
)


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": "nobill",
        "aud": "nobill",
        "sub": f"user-{uuid.uuid4().hex[:12]}",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    return claims


def _b64(data: dict[str, Any] | bytes) -> str:
    raw = json.dumps(data).encode() if isinstance(data, dict) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unsigned(claims: dict[str, Any]) -> str:
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


def _with_payload_swapped(token: str, claims: dict[str, Any]) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{_b64(claims)}.{signature}"


def _header(value: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", value),)


def _hs256(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, TEST_SECRET, "HS256")


def _bad_credentials() -> dict[str, tuple[tuple[str, str], ...]]:
    valid = mint(email="someone@example.com")
    other_secret = "another-secret-that-is-long-enough-for-hs256-xyz"
    as_service = {"nobill/principal": "service", "scope": "org:read members:manage", "nobill/orgs": ["*"]}
    return {
        "no-header": (),
        "empty-header": _header(""),
        "basic-scheme": _header("Basic dXNlcjpwYXNzd29yZA=="),
        "token-scheme": _header(f"Token {valid}"),
        "jwt-without-scheme": _header(valid),
        "bearer-without-token": _header("Bearer "),
        "garbage": _header("Bearer not-a-jwt"),
        "garbage-three-segments": _header("Bearer aaa.bbb.ccc"),
        "wrong-secret": _header(f"Bearer {mint(secret=other_secret)}"),
        "expired": _header(f"Bearer {mint(now=time.time() - 7200, ttl_seconds=600)}"),
        "not-yet-valid": _header(f"Bearer {mint(now=time.time() + 3600)}"),
        "alg-none": _header(f"Bearer {_unsigned(_claims())}"),
        "alg-none-service": _header(f"Bearer {_unsigned(_claims(**as_service))}"),
        # A real signature over different claims: a user trying to become a service.
        "payload-swapped": _header(f"Bearer {_with_payload_swapped(valid, _claims(**as_service))}"),
        "wrong-issuer": _header(f"Bearer {_hs256(_claims(iss='someone-else'))}"),
        "wrong-audience": _header(f"Bearer {_hs256(_claims(aud='someone-else'))}"),
        "no-expiry": _header(f"Bearer {_hs256({k: v for k, v in _claims().items() if k != 'exp'})}"),
        "empty-subject": _header(f"Bearer {_hs256(_claims(sub=''))}"),
        "oversized": _header("Bearer " + "a" * 20_000),
    }


BAD_CREDENTIALS = _bad_credentials()


def _call(channel: grpc.Channel, path: str, streaming: bool, metadata: tuple[tuple[str, str], ...]) -> None:
    """Call any method with an empty request; raw bytes spare a stub per service."""
    identity = (lambda value: value)
    if streaming:
        method = channel.stream_stream(path, request_serializer=identity, response_deserializer=identity)
        for _ in method(iter([b""]), metadata=metadata, timeout=15):
            pass
    else:
        method = channel.unary_unary(path, request_serializer=identity, response_deserializer=identity)
        method(b"", metadata=metadata, timeout=15)


def test_every_nobill_rpc_is_covered() -> None:
    # Guards the parametrisation below against an empty or truncated method list.
    paths = {path for path, _ in ALL_METHODS}
    assert "/nobill.v1.TenancyService/CreateOrganization" in paths
    assert "/nobill.v1.AuditService/VerifyAuditChain" in paths
    assert "/nobill.v1.UsageService/StreamUsage" in paths
    assert len(paths) >= 8 + 8 + 3 + 2


@pytest.mark.parametrize(("path", "streaming"), ALL_METHODS, ids=[path for path, _ in ALL_METHODS])
def test_every_rpc_without_a_token_is_unauthenticated(channel, usage_channel, path: str, streaming: bool) -> None:
    target = usage_channel if path.startswith("/nobill.v1.UsageService/") else channel

    error = failure(lambda: _call(target, path, streaming, ()))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error.details()


@pytest.mark.parametrize(("path", "streaming"), ALL_METHODS, ids=[path for path, _ in ALL_METHODS])
def test_every_rpc_with_a_forged_token_is_unauthenticated(channel, usage_channel, path: str, streaming: bool) -> None:
    metadata = BAD_CREDENTIALS["alg-none-service"]
    target = usage_channel if path.startswith("/nobill.v1.UsageService/") else channel

    error = failure(lambda: _call(target, path, streaming, metadata))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error.details()


@pytest.mark.parametrize("case", list(BAD_CREDENTIALS))
def test_bad_credentials_are_unauthenticated_without_saying_why(channel, case: str) -> None:
    stub_client = Client(channel, None)

    error = failure(
        lambda: stub_client.tenancy.ListOrganizations(
            tenancy_pb2.ListOrganizationsRequest(), metadata=BAD_CREDENTIALS[case]
        )
    )

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    details = error.details().lower()
    for word in REVEALING_WORDS:
        assert word not in details.replace("authorization", ""), f"{word!r} in {error.details()!r}"


def test_every_refused_token_gets_the_same_message(channel) -> None:
    stub_client = Client(channel, None)
    token_cases = [
        "garbage", "garbage-three-segments", "wrong-secret", "expired", "not-yet-valid", "alg-none",
        "payload-swapped", "wrong-issuer", "wrong-audience", "no-expiry", "empty-subject",
    ]

    messages = {
        failure(
            lambda case=case: stub_client.tenancy.ListOrganizations(
                tenancy_pb2.ListOrganizationsRequest(), metadata=BAD_CREDENTIALS[case]
            )
        ).details()
        for case in token_cases
    }

    assert len(messages) == 1, messages


def test_authentication_comes_before_any_other_check(channel) -> None:
    owner = new_user(channel)
    org = create_org(owner, "Hidden Behind Auth")
    anonymous = Client(channel, None)

    real_org = failure(lambda: anonymous.tenancy.GetOrganization(tenancy_pb2.GetOrganizationRequest(org_id=org.id)))
    malformed = failure(lambda: anonymous.tenancy.GetOrganization(tenancy_pb2.GetOrganizationRequest(org_id="bogus")))
    bad_name = failure(lambda: anonymous.tenancy.CreateOrganization(tenancy_pb2.CreateOrganizationRequest(name="")))

    assert real_org.code() == malformed.code() == bad_name.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "Hidden Behind Auth" not in real_org.details()
    assert org.id not in real_org.details()


def test_a_valid_token_is_accepted(channel) -> None:
    user = new_user(channel)

    organization = create_org(user, "Authenticated Inc")

    assert organization.caller_role == common_pb2.ROLE_OWNER


def test_an_unauthenticated_create_makes_no_organization(channel) -> None:
    user = new_user(channel)
    name = f"Never Created {uuid.uuid4().hex[:8]}"
    impostor = Client(channel, _unsigned(_claims(sub=user.subject, email=user.email)))

    code = failure(lambda: impostor.tenancy.CreateOrganization(tenancy_pb2.CreateOrganizationRequest(name=name))).code()

    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert user.tenancy.ListOrganizations(tenancy_pb2.ListOrganizationsRequest()).organizations == []


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"role": "owner"}, id="role"),
        pytest.param({"roles": ["owner"], "nobill/role": "owner"}, id="roles"),
        pytest.param({"scope": "members:manage owners:manage", "nobill/orgs": ["*"]}, id="service-claims-on-a-user"),
        pytest.param({"nobill/principal": "user", "scope": "members:manage"}, id="explicit-user-with-scope"),
    ],
)
def test_the_role_comes_from_the_membership_not_the_token(channel, claims: dict[str, Any]) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    member, _ = join(channel, owner, org.id, common_pb2.ROLE_MEMBER)
    boastful = Client(channel, _hs256(_claims(sub=member.subject, email=member.email, email_verified=True, **claims)))

    permissions = boastful.tenancy.GetMyPermissions(tenancy_pb2.GetMyPermissionsRequest(org_id=org.id))
    error = failure(
        lambda: boastful.tenancy.AddMember(
            tenancy_pb2.AddMemberRequest(org_id=org.id, email=unique_email("escalated"), role=common_pb2.ROLE_OWNER)
        )
    )

    assert permissions.role == common_pb2.ROLE_MEMBER
    assert list(permissions.permissions) == ["org:read", "usage:read", "usage:write"]
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED

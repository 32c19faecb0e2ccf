"""Hostile input at the gRPC edge: duplicated credentials and requests that do not decode."""

from __future__ import annotations

import grpc
import pytest

from fixtures_api import create_org, failure
from nobill.v1 import tenancy_pb2
from support import Client, mint, new_user


def _raw_unary(channel: grpc.Channel, path: str):
    return channel.unary_unary(path, request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw)


@pytest.mark.parametrize("order", ["forged-first", "forged-last", "both-valid"])
def test_two_authorization_headers_are_refused(channel, order: str) -> None:
    user = new_user(channel)
    org = create_org(user)
    valid = f"Bearer {user.token}"
    forged = f"Bearer {mint(secret='another-secret-that-is-long-enough-for-hs256-xyz')}"
    headers = {"forged-first": (forged, valid), "forged-last": (valid, forged), "both-valid": (valid, valid)}[order]
    anonymous = Client(channel, None)

    error = failure(
        lambda: anonymous.tenancy.GetOrganization(
            tenancy_pb2.GetOrganizationRequest(org_id=org.id),
            metadata=tuple(("authorization", header) for header in headers),
        )
    )

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "exactly one" in error.details()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\x0a\x1fonly-five-bytes", id="truncated-length"),
        pytest.param(b"\x0a\x04\xff\xfe\xfd\xfc", id="invalid-utf8-string"),
        pytest.param(b"\x0a", id="truncated-tag"),
        pytest.param(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", id="bad-varint"),
    ],
)
@pytest.mark.parametrize(
    "path", ["/nobill.v1.TenancyService/GetOrganization", "/nobill.v1.TenancyService/CreateOrganization"]
)
def test_an_undecodable_request_is_invalid_argument(channel, body: bytes, path: str) -> None:
    user = new_user(channel)

    error = failure(lambda: _raw_unary(channel, path)(body, metadata=(("authorization", f"Bearer {user.token}"),), timeout=15))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert "decoded" in error.details()


def test_an_undecodable_request_without_a_token_is_unauthenticated(channel) -> None:
    error = failure(lambda: _raw_unary(channel, "/nobill.v1.TenancyService/GetOrganization")(b"\x0a\x04\xff\xfe\xfd\xfc", timeout=15))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


def test_an_undecodable_streamed_message_is_invalid_argument(channel, usage_channel) -> None:
    user = new_user(channel)
    method = usage_channel.stream_stream(
        "/nobill.v1.UsageService/StreamUsage", request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw
    )

    def call():
        for _ in method(iter([b"\x0a\x04\xff\xfe\xfd\xfc"]), metadata=(("authorization", f"Bearer {user.token}"),), timeout=15):
            pass

    error = failure(call)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()


HOSTILE_TEXT = {
    "del": "Acme\x7f",
    "c1-control": "Acme\x85Corp",
    "bidi-override": "Acme \u202eproC",
    "bidi-isolate": "Acme \u2066Corp\u2069",
    "zero-width-space": "Ac\u200bme",
    "zero-width-joiner": "Ac\u200dme",
    "word-joiner": "Ac\u2060me",
    "bom": "\ufeffAcme",
    "nul": "Acme\x00",
    "private-use": "Acme \ue000",
    "line-separator": "Acme\u2028Corp",
}


@pytest.mark.parametrize("name", list(HOSTILE_TEXT.values()), ids=list(HOSTILE_TEXT))
def test_an_org_name_with_invisible_or_control_characters_is_invalid(channel, name: str) -> None:
    user = new_user(channel)

    error = failure(lambda: user.tenancy.CreateOrganization(tenancy_pb2.CreateOrganizationRequest(name=name)))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert user.tenancy.ListOrganizations(tenancy_pb2.ListOrganizationsRequest()).organizations == []


def test_an_org_name_is_nfc_normalised_and_keeps_real_letters(channel) -> None:
    user = new_user(channel)

    created = create_org(user, "Cafe\u0301  Zoë  東京")

    assert created.name == "Caf\u00e9 Zoë 東京"


@pytest.mark.parametrize("action", list(HOSTILE_TEXT.values()), ids=list(HOSTILE_TEXT))
def test_an_audit_action_filter_with_invisible_characters_is_invalid(channel, action: str) -> None:
    from nobill.v1 import audit_pb2

    user = new_user(channel)
    org = create_org(user)

    error = failure(lambda: user.audit.ListAuditEvents(audit_pb2.ListAuditEventsRequest(org_id=org.id, actions=[action])))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT

"""An invitation (a member added by email before their first sign-in) is claimed only by
a token with a verified email that matches the invited address after the conservative
normalisation (domain lower-cased, local part kept, ASCII only); lookalikes are refused."""

from __future__ import annotations

import time
import uuid
from typing import Any

import grpc
import jwt
import pytest

from fixtures_api import create_org, failure, unique_email
from nobill.auth.authenticator import Authenticator
from nobill.auth.tokens import JwtSettings, TokenVerifier
from nobill.v1 import common_pb2, tenancy_pb2
from support import TEST_SECRET, Client, new_user


def _token(email: str, **extra: Any) -> str:
    now = int(time.time())
    claims = {"iss": "nobill", "aud": "nobill", "sub": f"user-{uuid.uuid4().hex[:12]}", "iat": now, "exp": now + 600,
              "email": email, **extra}
    return jwt.encode(claims, TEST_SECRET, "HS256")


def _invite(channel) -> tuple[Client, str, str]:
    owner = new_user(channel)
    org = create_org(owner)
    local = f"victim-{uuid.uuid4().hex[:10]}"
    owner.tenancy.AddMember(
        tenancy_pb2.AddMemberRequest(org_id=org.id, email=f"{local}@example.com", role=common_pb2.ROLE_ADMIN)
    )
    return owner, org.id, local


def _orgs(client: Client) -> list[str]:
    return [org.id for org in client.tenancy.ListOrganizations(tenancy_pb2.ListOrganizationsRequest()).organizations]


@pytest.mark.parametrize(
    ("spelling", "extra"),
    [
        pytest.param("{local}@example.com", {"email_verified": False}, id="email-verified-false"),
        pytest.param("{local}@example.com", {}, id="no-email-verified-claim"),
        pytest.param("\uff56{rest}@example.com", {"email_verified": True}, id="full-width-first-letter"),
        pytest.param("{upper}@example.com", {"email_verified": True}, id="upper-case-local-part"),
        pytest.param("{local}@example.com\u200b", {"email_verified": True}, id="zero-width-space"),
        pytest.param("{local}@ex\u0430mple.com", {"email_verified": True}, id="cyrillic-a-in-domain"),
    ],
)
def test_a_lookalike_or_unverified_email_does_not_claim_an_invitation(channel, spelling: str, extra: dict) -> None:
    owner, org_id, local = _invite(channel)
    email = spelling.format(local=local, rest=local[1:], upper=local.upper())
    attacker = Client(channel, _token(email, **extra))

    assert _orgs(attacker) == []
    error = failure(lambda: attacker.tenancy.GetOrganization(tenancy_pb2.GetOrganizationRequest(org_id=org_id)))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    # The seat is still waiting for the invited person.
    invitee = Client(channel, _token(f"{local}@example.com", email_verified=True))
    assert _orgs(invitee) == [org_id]


def test_the_verified_invited_address_claims_the_invitation(channel) -> None:
    _, org_id, local = _invite(channel)
    invitee = Client(channel, _token(f"{local}@EXAMPLE.COM", email_verified=True))

    permissions = invitee.tenancy.GetMyPermissions(tenancy_pb2.GetMyPermissionsRequest(org_id=org_id))

    assert permissions.role == common_pb2.ROLE_ADMIN


def test_signing_in_first_with_an_unverified_address_does_not_reserve_it(channel) -> None:
    local = f"victim-{uuid.uuid4().hex[:10]}"
    squatter = Client(channel, _token(f"{local}@example.com", email_verified=False))
    assert _orgs(squatter) == []  # provisioned, without the address
    owner = new_user(channel)
    org = create_org(owner)

    added = owner.tenancy.AddMember(
        tenancy_pb2.AddMemberRequest(org_id=org.id, email=f"{local}@example.com", role=common_pb2.ROLE_ADMIN)
    ).member

    assert _orgs(squatter) == []
    invitee = Client(channel, _token(f"{local}@example.com", email_verified=True))
    assert _orgs(invitee) == [org.id]
    assert added.email == f"{local}@example.com"


@pytest.mark.parametrize(
    "email",
    [
        pytest.param("\uff56ictim@example.com", id="full-width"),
        pytest.param("vi\u200bctim@example.com", id="zero-width-space"),
        pytest.param("victim@ex\u0430mple.com", id="cyrillic-a"),
    ],
)
def test_adding_a_non_ascii_lookalike_address_is_invalid(channel, email: str) -> None:
    owner = new_user(channel)
    org = create_org(owner)

    error = failure(
        lambda: owner.tenancy.AddMember(tenancy_pb2.AddMemberRequest(org_id=org.id, email=email, role=common_pb2.ROLE_MEMBER))
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_adding_a_case_variant_of_a_members_address_is_refused(channel) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    email = unique_email("person")
    owner.tenancy.AddMember(tenancy_pb2.AddMemberRequest(org_id=org.id, email=email, role=common_pb2.ROLE_MEMBER))
    local, domain = email.split("@")

    error = failure(
        lambda: owner.tenancy.AddMember(
            tenancy_pb2.AddMemberRequest(org_id=org.id, email=f"{local.upper()}@{domain}", role=common_pb2.ROLE_ADMIN)
        )
    )

    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "letter case" in error.details()


def test_an_issuer_trusted_for_emails_needs_no_email_verified_claim(database) -> None:
    verifier = TokenVerifier(JwtSettings(secret=TEST_SECRET, jwks_file=None, issuer="nobill", audience="nobill"))
    trusting = Authenticator(verifier, database, trusted_email_issuers=("nobill",))
    doubting = Authenticator(verifier, database)
    email = unique_email("trusted")

    assert trusting.authenticate(f"Bearer {_token(email)}").email == email
    assert doubting.authenticate(f"Bearer {_token(email)}").email is None

"""TenancyService organizations over the real server: CreateOrganization, GetOrganization,
ListOrganizations, and the validation of org ids shared by every org-scoped RPC."""

from __future__ import annotations

import datetime as dt
import re

import grpc
import pytest

from fixtures_api import (
    ORG_REQUESTS,
    UNKNOWN_ORG_ID,
    add_member,
    create_org,
    failure,
    join,
    pages,
    retarget_page_token,
)
from nobill.v1 import common_pb2, tenancy_pb2
from support import code_of, new_service, new_user

ORG_ID = re.compile(r"^org_[0-9A-Z]{26}$")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# --- CreateOrganization ---------------------------------------------------------------


def test_create_organization_makes_the_caller_owner_on_a_14_day_pro_trial(channel) -> None:
    owner = new_user(channel)

    before = _now()
    organization = owner.tenancy.CreateOrganization(
        tenancy_pb2.CreateOrganizationRequest(name="Acme Widgets")
    ).organization
    after = _now()

    assert ORG_ID.match(organization.id), organization.id
    assert organization.name == "Acme Widgets"
    assert organization.caller_role == common_pb2.ROLE_OWNER
    assert organization.plan == common_pb2.PLAN_PRO
    assert organization.subscription_status == common_pb2.SUBSCRIPTION_STATUS_TRIALING
    trial_end = organization.trial_end.ToDatetime(tzinfo=dt.timezone.utc)
    assert before + dt.timedelta(days=14) - dt.timedelta(seconds=5) <= trial_end
    assert trial_end <= after + dt.timedelta(days=14) + dt.timedelta(seconds=5)
    create_time = organization.create_time.ToDatetime(tzinfo=dt.timezone.utc)
    assert before - dt.timedelta(seconds=5) <= create_time <= after + dt.timedelta(seconds=5)

    permissions = owner.tenancy.GetMyPermissions(tenancy_pb2.GetMyPermissionsRequest(org_id=organization.id))
    assert permissions.role == common_pb2.ROLE_OWNER
    members = owner.tenancy.ListMembers(tenancy_pb2.ListMembersRequest(org_id=organization.id)).members
    assert [(member.email, member.role) for member in members] == [(owner.email, common_pb2.ROLE_OWNER)]


def test_get_organization_returns_what_create_returned(channel) -> None:
    owner = new_user(channel)
    created = create_org(owner, "Same Everywhere")

    fetched = owner.tenancy.GetOrganization(tenancy_pb2.GetOrganizationRequest(org_id=created.id)).organization

    assert fetched.id == created.id
    assert fetched.name == "Same Everywhere"
    assert fetched.plan == common_pb2.PLAN_PRO
    assert fetched.subscription_status == common_pb2.SUBSCRIPTION_STATUS_TRIALING
    assert fetched.caller_role == common_pb2.ROLE_OWNER
    # The database keeps microseconds; the response may not carry finer detail than that.
    assert abs(fetched.trial_end.ToMicroseconds() - created.trial_end.ToMicroseconds()) <= 1
    assert abs(fetched.create_time.ToMicroseconds() - created.create_time.ToMicroseconds()) <= 1


def test_each_organization_gets_its_own_id(channel) -> None:
    owner = new_user(channel)

    ids = {create_org(owner, "Twin").id for _ in range(3)}

    assert len(ids) == 3


def test_create_organization_trims_the_name(channel) -> None:
    owner = new_user(channel)

    organization = create_org(owner, "   Trimmed Co \t\n")

    assert organization.name == "Trimmed Co"


def test_a_name_of_exactly_200_characters_is_accepted_even_with_surrounding_spaces(channel) -> None:
    owner = new_user(channel)
    name = "n" * 200

    organization = create_org(owner, f"  {name}  ")

    assert organization.name == name


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="spaces"),
        pytest.param(" \t\n\r ", id="whitespace"),
        pytest.param("x" * 201, id="201-characters"),
        pytest.param("x" * 1_000_000, id="one-megabyte"),
        pytest.param("bad\x00name", id="nul"),
        pytest.param("bad\x07name", id="control-character"),
    ],
)
def test_create_organization_rejects_a_bad_name(channel, name: str) -> None:
    owner = new_user(channel)

    code = code_of(lambda: owner.tenancy.CreateOrganization(tenancy_pb2.CreateOrganizationRequest(name=name)))

    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert owner.tenancy.ListOrganizations(tenancy_pb2.ListOrganizationsRequest()).organizations == []


def test_a_service_cannot_create_or_list_organizations(channel) -> None:
    every_scope = ("org:read", "org:manage", "members:read", "members:manage", "owners:manage", "audit:read")
    service = new_service(channel, scopes=every_scope, orgs=("*",))

    create = failure(lambda: service.tenancy.CreateOrganization(tenancy_pb2.CreateOrganizationRequest(name="Svc Org")))
    listing = failure(lambda: service.tenancy.ListOrganizations(tenancy_pb2.ListOrganizationsRequest()))

    assert create.code() == grpc.StatusCode.PERMISSION_DENIED
    assert listing.code() == grpc.StatusCode.PERMISSION_DENIED


# --- GetOrganization: strangers and unknown orgs --------------------------------------


def test_a_stranger_gets_the_same_not_found_for_a_foreign_org_as_for_a_missing_one(channel) -> None:
    owner = new_user(channel)
    org = create_org(owner, "Secret Name Ltd")
    stranger = new_user(channel)

    foreign = failure(lambda: stranger.tenancy.GetOrganization(tenancy_pb2.GetOrganizationRequest(org_id=org.id)))
    missing = failure(
        lambda: stranger.tenancy.GetOrganization(tenancy_pb2.GetOrganizationRequest(org_id=UNKNOWN_ORG_ID))
    )

    assert foreign.code() == missing.code() == grpc.StatusCode.NOT_FOUND
    assert foreign.details().replace(org.id, "<id>") == missing.details().replace(UNKNOWN_ORG_ID, "<id>")
    assert "Secret Name" not in foreign.details()


def test_even_an_owner_gets_not_found_for_a_missing_org(channel) -> None:
    owner = new_user(channel)
    create_org(owner)

    code = code_of(lambda: owner.tenancy.GetOrganization(tenancy_pb2.GetOrganizationRequest(org_id=UNKNOWN_ORG_ID)))

    assert code == grpc.StatusCode.NOT_FOUND


BAD_ORG_IDS = [
    pytest.param("", id="empty"),
    pytest.param("bogus", id="no-prefix"),
    pytest.param("org_", id="prefix-only"),
    pytest.param("org_" + "0" * 25, id="too-short"),
    pytest.param("org_" + "0" * 27, id="too-long"),
    pytest.param("org_" + "a" * 26, id="lower-case"),
    pytest.param("usr_" + "0" * 26, id="user-id"),
    pytest.param("org_" + "0" * 26 + "\n", id="trailing-newline"),
    pytest.param("org_" + "0" * 25 + "\x00", id="nul"),
    pytest.param("org_" + "0" * 100_000, id="oversized"),
    pytest.param("' OR 1=1 --", id="sql"),
]


@pytest.mark.parametrize("org_id", BAD_ORG_IDS)
@pytest.mark.parametrize("rpc", list(ORG_REQUESTS))
def test_a_malformed_org_id_is_invalid_argument(channel, rpc: str, org_id: str) -> None:
    owner = new_user(channel)

    error = failure(lambda: ORG_REQUESTS[rpc](owner, org_id))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert "org_id" in error.details()


# --- ListOrganizations ----------------------------------------------------------------


def test_a_new_user_is_provisioned_on_the_first_call_and_belongs_nowhere(channel, superuser) -> None:
    user = new_user(channel)

    response = user.tenancy.ListOrganizations(tenancy_pb2.ListOrganizationsRequest())

    assert list(response.organizations) == []
    assert response.next_page_token == ""
    row = superuser.execute("SELECT user_id, email FROM users WHERE subject = %s", (user.subject,)).fetchone()
    assert row is not None, "the user was not provisioned"
    assert row[0].startswith("usr_")
    assert row[1] == user.email


def test_list_organizations_shows_only_the_callers_orgs_with_their_role(channel) -> None:
    user = new_user(channel)
    other = new_user(channel)
    own = create_org(user, "Mine")
    joined = create_org(other, "Theirs, shared")
    add_member(other, joined.id, common_pb2.ROLE_BILLING_MANAGER, email=user.email)
    hidden = create_org(other, "Theirs, private")

    organizations = user.tenancy.ListOrganizations(tenancy_pb2.ListOrganizationsRequest()).organizations

    roles = {organization.id: organization.caller_role for organization in organizations}
    assert roles == {own.id: common_pb2.ROLE_OWNER, joined.id: common_pb2.ROLE_BILLING_MANAGER}
    assert hidden.id not in roles
    shared = next(organization for organization in organizations if organization.id == joined.id)
    assert shared.name == "Theirs, shared"
    assert shared.plan == common_pb2.PLAN_PRO
    assert shared.subscription_status == common_pb2.SUBSCRIPTION_STATUS_TRIALING


def test_list_organizations_pages_through_every_org_without_duplicates_or_gaps(channel) -> None:
    user = new_user(channel)
    created = {create_org(user, f"Paged {index}").id for index in range(5)}

    seen = pages(
        lambda token: user.tenancy.ListOrganizations(
            tenancy_pb2.ListOrganizationsRequest(page_size=2, page_token=token)
        ),
        "organizations",
    )

    assert [len(page) for page in seen] == [2, 2, 1]
    ids = [organization.id for page in seen for organization in page]
    assert len(ids) == len(set(ids)) == 5
    assert set(ids) == created


def test_list_organizations_page_size_zero_means_the_default(channel) -> None:
    user = new_user(channel)
    created = {create_org(user).id for _ in range(3)}

    response = user.tenancy.ListOrganizations(tenancy_pb2.ListOrganizationsRequest(page_size=0))

    assert {organization.id for organization in response.organizations} == created
    assert response.next_page_token == ""


@pytest.mark.parametrize(
    "request_fields",
    [
        pytest.param({"page_size": -1}, id="negative-page-size"),
        pytest.param({"page_token": "garbage"}, id="garbage-token"),
        pytest.param({"page_token": "!!!not base64!!!"}, id="not-base64"),
        pytest.param({"page_token": "e30"}, id="empty-json-object"),
        pytest.param({"page_token": "W10"}, id="json-list"),
        pytest.param({"page_token": "x" * 5000}, id="oversized-token"),
    ],
)
def test_list_organizations_rejects_bad_paging(channel, request_fields: dict) -> None:
    user = new_user(channel)
    create_org(user)

    error = failure(lambda: user.tenancy.ListOrganizations(tenancy_pb2.ListOrganizationsRequest(**request_fields)))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()


def _second_page_token(user) -> str:
    for _ in range(3):
        create_org(user)
    token = user.tenancy.ListOrganizations(tenancy_pb2.ListOrganizationsRequest(page_size=1)).next_page_token
    assert token
    return token


def test_a_page_token_of_another_user_is_invalid_argument(channel) -> None:
    token = _second_page_token(new_user(channel))
    other = new_user(channel)
    create_org(other)

    error = failure(lambda: other.tenancy.ListOrganizations(tenancy_pb2.ListOrganizationsRequest(page_token=token)))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_list_members_page_token_is_invalid_for_list_organizations(channel) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    for _ in range(2):
        add_member(owner, org.id, common_pb2.ROLE_MEMBER)
    token = owner.tenancy.ListMembers(tenancy_pb2.ListMembersRequest(org_id=org.id, page_size=1)).next_page_token
    assert token

    error = failure(lambda: owner.tenancy.ListOrganizations(tenancy_pb2.ListOrganizationsRequest(page_token=token)))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "position",
    [
        pytest.param(12, id="number"),
        pytest.param({"org_id": "x"}, id="object"),
        pytest.param("org_\x00", id="nul"),
    ],
)
def test_a_tampered_page_token_is_invalid_argument_not_internal(channel, position) -> None:
    user = new_user(channel)
    token = retarget_page_token(_second_page_token(user), position)

    error = failure(lambda: user.tenancy.ListOrganizations(tenancy_pb2.ListOrganizationsRequest(page_token=token)))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()


def test_a_user_sees_an_org_they_were_added_to_on_their_next_list(channel) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    member, _ = join(channel, owner, org.id, common_pb2.ROLE_ADMIN)

    organizations = member.tenancy.ListOrganizations(tenancy_pb2.ListOrganizationsRequest()).organizations

    assert [(organization.id, organization.caller_role) for organization in organizations] == [
        (org.id, common_pb2.ROLE_ADMIN)
    ]

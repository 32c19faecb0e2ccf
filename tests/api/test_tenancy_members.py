"""TenancyService memberships over the real server: AddMember, UpdateMemberRole,
RemoveMember, ListMembers; the Owner rules, plan limits, email handling, invitations."""

from __future__ import annotations

import grpc
import pytest

from fixtures_api import (
    UNKNOWN_USER_ID,
    add_member,
    audit_events,
    create_org,
    failure,
    join,
    members_by_id,
    pages,
    retarget_page_token,
    unique_email,
)
from nobill.v1 import common_pb2, tenancy_pb2
from support import new_user


def _add(caller, org_id: str, email: str, role: int = common_pb2.ROLE_MEMBER):
    return caller.tenancy.AddMember(tenancy_pb2.AddMemberRequest(org_id=org_id, email=email, role=role))


def _update(caller, org_id: str, user_id: str, role: int):
    return caller.tenancy.UpdateMemberRole(
        tenancy_pb2.UpdateMemberRoleRequest(org_id=org_id, user_id=user_id, role=role)
    )


def _remove(caller, org_id: str, user_id: str):
    return caller.tenancy.RemoveMember(tenancy_pb2.RemoveMemberRequest(org_id=org_id, user_id=user_id))


def _owner_id(owner, org_id: str) -> str:
    members = owner.tenancy.ListMembers(tenancy_pb2.ListMembersRequest(org_id=org_id)).members
    return next(member.user_id for member in members if member.email == owner.email)


# --- AddMember ------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["ROLE_OWNER", "ROLE_ADMIN", "ROLE_MEMBER", "ROLE_BILLING_MANAGER"])
def test_an_owner_adds_a_member_with_any_role(channel, role: str) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    email = unique_email()

    member = _add(owner, org.id, email, common_pb2.Role.Value(role)).member

    assert member.user_id.startswith("usr_")
    assert member.email == email
    assert member.role == common_pb2.Role.Value(role)
    assert member.HasField("create_time")
    assert members_by_id(owner, org.id)[member.user_id] == common_pb2.Role.Value(role)


def test_add_member_lower_cases_the_domain_and_trims_spaces_but_keeps_the_local_part(channel) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    local = unique_email("Mixed.Case").split("@")[0]

    member = _add(owner, org.id, f"  {local}@Example.COM \t").member

    assert member.email == f"{local}@example.com"
    listed = owner.tenancy.ListMembers(tenancy_pb2.ListMembersRequest(org_id=org.id)).members
    assert f"{local}@example.com" in {entry.email for entry in listed}


@pytest.mark.parametrize("spelling", ["same", "upper", "padded"])
def test_adding_the_same_person_twice_is_already_exists(channel, spelling: str) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    email = unique_email("twice")
    first = _add(owner, org.id, email).member
    again = {"same": email, "upper": email.upper(), "padded": f"  {email}  "}[spelling]

    error = failure(lambda: _add(owner, org.id, again, common_pb2.ROLE_ADMIN))

    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert members_by_id(owner, org.id)[first.user_id] == common_pb2.ROLE_MEMBER


def test_adding_the_owner_themselves_is_already_exists(channel) -> None:
    owner = new_user(channel)
    org = create_org(owner)

    code = failure(lambda: _add(owner, org.id, owner.email.upper())).code()

    assert code == grpc.StatusCode.ALREADY_EXISTS


def test_one_person_can_be_a_member_of_several_orgs_as_one_user(channel) -> None:
    first_owner, second_owner = new_user(channel), new_user(channel)
    first, second = create_org(first_owner), create_org(second_owner)
    email = unique_email("shared")

    in_first = _add(first_owner, first.id, email).member
    local, domain = email.split("@")
    in_second = _add(second_owner, second.id, f"{local}@{domain.upper()}", common_pb2.ROLE_ADMIN).member

    assert in_first.user_id == in_second.user_id
    assert in_second.role == common_pb2.ROLE_ADMIN


@pytest.mark.parametrize(
    "email",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="spaces"),
        pytest.param("no-at-sign", id="no-at"),
        pytest.param("a@b", id="no-dot-in-domain"),
        pytest.param("a@@example.com", id="double-at"),
        pytest.param("@example.com", id="no-local-part"),
        pytest.param("someone@", id="no-domain"),
        pytest.param("some one@example.com", id="space-inside"),
        pytest.param("a..b@example.com", id="double-dot"),
        pytest.param("a@-example.com", id="domain-starts-with-hyphen"),
        pytest.param("x" * 65 + "@example.com", id="local-part-65"),
        pytest.param("a@" + "b" * 250 + ".com", id="255-characters"),
        pytest.param("x" * 100_000 + "@example.com", id="oversized"),
        pytest.param("a\x00b@example.com", id="nul"),
        pytest.param("a@example.com\nb@example.com", id="two-lines"),
    ],
)
def test_add_member_rejects_a_bad_email(channel, email: str) -> None:
    owner = new_user(channel)
    org = create_org(owner)

    error = failure(lambda: _add(owner, org.id, email))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert len(members_by_id(owner, org.id)) == 1


@pytest.mark.parametrize("role", [common_pb2.ROLE_UNSPECIFIED, 99, -1])
def test_add_member_rejects_a_missing_or_unknown_role(channel, role: int) -> None:
    owner = new_user(channel)
    org = create_org(owner)

    error = failure(lambda: _add(owner, org.id, unique_email(), role))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "role" in error.details()
    assert len(members_by_id(owner, org.id)) == 1


# --- UpdateMemberRole / RemoveMember: ids ---------------------------------------------

BAD_USER_IDS = [
    pytest.param("", id="empty"),
    pytest.param("bogus", id="no-prefix"),
    pytest.param("usr_", id="prefix-only"),
    pytest.param("usr_" + "a" * 26, id="lower-case"),
    pytest.param("org_" + "0" * 26, id="org-id"),
    pytest.param("usr_" + "0" * 26 + "\n", id="trailing-newline"),
    pytest.param("usr_" + "0" * 100_000, id="oversized"),
]


@pytest.mark.parametrize("user_id", BAD_USER_IDS)
@pytest.mark.parametrize("action", ["update", "remove"])
def test_a_malformed_user_id_is_invalid_argument(channel, action: str, user_id: str) -> None:
    owner = new_user(channel)
    org = create_org(owner)

    if action == "update":
        error = failure(lambda: _update(owner, org.id, user_id, common_pb2.ROLE_ADMIN))
    else:
        error = failure(lambda: _remove(owner, org.id, user_id))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert "user_id" in error.details()


@pytest.mark.parametrize("action", ["update", "remove"])
def test_an_unknown_user_or_a_member_of_another_org_is_not_found(channel, action: str) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    other_owner = new_user(channel)
    other_org = create_org(other_owner)
    outsider = add_member(other_owner, other_org.id, common_pb2.ROLE_MEMBER)

    for user_id in (UNKNOWN_USER_ID, outsider.user_id):
        if action == "update":
            error = failure(lambda: _update(owner, org.id, user_id, common_pb2.ROLE_ADMIN))
        else:
            error = failure(lambda: _remove(owner, org.id, user_id))
        assert error.code() == grpc.StatusCode.NOT_FOUND, user_id

    assert members_by_id(other_owner, other_org.id)[outsider.user_id] == common_pb2.ROLE_MEMBER


@pytest.mark.parametrize("role", [common_pb2.ROLE_UNSPECIFIED, 99])
def test_update_member_role_rejects_a_missing_or_unknown_role(channel, role: int) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    member = add_member(owner, org.id, common_pb2.ROLE_MEMBER)

    error = failure(lambda: _update(owner, org.id, member.user_id, role))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert members_by_id(owner, org.id)[member.user_id] == common_pb2.ROLE_MEMBER


def test_update_member_role_changes_the_role(channel) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    member = add_member(owner, org.id, common_pb2.ROLE_MEMBER)

    updated = _update(owner, org.id, member.user_id, common_pb2.ROLE_ADMIN).member

    assert (updated.user_id, updated.email, updated.role) == (member.user_id, member.email, common_pb2.ROLE_ADMIN)
    assert members_by_id(owner, org.id)[member.user_id] == common_pb2.ROLE_ADMIN


def test_remove_member_removes_only_that_member(channel) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    leaving = add_member(owner, org.id, common_pb2.ROLE_MEMBER)
    staying = add_member(owner, org.id, common_pb2.ROLE_MEMBER)

    response = _remove(owner, org.id, leaving.user_id)

    assert response == tenancy_pb2.RemoveMemberResponse()
    remaining = members_by_id(owner, org.id)
    assert leaving.user_id not in remaining
    assert staying.user_id in remaining
    assert failure(lambda: _remove(owner, org.id, leaving.user_id)).code() == grpc.StatusCode.NOT_FOUND


# --- the Owner rules ------------------------------------------------------------------


@pytest.fixture
def org_with_admin(channel):
    """(owner, admin, org_id, owner_user_id) for an org whose Admin is signed in."""
    owner = new_user(channel)
    org = create_org(owner)
    admin, _ = join(channel, owner, org.id, common_pb2.ROLE_ADMIN)
    return owner, admin, org.id, _owner_id(owner, org.id)


def test_an_admin_cannot_add_an_owner(org_with_admin) -> None:
    owner, admin, org_id, _ = org_with_admin
    email = unique_email("would-be-owner")

    error = failure(lambda: _add(admin, org_id, email, common_pb2.ROLE_OWNER))

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    listed = owner.tenancy.ListMembers(tenancy_pb2.ListMembersRequest(org_id=org_id)).members
    assert email not in {member.email for member in listed}


def test_an_admin_cannot_promote_anyone_to_owner(org_with_admin) -> None:
    owner, admin, org_id, _ = org_with_admin
    member = add_member(owner, org_id, common_pb2.ROLE_MEMBER)

    error = failure(lambda: _update(admin, org_id, member.user_id, common_pb2.ROLE_OWNER))

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert members_by_id(owner, org_id)[member.user_id] == common_pb2.ROLE_MEMBER


@pytest.mark.parametrize("new_role", [common_pb2.ROLE_ADMIN, common_pb2.ROLE_MEMBER, common_pb2.ROLE_BILLING_MANAGER])
def test_an_admin_cannot_demote_an_owner(org_with_admin, new_role: int) -> None:
    owner, admin, org_id, owner_id = org_with_admin
    # Two Owners, so the last-Owner rule cannot be what stops the admin.
    add_member(owner, org_id, common_pb2.ROLE_OWNER)

    error = failure(lambda: _update(admin, org_id, owner_id, new_role))

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert members_by_id(owner, org_id)[owner_id] == common_pb2.ROLE_OWNER


def test_an_admin_cannot_remove_an_owner(org_with_admin) -> None:
    owner, admin, org_id, owner_id = org_with_admin
    add_member(owner, org_id, common_pb2.ROLE_OWNER)

    error = failure(lambda: _remove(admin, org_id, owner_id))

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert members_by_id(owner, org_id)[owner_id] == common_pb2.ROLE_OWNER


# Not Billing Manager: its permissions are not all an Admin's (tests/api/test_role_grants.py).
@pytest.mark.parametrize("role", [common_pb2.ROLE_ADMIN, common_pb2.ROLE_MEMBER])
def test_an_admin_manages_non_owner_roles(org_with_admin, role: int) -> None:
    owner, admin, org_id, _ = org_with_admin

    other_role = common_pb2.ROLE_ADMIN if role == common_pb2.ROLE_MEMBER else common_pb2.ROLE_MEMBER

    added = _add(admin, org_id, unique_email(), role).member
    changed = _update(admin, org_id, added.user_id, other_role).member
    assert members_by_id(owner, org_id)[added.user_id] == other_role == changed.role
    _remove(admin, org_id, added.user_id)

    assert added.user_id not in members_by_id(owner, org_id)


def test_the_last_owner_cannot_be_demoted(channel) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    owner_id = _owner_id(owner, org.id)

    error = failure(lambda: _update(owner, org.id, owner_id, common_pb2.ROLE_ADMIN))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "Owner" in error.details()
    assert members_by_id(owner, org.id)[owner_id] == common_pb2.ROLE_OWNER


def test_the_last_owner_cannot_be_removed(channel) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    owner_id = _owner_id(owner, org.id)
    add_member(owner, org.id, common_pb2.ROLE_ADMIN)  # other members do not count

    error = failure(lambda: _remove(owner, org.id, owner_id))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert members_by_id(owner, org.id)[owner_id] == common_pb2.ROLE_OWNER


def test_with_two_owners_one_can_demote_the_other_but_not_the_last(channel) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    co_owner, co_owner_id = join(channel, owner, org.id, common_pb2.ROLE_OWNER)
    owner_id = _owner_id(owner, org.id)

    demoted = _update(co_owner, org.id, owner_id, common_pb2.ROLE_ADMIN).member

    assert demoted.role == common_pb2.ROLE_ADMIN
    error = failure(lambda: _update(co_owner, org.id, co_owner_id, common_pb2.ROLE_MEMBER))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert members_by_id(co_owner, org.id) == {owner_id: common_pb2.ROLE_ADMIN, co_owner_id: common_pb2.ROLE_OWNER}


def test_with_two_owners_one_can_remove_the_other(channel) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    second = add_member(owner, org.id, common_pb2.ROLE_OWNER)

    _remove(owner, org.id, second.user_id)

    assert members_by_id(owner, org.id) == {_owner_id(owner, org.id): common_pb2.ROLE_OWNER}


def test_an_owner_may_step_down_when_another_owner_remains(channel) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    add_member(owner, org.id, common_pb2.ROLE_OWNER)

    _update(owner, org.id, _owner_id(owner, org.id), common_pb2.ROLE_MEMBER)

    permissions = owner.tenancy.GetMyPermissions(tenancy_pb2.GetMyPermissionsRequest(org_id=org.id))
    assert permissions.role == common_pb2.ROLE_MEMBER


# --- plan limits ----------------------------------------------------------------------


def test_the_starter_plan_allows_a_single_user(channel, superuser) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    superuser.execute("UPDATE subscriptions SET plan = 'starter' WHERE org_id = %s", (org.id,))
    organization = owner.tenancy.GetOrganization(tenancy_pb2.GetOrganizationRequest(org_id=org.id)).organization
    assert organization.plan == common_pb2.PLAN_STARTER
    events_before = len(audit_events(owner, org.id))

    error = failure(lambda: _add(owner, org.id, unique_email("second-user")))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "Starter" in error.details()
    assert "1 member" in error.details()
    assert len(members_by_id(owner, org.id)) == 1
    assert len(audit_events(owner, org.id)) == events_before


def test_the_pro_trial_has_no_member_limit(channel) -> None:
    owner = new_user(channel)
    org = create_org(owner)

    for _ in range(4):
        add_member(owner, org.id, common_pb2.ROLE_MEMBER)

    assert len(members_by_id(owner, org.id)) == 5


# --- invitations: added by email before the first sign-in -----------------------------


def test_a_user_added_before_signing_in_is_claimed_on_their_first_call(channel) -> None:
    owner = new_user(channel)
    org = create_org(owner, "Invited Into")
    local = unique_email("invitee").split("@")[0]
    invited = _add(owner, org.id, f"{local}@example.com", common_pb2.ROLE_BILLING_MANAGER).member

    # They sign in later, the identity provider spelling the domain in capitals.
    invitee = new_user(channel, email=f"{local}@EXAMPLE.com")
    organizations = invitee.tenancy.ListOrganizations(tenancy_pb2.ListOrganizationsRequest()).organizations

    assert [(o.id, o.name, o.caller_role) for o in organizations] == [
        (org.id, "Invited Into", common_pb2.ROLE_BILLING_MANAGER)
    ]
    permissions = invitee.tenancy.GetMyPermissions(tenancy_pb2.GetMyPermissionsRequest(org_id=org.id))
    assert permissions.role == common_pb2.ROLE_BILLING_MANAGER
    assert members_by_id(owner, org.id)[invited.user_id] == common_pb2.ROLE_BILLING_MANAGER  # the same user


def test_a_different_person_does_not_inherit_an_invitation(channel) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    _add(owner, org.id, unique_email("invitee"))

    someone_else = new_user(channel)

    assert someone_else.tenancy.ListOrganizations(tenancy_pb2.ListOrganizationsRequest()).organizations == []
    error = failure(lambda: someone_else.tenancy.GetOrganization(tenancy_pb2.GetOrganizationRequest(org_id=org.id)))
    assert error.code() == grpc.StatusCode.NOT_FOUND


# --- ListMembers ----------------------------------------------------------------------


def test_list_members_pages_through_every_member_without_duplicates_or_gaps(channel) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    added = {add_member(owner, org.id, common_pb2.ROLE_MEMBER).user_id for _ in range(4)}

    seen = pages(
        lambda token: owner.tenancy.ListMembers(
            tenancy_pb2.ListMembersRequest(org_id=org.id, page_size=2, page_token=token)
        ),
        "members",
    )

    assert [len(page) for page in seen] == [2, 2, 1]
    ids = [member.user_id for page in seen for member in page]
    assert len(ids) == len(set(ids)) == 5
    assert set(ids) == added | {_owner_id(owner, org.id)}


def test_list_members_shows_only_this_orgs_members(channel) -> None:
    owner, other_owner = new_user(channel), new_user(channel)
    org, other = create_org(owner), create_org(other_owner)
    mine = add_member(owner, org.id, common_pb2.ROLE_MEMBER)
    theirs = add_member(other_owner, other.id, common_pb2.ROLE_MEMBER)

    members = members_by_id(owner, org.id)

    assert set(members) == {_owner_id(owner, org.id), mine.user_id}
    assert theirs.user_id not in members


@pytest.mark.parametrize(
    "request_fields",
    [
        pytest.param({"page_size": -1}, id="negative-page-size"),
        pytest.param({"page_size": -(2**31)}, id="most-negative-page-size"),
        pytest.param({"page_token": "garbage"}, id="garbage-token"),
        pytest.param({"page_token": "%%%%"}, id="not-base64"),
        pytest.param({"page_token": "bnVsbA"}, id="json-null"),
        pytest.param({"page_token": "x" * 5000}, id="oversized-token"),
    ],
)
def test_list_members_rejects_bad_paging(channel, request_fields: dict) -> None:
    owner = new_user(channel)
    org = create_org(owner)

    error = failure(lambda: owner.tenancy.ListMembers(tenancy_pb2.ListMembersRequest(org_id=org.id, **request_fields)))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()


def _members_page_token(owner, org_id: str) -> str:
    for _ in range(2):
        add_member(owner, org_id, common_pb2.ROLE_MEMBER)
    token = owner.tenancy.ListMembers(tenancy_pb2.ListMembersRequest(org_id=org_id, page_size=1)).next_page_token
    assert token
    return token


def test_a_page_token_from_another_org_is_invalid_argument(channel) -> None:
    owner = new_user(channel)
    first, second = create_org(owner), create_org(owner)
    token = _members_page_token(owner, first.id)

    error = failure(
        lambda: owner.tenancy.ListMembers(tenancy_pb2.ListMembersRequest(org_id=second.id, page_token=token))
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "position",
    [pytest.param(7, id="number"), pytest.param(["usr_"], id="list"), pytest.param("usr_\x00", id="nul"), pytest.param(None, id="null")],
)
def test_a_tampered_members_page_token_is_invalid_argument_not_internal(channel, position) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    token = retarget_page_token(_members_page_token(owner, org.id), position)

    error = failure(
        lambda: owner.tenancy.ListMembers(tenancy_pb2.ListMembersRequest(org_id=org.id, page_token=token))
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()


def test_an_admin_cannot_even_restate_an_owners_role(org_with_admin) -> None:
    owner, admin, org_id, owner_id = org_with_admin

    error = failure(lambda: _update(admin, org_id, owner_id, common_pb2.ROLE_OWNER))

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED

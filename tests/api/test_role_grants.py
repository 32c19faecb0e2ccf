"""The grant rule over the API: nobody grants, changes or removes a role whose
permissions are not all their own (Owners may do all). Every caller role × target role,
for AddMember, UpdateMemberRole (to and from the role) and RemoveMember."""

from __future__ import annotations

import grpc
import pytest

from fixtures_api import EXPECTED_PERMISSIONS, ROLES, add_member, audit_events, create_org, failure, join, members_by_id
from fixtures_api import unique_email
from nobill.v1 import tenancy_pb2
from support import new_user

# Written from the README's role table, not from nobill/auth/permissions.py.
def _expected_allowed(caller: str, target: str) -> bool:
    if "members:manage" not in EXPECTED_PERMISSIONS[caller]:
        return False
    return set(EXPECTED_PERMISSIONS[target]) <= set(EXPECTED_PERMISSIONS[caller])


CASES = [(caller, target) for caller in ROLES for target in ROLES]
OPERATIONS = ("add", "update_to", "update_from", "remove")


def test_the_expected_table_is_what_the_issue_states() -> None:
    allowed = {(caller, target) for caller, target in CASES if _expected_allowed(caller, target)}
    assert allowed == {
        ("owner", "owner"), ("owner", "admin"), ("owner", "member"), ("owner", "billing_manager"),
        ("admin", "admin"), ("admin", "member"),
    }


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize(("caller_role", "target_role"), CASES, ids=[f"{c}->{t}" for c, t in CASES])
def test_each_role_may_assign_only_roles_it_fully_holds(channel, caller_role: str, target_role: str, operation: str) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    add_member(owner, org.id, ROLES["owner"])  # a second Owner: the last-Owner rule stays out of the way
    caller = owner if caller_role == "owner" else join(channel, owner, org.id, ROLES[caller_role])[0]
    # Another role than the target, that the caller may hold (Member for most, Admin for Member).
    neutral = "admin" if target_role == "member" else "member"
    existing_role = target_role if operation in ("update_from", "remove") else neutral
    target = add_member(owner, org.id, ROLES[existing_role])
    members_before = members_by_id(owner, org.id)
    events_before = len(audit_events(owner, org.id))

    def call():
        if operation == "add":
            return caller.tenancy.AddMember(
                tenancy_pb2.AddMemberRequest(org_id=org.id, email=unique_email("granted"), role=ROLES[target_role])
            )
        if operation == "update_to":
            return caller.tenancy.UpdateMemberRole(
                tenancy_pb2.UpdateMemberRoleRequest(org_id=org.id, user_id=target.user_id, role=ROLES[target_role])
            )
        if operation == "update_from":
            return caller.tenancy.UpdateMemberRole(
                tenancy_pb2.UpdateMemberRoleRequest(org_id=org.id, user_id=target.user_id, role=ROLES[neutral])
            )
        return caller.tenancy.RemoveMember(tenancy_pb2.RemoveMemberRequest(org_id=org.id, user_id=target.user_id))

    # Changing a role to or from `neutral` needs the right over `neutral` too.
    allowed = _expected_allowed(caller_role, target_role) and (
        operation in ("add", "remove") or _expected_allowed(caller_role, neutral)
    )
    if allowed:
        call()
        assert len(audit_events(owner, org.id)) == events_before + 1
    else:
        error = failure(call)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()
        assert members_by_id(owner, org.id) == members_before
        assert len(audit_events(owner, org.id)) == events_before

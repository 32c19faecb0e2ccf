"""Every org-scoped Tenancy and Audit RPC against each of the four roles: allowed → the
call succeeds and does its work, denied → PERMISSION_DENIED and nothing changes."""

from __future__ import annotations

import grpc
import pytest

from fixtures_api import (
    EXPECTED_PERMISSIONS,
    ORG_REQUESTS,
    ORG_RPC_IDS,
    ORG_RPCS,
    ROLES,
    UNKNOWN_ORG_ID,
    OrgRpc,
    audit_events,
    create_org,
    failure,
    join,
    members_by_id,
    new_scene,
    unique_email,
)
from nobill.v1 import common_pb2, tenancy_pb2
from support import new_user


@pytest.mark.parametrize("rpc", ORG_RPCS, ids=ORG_RPC_IDS)
@pytest.mark.parametrize("role", list(ROLES))
def test_each_role_is_allowed_or_denied_each_rpc(channel, role: str, rpc: OrgRpc) -> None:
    scene = new_scene(channel)
    caller = scene.owner if role == "owner" else join(channel, scene.owner, scene.org_id, ROLES[role])[0]
    allowed = rpc.permission in EXPECTED_PERMISSIONS[role]
    members_before = members_by_id(scene.owner, scene.org_id)
    events_before = len(audit_events(scene.owner, scene.org_id))

    if allowed:
        rpc.check(rpc.call(caller, scene), scene)
        if rpc.mutates:
            assert len(audit_events(scene.owner, scene.org_id)) == events_before + 1
    else:
        error = failure(lambda: rpc.call(caller, scene))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()
        assert rpc.permission in error.details()
        assert members_by_id(scene.owner, scene.org_id) == members_before
        assert len(audit_events(scene.owner, scene.org_id)) == events_before


@pytest.mark.parametrize("role", list(ROLES))
def test_get_my_permissions_is_the_role_and_exactly_its_permissions(channel, role: str) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    caller = owner if role == "owner" else join(channel, owner, org.id, ROLES[role])[0]

    response = caller.tenancy.GetMyPermissions(tenancy_pb2.GetMyPermissionsRequest(org_id=org.id))

    assert response.role == ROLES[role]
    assert list(response.permissions) == list(EXPECTED_PERMISSIONS[role])  # sorted, nothing more


@pytest.mark.parametrize("role", list(ROLES))
def test_get_organization_reports_the_callers_role(channel, role: str) -> None:
    owner = new_user(channel)
    org = create_org(owner, "Role Report Inc")
    caller = owner if role == "owner" else join(channel, owner, org.id, ROLES[role])[0]

    organization = caller.tenancy.GetOrganization(tenancy_pb2.GetOrganizationRequest(org_id=org.id)).organization

    assert organization.caller_role == ROLES[role]
    assert organization.name == "Role Report Inc"


@pytest.mark.parametrize("rpc", ORG_RPCS, ids=ORG_RPC_IDS)
def test_a_non_member_gets_not_found_for_every_rpc(channel, rpc: OrgRpc) -> None:
    scene = new_scene(channel)
    stranger = new_user(channel)
    create_org(stranger)  # a member somewhere else, just not here
    members_before = members_by_id(scene.owner, scene.org_id)

    error = failure(lambda: rpc.call(stranger, scene))

    assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()
    assert members_by_id(scene.owner, scene.org_id) == members_before


def test_a_role_change_takes_effect_on_the_next_call(channel) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    admin, admin_id = join(channel, owner, org.id, common_pb2.ROLE_ADMIN)

    def add_request(email: str) -> tenancy_pb2.AddMemberRequest:
        return tenancy_pb2.AddMemberRequest(org_id=org.id, email=email, role=common_pb2.ROLE_MEMBER)

    admin.tenancy.AddMember(add_request(unique_email("while-admin")))

    owner.tenancy.UpdateMemberRole(
        tenancy_pb2.UpdateMemberRoleRequest(org_id=org.id, user_id=admin_id, role=common_pb2.ROLE_MEMBER)
    )
    refused_email = unique_email("after-demotion")
    error = failure(lambda: admin.tenancy.AddMember(add_request(refused_email)))

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    permissions = admin.tenancy.GetMyPermissions(tenancy_pb2.GetMyPermissionsRequest(org_id=org.id))
    assert permissions.role == common_pb2.ROLE_MEMBER
    listed = owner.tenancy.ListMembers(tenancy_pb2.ListMembersRequest(org_id=org.id)).members
    assert refused_email not in {member.email for member in listed}


def test_a_removed_member_loses_access_on_the_next_call(channel) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    admin, admin_id = join(channel, owner, org.id, common_pb2.ROLE_ADMIN)
    assert admin.tenancy.GetOrganization(tenancy_pb2.GetOrganizationRequest(org_id=org.id)).organization.id == org.id

    owner.tenancy.RemoveMember(tenancy_pb2.RemoveMemberRequest(org_id=org.id, user_id=admin_id))

    error = failure(lambda: admin.tenancy.GetOrganization(tenancy_pb2.GetOrganizationRequest(org_id=org.id)))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    listed = admin.tenancy.ListOrganizations(tenancy_pb2.ListOrganizationsRequest()).organizations
    assert org.id not in {organization.id for organization in listed}


@pytest.mark.parametrize("role", list(ROLES))
def test_any_role_may_create_and_list_organizations(channel, role: str) -> None:
    owner = new_user(channel)
    org = create_org(owner)
    caller = owner if role == "owner" else join(channel, owner, org.id, ROLES[role])[0]

    own = create_org(caller, f"Own org of a {role}")
    listed = caller.tenancy.ListOrganizations(tenancy_pb2.ListOrganizationsRequest()).organizations

    assert own.caller_role == common_pb2.ROLE_OWNER
    assert {organization.id: organization.caller_role for organization in listed} == {
        org.id: ROLES[role] if role != "owner" else common_pb2.ROLE_OWNER,
        own.id: common_pb2.ROLE_OWNER,
    }


@pytest.mark.parametrize("rpc", list(ORG_REQUESTS))
def test_a_foreign_org_and_a_missing_org_look_the_same(channel, rpc: str) -> None:
    owner = new_user(channel)
    org = create_org(owner, "Private Matters GmbH")
    stranger = new_user(channel)

    foreign = failure(lambda: ORG_REQUESTS[rpc](stranger, org.id))
    missing = failure(lambda: ORG_REQUESTS[rpc](stranger, UNKNOWN_ORG_ID))

    assert foreign.code() == missing.code() == grpc.StatusCode.NOT_FOUND
    assert foreign.details().replace(org.id, "<id>") == missing.details().replace(UNKNOWN_ORG_ID, "<id>")
    assert "Private Matters" not in foreign.details()

"""Service principals: a service may do exactly what its scopes name, for exactly the orgs
its token lists ("*" for any). Org not listed → NOT_FOUND; listed but scope missing →
PERMISSION_DENIED."""

from __future__ import annotations

import grpc
import pytest

from fixtures_api import (
    ALL_ORG_PERMISSIONS,
    ORG_RPC_IDS,
    ORG_RPCS,
    UNKNOWN_ORG_ID,
    OrgRpc,
    audit_events,
    create_org,
    failure,
    members_by_id,
    new_scene,
    unique_email,
)
from nobill.v1 import common_pb2, tenancy_pb2
from support import new_service, new_user


@pytest.mark.parametrize("rpc", ORG_RPCS, ids=ORG_RPC_IDS)
def test_a_service_with_the_scope_for_the_org_may_call(channel, rpc: OrgRpc) -> None:
    scene = new_scene(channel)
    service = new_service(channel, scopes=(rpc.permission, *rpc.also_needs), orgs=(scene.org_id,))

    rpc.check(rpc.call(service, scene), scene)


@pytest.mark.parametrize("rpc", ORG_RPCS, ids=ORG_RPC_IDS)
def test_a_service_with_the_scope_for_every_org_may_call(channel, rpc: OrgRpc) -> None:
    scene = new_scene(channel)
    service = new_service(channel, scopes=(rpc.permission, *rpc.also_needs), orgs=("*",))

    rpc.check(rpc.call(service, scene), scene)


@pytest.mark.parametrize("rpc", ORG_RPCS, ids=ORG_RPC_IDS)
def test_a_service_without_the_scope_is_permission_denied(channel, rpc: OrgRpc) -> None:
    scene = new_scene(channel)
    # Every other org permission, but not the one this RPC needs.
    others = tuple(permission for permission in ALL_ORG_PERMISSIONS if permission != rpc.permission)
    service = new_service(channel, scopes=others, orgs=(scene.org_id,))
    members_before = members_by_id(scene.owner, scene.org_id)

    error = failure(lambda: rpc.call(service, scene))

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()
    assert rpc.permission in error.details()
    assert members_by_id(scene.owner, scene.org_id) == members_before


@pytest.mark.parametrize("rpc", ORG_RPCS, ids=ORG_RPC_IDS)
def test_a_service_for_other_orgs_gets_not_found(channel, rpc: OrgRpc) -> None:
    scene = new_scene(channel)
    elsewhere = create_org(scene.owner)
    service = new_service(channel, scopes=ALL_ORG_PERMISSIONS, orgs=(elsewhere.id, UNKNOWN_ORG_ID))
    members_before = members_by_id(scene.owner, scene.org_id)

    error = failure(lambda: rpc.call(service, scene))

    assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()
    assert members_by_id(scene.owner, scene.org_id) == members_before


def test_a_service_with_no_orgs_gets_not_found(channel) -> None:
    scene = new_scene(channel)
    service = new_service(channel, scopes=("org:read",), orgs=())

    code = failure(
        lambda: service.tenancy.GetOrganization(tenancy_pb2.GetOrganizationRequest(org_id=scene.org_id))
    ).code()

    assert code == grpc.StatusCode.NOT_FOUND


def test_a_wildcard_service_gets_not_found_for_an_org_that_does_not_exist(channel) -> None:
    service = new_service(channel, scopes=("org:read", "members:manage"), orgs=("*",))

    get = failure(lambda: service.tenancy.GetOrganization(tenancy_pb2.GetOrganizationRequest(org_id=UNKNOWN_ORG_ID)))
    add = failure(
        lambda: service.tenancy.AddMember(
            tenancy_pb2.AddMemberRequest(org_id=UNKNOWN_ORG_ID, email=unique_email(), role=common_pb2.ROLE_MEMBER)
        )
    )

    assert get.code() == grpc.StatusCode.NOT_FOUND
    assert add.code() == grpc.StatusCode.NOT_FOUND


def test_a_wildcard_service_reaches_every_org(channel) -> None:
    first, second = new_user(channel), new_user(channel)
    orgs = [create_org(first, "First"), create_org(second, "Second")]
    service = new_service(channel, scopes=("org:read",), orgs=("*",))

    names = [
        service.tenancy.GetOrganization(tenancy_pb2.GetOrganizationRequest(org_id=org.id)).organization.name
        for org in orgs
    ]

    assert names == ["First", "Second"]


def test_a_service_sees_no_caller_role(channel) -> None:
    scene = new_scene(channel)
    service = new_service(channel, scopes=("org:read",), orgs=(scene.org_id,))

    request = tenancy_pb2.GetOrganizationRequest(org_id=scene.org_id)
    organization = service.tenancy.GetOrganization(request).organization

    assert organization.id == scene.org_id
    assert organization.caller_role == common_pb2.ROLE_UNSPECIFIED


def test_get_my_permissions_for_a_service_is_its_org_scopes_sorted(channel) -> None:
    scene = new_scene(channel)
    service = new_service(
        channel, scopes=("usage:write", "org:read", "webhooks:ingest", "made:up", "members:read"), orgs=(scene.org_id,)
    )

    response = service.tenancy.GetMyPermissions(tenancy_pb2.GetMyPermissionsRequest(org_id=scene.org_id))

    assert response.role == common_pb2.ROLE_UNSPECIFIED
    assert list(response.permissions) == ["members:read", "org:read", "usage:write"]


def test_a_service_needs_the_owners_scope_to_add_an_owner(channel) -> None:
    scene = new_scene(channel)
    email = unique_email("service-made-owner")
    plain = new_service(channel, scopes=("members:manage",), orgs=(scene.org_id,))
    # Granting the Owner role needs every permission an Owner has (the grant rule).
    trusted = new_service(channel, scopes=ALL_ORG_PERMISSIONS, orgs=(scene.org_id,))
    request = tenancy_pb2.AddMemberRequest(org_id=scene.org_id, email=email, role=common_pb2.ROLE_OWNER)

    denied = failure(lambda: plain.tenancy.AddMember(request))
    added = trusted.tenancy.AddMember(request).member

    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    assert added.role == common_pb2.ROLE_OWNER
    assert members_by_id(scene.owner, scene.org_id)[added.user_id] == common_pb2.ROLE_OWNER


def test_a_service_change_is_audited_as_the_service(channel) -> None:
    scene = new_scene(channel)
    service = new_service(channel, scopes=("members:manage", "org:read", "usage:read", "usage:write"), orgs=(scene.org_id,))
    email = unique_email("by-service")

    added = service.tenancy.AddMember(
        tenancy_pb2.AddMemberRequest(org_id=scene.org_id, email=email, role=common_pb2.ROLE_MEMBER)
    ).member

    event = audit_events(scene.owner, scene.org_id)[-1]
    assert event.action == "member.added"
    assert event.target_id == added.user_id
    assert event.actor.type == common_pb2.ACTOR_TYPE_SERVICE
    assert event.actor.id == service.subject
    assert event.actor.display_name == service.subject

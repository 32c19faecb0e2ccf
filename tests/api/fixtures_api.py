"""Helpers for the gRPC API tests: organizations with members in given roles, the
org-scoped Tenancy and Audit RPCs as a table, paging, tampering with page tokens.

Everything goes through the real server (the `channel` fixture); nothing inserts rows."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from nobill.v1 import audit_pb2, common_pb2, tenancy_pb2
from support import Client, new_user

ROLES = {
    "owner": common_pb2.ROLE_OWNER,
    "admin": common_pb2.ROLE_ADMIN,
    "member": common_pb2.ROLE_MEMBER,
    "billing_manager": common_pb2.ROLE_BILLING_MANAGER,
}

# The role → permission matrix from the issue, written out here on purpose: the tests
# must catch a wrong matrix in nobill/auth/permissions.py, not repeat it.
ALL_ORG_PERMISSIONS = (
    "audit:read",
    "billing:manage",
    "billing:read",
    "invoices:read",
    "members:manage",
    "members:read",
    "org:manage",
    "org:read",
    "owners:manage",
    "usage:read",
    "usage:write",
)
EXPECTED_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "owner": ALL_ORG_PERMISSIONS,
    "admin": ("audit:read", "members:manage", "members:read", "org:read", "usage:read", "usage:write"),
    "member": ("org:read", "usage:read", "usage:write"),
    "billing_manager": ("billing:manage", "billing:read", "invoices:read", "org:read", "usage:read"),
}


def unique_email(prefix: str = "person") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"


def failure(call: Callable[[], Any]) -> grpc.RpcError:
    """The error a call fails with (the call must fail)."""
    try:
        call()
    except grpc.RpcError as error:
        return error
    raise AssertionError("the call succeeded; expected it to fail")


def create_org(client: Client, name: str | None = None) -> tenancy_pb2.Organization:
    response = client.tenancy.CreateOrganization(
        tenancy_pb2.CreateOrganizationRequest(name=name or f"Org {uuid.uuid4().hex[:8]}")
    )
    return response.organization


def add_member(owner: Client, org_id: str, role: int, *, email: str | None = None) -> tenancy_pb2.Member:
    response = owner.tenancy.AddMember(
        tenancy_pb2.AddMemberRequest(org_id=org_id, email=email or unique_email(), role=role)
    )
    return response.member


def join(channel: grpc.Channel, owner: Client, org_id: str, role: int) -> tuple[Client, str]:
    """A new signed-in user added to the org with `role`; returns (client, user_id)."""
    client = new_user(channel)
    member = add_member(owner, org_id, role, email=client.email)
    return client, member.user_id


def members_by_id(client: Client, org_id: str) -> dict[str, int]:
    """user_id → role of every member, read through ListMembers."""
    members = all_pages(
        lambda token: client.tenancy.ListMembers(
            tenancy_pb2.ListMembersRequest(org_id=org_id, page_size=500, page_token=token)
        ),
        "members",
    )
    return {member.user_id: member.role for member in members}


def audit_events(client: Client, org_id: str, **filters: Any) -> list[audit_pb2.AuditEvent]:
    """Every audit event of the org (oldest first unless filters say otherwise)."""
    filters.setdefault("oldest_first", True)
    return all_pages(
        lambda token: client.audit.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(org_id=org_id, page_size=500, page_token=token, **filters)
        ),
        "events",
    )


def all_pages(fetch: Callable[[str], Any], field: str, *, max_pages: int = 100) -> list[Any]:
    """Follow next_page_token until it is empty; fail on a runaway loop."""
    items: list[Any] = []
    token = ""
    for _ in range(max_pages):
        response = fetch(token)
        items.extend(getattr(response, field))
        token = response.next_page_token
        if not token:
            return items
    raise AssertionError(f"pagination did not end after {max_pages} pages")


def pages(fetch: Callable[[str], Any], field: str, *, max_pages: int = 100) -> list[list[Any]]:
    """Like all_pages, but keeps the page boundaries."""
    result: list[list[Any]] = []
    token = ""
    for _ in range(max_pages):
        response = fetch(token)
        result.append(list(getattr(response, field)))
        token = response.next_page_token
        if not token:
            return result
    raise AssertionError(f"pagination did not end after {max_pages} pages")


def retarget_page_token(token: str, position: Any) -> str:
    """A real page token with its position replaced: what a curious client can do, since
    the token is only base64-encoded JSON."""
    payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    assert "p" in payload, f"unexpected page token layout: {payload!r}"
    payload["p"] = position
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


# --- the org-scoped Tenancy and Audit RPCs as a table ---------------------------------


@dataclass
class OrgScene:
    """An org with its Owner and a plain Member that mutations can act on."""

    org_id: str
    owner: Client
    target_user_id: str


def new_scene(channel: grpc.Channel) -> OrgScene:
    owner = new_user(channel)
    org = create_org(owner)
    target = add_member(owner, org.id, common_pb2.ROLE_MEMBER)
    return OrgScene(org.id, owner, target.user_id)


@dataclass(frozen=True)
class OrgRpc:
    name: str
    permission: str
    # Calls the RPC as `caller` in the scene's org.
    call: Callable[[Client, OrgScene], Any]
    # Asserts the successful response (and its effect) is right.
    check: Callable[[Any, OrgScene], None]
    mutates: bool = False
    # What else a service needs to make this call succeed: the grant rule lets a caller
    # grant, change or remove only roles whose permissions it holds.
    also_needs: tuple[str, ...] = ()


def _check_get_organization(response: Any, scene: OrgScene) -> None:
    assert response.organization.id == scene.org_id


def _add_member(caller: Client, scene: OrgScene) -> Any:
    return caller.tenancy.AddMember(
        tenancy_pb2.AddMemberRequest(org_id=scene.org_id, email=unique_email("added"), role=common_pb2.ROLE_MEMBER)
    )


def _check_add_member(response: Any, scene: OrgScene) -> None:
    assert response.member.role == common_pb2.ROLE_MEMBER
    assert members_by_id(scene.owner, scene.org_id)[response.member.user_id] == common_pb2.ROLE_MEMBER


def _update_member_role(caller: Client, scene: OrgScene) -> Any:
    return caller.tenancy.UpdateMemberRole(
        tenancy_pb2.UpdateMemberRoleRequest(
            org_id=scene.org_id, user_id=scene.target_user_id, role=common_pb2.ROLE_ADMIN
        )
    )


def _check_update_member_role(response: Any, scene: OrgScene) -> None:
    assert response.member.user_id == scene.target_user_id
    # Admin, not Billing Manager: an Admin may grant only roles whose permissions it holds.
    assert response.member.role == common_pb2.ROLE_ADMIN
    assert members_by_id(scene.owner, scene.org_id)[scene.target_user_id] == common_pb2.ROLE_ADMIN


def _remove_member(caller: Client, scene: OrgScene) -> Any:
    return caller.tenancy.RemoveMember(
        tenancy_pb2.RemoveMemberRequest(org_id=scene.org_id, user_id=scene.target_user_id)
    )


def _check_remove_member(response: Any, scene: OrgScene) -> None:
    assert scene.target_user_id not in members_by_id(scene.owner, scene.org_id)


def _check_list_members(response: Any, scene: OrgScene) -> None:
    assert scene.target_user_id in {member.user_id for member in response.members}
    assert len(response.members) >= 2


def _check_get_my_permissions(response: Any, scene: OrgScene) -> None:
    assert "org:read" in response.permissions


def _check_list_audit_events(response: Any, scene: OrgScene) -> None:
    assert response.events, "a new org has at least its creation events"
    assert {event.org_id for event in response.events} == {scene.org_id}


def _check_verify_audit_chain(response: Any, scene: OrgScene) -> None:
    assert response.valid is True
    assert response.events_checked >= 3  # org created, trial started, member added


MEMBER_ROLE = EXPECTED_PERMISSIONS["member"]

ORG_RPCS: tuple[OrgRpc, ...] = (
    OrgRpc(
        "GetOrganization",
        "org:read",
        lambda caller, scene: caller.tenancy.GetOrganization(tenancy_pb2.GetOrganizationRequest(org_id=scene.org_id)),
        _check_get_organization,
    ),
    OrgRpc("AddMember", "members:manage", _add_member, _check_add_member, mutates=True, also_needs=MEMBER_ROLE),
    OrgRpc(
        "UpdateMemberRole", "members:manage", _update_member_role, _check_update_member_role, mutates=True,
        also_needs=EXPECTED_PERMISSIONS["admin"],
    ),
    OrgRpc("RemoveMember", "members:manage", _remove_member, _check_remove_member, mutates=True, also_needs=MEMBER_ROLE),
    OrgRpc(
        "ListMembers",
        "members:read",
        lambda caller, scene: caller.tenancy.ListMembers(tenancy_pb2.ListMembersRequest(org_id=scene.org_id)),
        _check_list_members,
    ),
    OrgRpc(
        "GetMyPermissions",
        "org:read",
        lambda caller, scene: caller.tenancy.GetMyPermissions(tenancy_pb2.GetMyPermissionsRequest(org_id=scene.org_id)),
        _check_get_my_permissions,
    ),
    OrgRpc(
        "ListAuditEvents",
        "audit:read",
        lambda caller, scene: caller.audit.ListAuditEvents(audit_pb2.ListAuditEventsRequest(org_id=scene.org_id)),
        _check_list_audit_events,
    ),
    OrgRpc(
        "VerifyAuditChain",
        "audit:read",
        lambda caller, scene: caller.audit.VerifyAuditChain(audit_pb2.VerifyAuditChainRequest(org_id=scene.org_id)),
        _check_verify_audit_chain,
    ),
)
ORG_RPC_IDS = [rpc.name for rpc in ORG_RPCS]

# Well-formed ids that no org or user has.
UNKNOWN_ORG_ID = "org_" + "0" * 26
UNKNOWN_USER_ID = "usr_" + "0" * 26

# Requests of every org-scoped Tenancy/Audit RPC with a given org_id (for id validation).
ORG_REQUESTS: dict[str, Callable[[Client, str], Any]] = {
    "GetOrganization": lambda c, org_id: c.tenancy.GetOrganization(tenancy_pb2.GetOrganizationRequest(org_id=org_id)),
    "AddMember": lambda c, org_id: c.tenancy.AddMember(
        tenancy_pb2.AddMemberRequest(org_id=org_id, email=unique_email(), role=common_pb2.ROLE_MEMBER)
    ),
    "UpdateMemberRole": lambda c, org_id: c.tenancy.UpdateMemberRole(
        tenancy_pb2.UpdateMemberRoleRequest(
            org_id=org_id, user_id=UNKNOWN_USER_ID, role=common_pb2.ROLE_MEMBER
        )
    ),
    "RemoveMember": lambda c, org_id: c.tenancy.RemoveMember(
        tenancy_pb2.RemoveMemberRequest(org_id=org_id, user_id=UNKNOWN_USER_ID)
    ),
    "ListMembers": lambda c, org_id: c.tenancy.ListMembers(tenancy_pb2.ListMembersRequest(org_id=org_id)),
    "GetMyPermissions": lambda c, org_id: c.tenancy.GetMyPermissions(
        tenancy_pb2.GetMyPermissionsRequest(org_id=org_id)
    ),
    "ListAuditEvents": lambda c, org_id: c.audit.ListAuditEvents(audit_pb2.ListAuditEventsRequest(org_id=org_id)),
    "VerifyAuditChain": lambda c, org_id: c.audit.VerifyAuditChain(audit_pb2.VerifyAuditChainRequest(org_id=org_id)),
}

"""The role → permission matrix and service principals' scopes."""

from __future__ import annotations

import pytest

from nobill.auth.permissions import ORG_PERMISSIONS, Role, may_assign, permissions_of
from nobill.auth.principals import service_from_claims

MATRIX = {
    Role.OWNER: ORG_PERMISSIONS,
    Role.ADMIN: {"org:read", "members:read", "members:manage", "usage:read", "usage:write", "audit:read"},
    Role.MEMBER: {"org:read", "usage:read", "usage:write"},
    Role.BILLING_MANAGER: {"org:read", "billing:read", "billing:manage", "invoices:read", "usage:read"},
}


@pytest.mark.parametrize("role", list(Role))
def test_role_permissions_match_the_documented_matrix(role: Role) -> None:
    assert permissions_of(role) == MATRIX[role]


def test_every_role_can_read_the_org() -> None:
    assert all("org:read" in permissions_of(role) for role in Role)


def test_only_owners_may_manage_owners() -> None:
    assert [role for role in Role if "owners:manage" in permissions_of(role)] == [Role.OWNER]


def test_a_service_gets_exactly_its_scopes_for_exactly_its_orgs() -> None:
    service = service_from_claims(
        {"sub": "usage-ingest", "scope": "usage:write webhooks:ingest bogus", "nobill/orgs": ["org_a"]}
    )
    assert service.org_permissions("org_a") == {"usage:write"}
    assert service.org_permissions("org_b") == frozenset()
    assert service.scopes >= {"webhooks:ingest"}


def test_a_wildcard_service_may_act_for_any_org() -> None:
    service = service_from_claims({"sub": "s", "scope": "org:read", "nobill/orgs": ["*"]})
    assert service.may_act_for("org_anything") and service.org_permissions("org_x") == {"org:read"}


def test_a_service_with_no_org_list_acts_for_none() -> None:
    service = service_from_claims({"sub": "s", "scope": "org:read"})
    assert not service.may_act_for("org_a")


# The grant rule, written out: which roles' permissions each role holds in full. (The
# RPCs also need members:manage, so over the API only Owners and Admins assign roles.)
MAY_ASSIGN = {
    Role.OWNER: {Role.OWNER, Role.ADMIN, Role.MEMBER, Role.BILLING_MANAGER},
    Role.ADMIN: {Role.ADMIN, Role.MEMBER},
    Role.MEMBER: {Role.MEMBER},
    Role.BILLING_MANAGER: {Role.BILLING_MANAGER},  # not Member: it lacks usage:write
}


@pytest.mark.parametrize("actor", list(Role))
@pytest.mark.parametrize("target", list(Role))
def test_a_role_may_assign_exactly_the_roles_whose_permissions_it_holds(actor: Role, target: Role) -> None:
    assert may_assign(permissions_of(actor), target) is (target in MAY_ASSIGN[actor])


def test_a_service_may_assign_a_role_only_with_all_of_its_permissions() -> None:
    assert not may_assign(frozenset({"members:manage"}), Role.MEMBER)
    assert may_assign(frozenset({"members:manage", "org:read", "usage:read", "usage:write"}), Role.MEMBER)

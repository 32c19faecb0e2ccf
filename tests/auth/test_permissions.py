"""The role → permission matrix and service principals' scopes."""

from __future__ import annotations

import pytest

from nobill.auth.permissions import ORG_PERMISSIONS, Role, permissions_of
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

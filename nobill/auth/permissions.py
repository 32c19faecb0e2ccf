"""Roles and the permissions they grant. The role comes from the org's membership row,
never from a token, so a role change takes effect on the caller's next call."""

from __future__ import annotations

import enum


class Role(str, enum.Enum):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    BILLING_MANAGER = "billing_manager"


# Permissions a role can hold inside one org. `owners:manage` is the right to grant,
# change or remove the Owner role: only Owners hold it, so an Admin cannot touch Owners.
ORG_PERMISSIONS = frozenset(
    {
        "org:read",
        "org:manage",
        "members:read",
        "members:manage",
        "owners:manage",
        "billing:read",
        "billing:manage",
        "invoices:read",
        "usage:read",
        "usage:write",
        "audit:read",
    }
)

# Scopes that only service principals hold and that act on no single org.
SERVICE_SCOPES = frozenset({"webhooks:ingest"})

ROLE_PERMISSIONS: dict[Role, frozenset[str]] = {
    Role.OWNER: ORG_PERMISSIONS,
    Role.ADMIN: frozenset({"org:read", "members:read", "members:manage", "usage:read", "usage:write", "audit:read"}),
    Role.MEMBER: frozenset({"org:read", "usage:read", "usage:write"}),
    Role.BILLING_MANAGER: frozenset({"org:read", "billing:read", "billing:manage", "invoices:read", "usage:read"}),
}


def permissions_of(role: Role) -> frozenset[str]:
    return ROLE_PERMISSIONS[role]


# The grant rule: nobody grants, changes or removes a role whose permissions are not all
# their own (an Owner holds every permission, so Owners may do all). Holding
# `members:manage` alone does not let an Admin hand out `billing:manage`.
def may_assign(actor_permissions: frozenset[str], role: Role) -> bool:
    """True if a caller holding `actor_permissions` may grant, change or remove `role`."""
    return ROLE_PERMISSIONS[role] <= actor_permissions


def missing_to_assign(actor_permissions: frozenset[str], role: Role) -> frozenset[str]:
    """The permissions of `role` the caller lacks (empty when may_assign holds)."""
    return ROLE_PERMISSIONS[role] - actor_permissions


def changes_state(permission: str) -> bool:
    """True for permissions that let a call change something (`*:manage`, `*:write`);
    `*:read` calls only read."""
    return not permission.endswith(":read")

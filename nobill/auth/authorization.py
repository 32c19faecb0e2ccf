"""What a principal may do in one org: users through their membership role, services
through their scopes and org list."""

from __future__ import annotations

from dataclasses import dataclass

from nobill.auth.permissions import Role, permissions_of
from nobill.auth.principals import Principal, ServicePrincipal
from nobill.db.unit_of_work import UnitOfWork
from nobill.tenancy import service as tenancy


@dataclass(frozen=True)
class Grant:
    """The caller's standing in one org."""

    role: Role | None  # None for services
    permissions: frozenset[str]


def grant_in_org(*, uow: UnitOfWork, principal: Principal) -> Grant | None:
    """The caller's grant in the org `uow` is bound to; None if they have no standing there
    (not a member, or a service whose token does not list the org)."""
    if isinstance(principal, ServicePrincipal):
        if not principal.may_act_for(uow.org_id or ""):
            return None
        return Grant(None, principal.org_permissions(uow.org_id or ""))
    # The interceptor asks the unit of work to read the role along with BEGIN.
    if uow.member_of_org == principal.user_id:
        role = Role(uow.member_role) if uow.member_role else None
    else:
        role = tenancy.role_of(uow=uow, user_id=principal.user_id)
    if role is None:
        return None
    return Grant(role, permissions_of(role))

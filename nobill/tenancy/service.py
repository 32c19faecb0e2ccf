"""Organizations, users and memberships."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Text, bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from nobill import ids, pagination
from nobill.audit import service as audit
from nobill.audit.actors import AuditContext
from nobill.auth.permissions import Role
from nobill.billing import plans
from nobill.billing import service as billing
from nobill.billing import subscriptions as billing_subscriptions
from nobill.billing.tables import subscriptions
from nobill.db.compiled import CompiledQuery
from nobill.db.unit_of_work import UnitOfWork
from nobill.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from nobill.tenancy import emails
from nobill.tenancy.tables import memberships, organizations, users

MAX_NAME_LENGTH = 200


@dataclass(frozen=True)
class Organization:
    org_id: str
    name: str
    plan: plans.PlanCode
    status: plans.SubscriptionStatus
    trial_end: dt.datetime | None
    created_at: dt.datetime
    caller_role: Role | None = None


@dataclass(frozen=True)
class Member:
    user_id: str
    email: str | None
    role: Role
    created_at: dt.datetime


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _clean_name(name: str) -> str:
    cleaned = " ".join(name.split())
    if not cleaned:
        raise InvalidArgument("name is required", field="name")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise InvalidArgument(f"name must be at most {MAX_NAME_LENGTH} characters", field="name")
    if any(ord(char) < 32 for char in cleaned):
        raise InvalidArgument("name must not contain control characters", field="name")
    return cleaned


# --- users -------------------------------------------------------------------------


def provision_user(*, uow: UnitOfWork, subject: str, email: str | None) -> str:
    """The user id for an identity-provider subject, creating the user on first sight.
    Someone invited by email before their first sign-in is claimed by that email."""
    email = emails.normalize_or_none(email)
    for _ in range(3):  # concurrent first calls race on the unique constraints
        found = uow.execute(select(users.c.user_id).where(users.c.subject == subject)).scalar_one_or_none()
        if found:
            return found
        if email:
            claimed = uow.execute(
                update(users)
                .where(users.c.email == email, users.c.subject.is_(None))
                .values(subject=subject)
                .returning(users.c.user_id)
            ).scalar_one_or_none()
            if claimed:
                return claimed
            email_taken = uow.execute(select(users.c.user_id).where(users.c.email == email)).first() is not None
        else:
            email_taken = False
        # NOTE: an email already bound to another subject stays with that user; the new
        # identity gets no email rather than a way into someone else's memberships.
        created = uow.execute(
            pg_insert(users)
            .values(user_id=ids.new_id("usr"), subject=subject, email=None if email_taken else email, created_at=_now())
            .on_conflict_do_nothing()
            .returning(users.c.user_id)
        ).scalar_one_or_none()
        if created:
            return created
    raise FailedPrecondition("could not provision the user; retry")


def _user_for_email(uow: UnitOfWork, email: str) -> str:
    """The id of the user with this email, creating an invited (not yet signed-in) user."""
    existing = uow.execute(select(users.c.user_id).where(users.c.email == email)).scalar_one_or_none()
    if existing:
        return existing
    uow.execute(
        pg_insert(users)
        .values(user_id=ids.new_id("usr"), subject=None, email=email, created_at=_now())
        .on_conflict_do_nothing()
    )
    return uow.execute(select(users.c.user_id).where(users.c.email == email)).scalar_one()


# --- organizations -----------------------------------------------------------------


def create(*, uow: UnitOfWork, context: AuditContext, owner_user_id: str, name: str) -> Organization:
    """A new org (uow must be bound to a fresh org id) with the caller as Owner, on a Pro trial."""
    org_id = uow.org_id
    assert org_id and ids.is_valid("org", org_id)
    name = _clean_name(name)
    now = _now()
    uow.execute(insert(organizations).values(org_id=org_id, name=name, created_at=now, created_by=owner_user_id))
    uow.execute(
        insert(memberships).values(org_id=org_id, user_id=owner_user_id, role=Role.OWNER.value, created_at=now)
    )
    audit.start_chain(uow=uow, org_id=org_id)
    audit.record(
        uow=uow,
        context=context,
        action="organization.created",
        target_type="organization",
        target_id=org_id,
        after={"name": name, "owner_user_id": owner_user_id},
    )
    # Billing owns the subscription: it starts the trial and queues the Stripe customer.
    trial = billing_subscriptions.start_trial(uow=uow, org_id=org_id, context=context, org_name=name)
    return Organization(org_id, name, trial.plan, trial.status, trial.trial_end, now, Role.OWNER)


def _organization_query():
    return select(
        organizations.c.org_id,
        organizations.c.name,
        organizations.c.created_at,
        subscriptions.c.plan,
        subscriptions.c.status,
        subscriptions.c.trial_end,
    ).join(subscriptions, subscriptions.c.org_id == organizations.c.org_id)


def _organization_from_row(row, caller_role: Role | None) -> Organization:  # noqa: ANN001
    return Organization(
        org_id=row.org_id,
        name=row.name,
        plan=plans.PlanCode(row.plan),
        status=plans.SubscriptionStatus(row.status),
        trial_end=row.trial_end if row.status == plans.SubscriptionStatus.TRIALING.value else None,
        created_at=row.created_at,
        caller_role=caller_role,
    )


# Built once: these run on nearly every call.
_GET_ORGANIZATION = CompiledQuery(_organization_query().where(organizations.c.org_id == bindparam("org_id", type_=Text)))
_ROLE_OF = select(memberships.c.role).where(memberships.c.user_id == bindparam("user_id"))


def get(*, uow: UnitOfWork, caller_role: Role | None = None) -> Organization:
    """The org the unit of work is bound to."""
    row = uow.fetch_one(_GET_ORGANIZATION, {"org_id": uow.org_id})
    if row is None:
        raise NotFound("organization not found")
    return _organization_from_row(row, caller_role)


def list_for_user(*, uow: UnitOfWork, page_size: int, page_token: str) -> tuple[list[Organization], str]:
    """The orgs of the user the unit of work is bound to, ordered by id."""
    statement = (
        _organization_query()
        .add_columns(memberships.c.role)
        .join(memberships, memberships.c.org_id == organizations.c.org_id)
        .where(memberships.c.user_id == uow.user_id)
    )
    rows, next_token = pagination.fetch_page(
        uow, statement, key=organizations.c.org_id, key_type=str, page_size=page_size, page_token=page_token,
        query=pagination.fingerprint("organizations", uow.user_id),
    )
    return [_organization_from_row(row, Role(row.role)) for row in rows], next_token


# --- memberships -------------------------------------------------------------------


def role_of(*, uow: UnitOfWork, user_id: str) -> Role | None:
    """The user's role in the bound org, or None if they are not a member."""
    role = uow.execute(_ROLE_OF, {"user_id": user_id}).scalar_one_or_none()
    return Role(role) if role else None


def _lock_membership_changes(uow: UnitOfWork) -> plans.PlanCode:
    """Serialise membership changes of the org (plan limits, last-Owner rule); returns its plan."""
    plan = uow.execute(
        select(subscriptions.c.plan).where(subscriptions.c.org_id == uow.org_id).with_for_update()
    ).scalar_one_or_none()
    if plan is None:
        raise NotFound("organization not found")
    return plans.PlanCode(plan)


def _bound_org(uow: UnitOfWork) -> str:
    assert uow.org_id, "membership changes run in a unit of work bound to the org"
    return uow.org_id


def _require_owner_rights(actor_permissions: frozenset[str]) -> None:
    if "owners:manage" not in actor_permissions:
        raise PermissionDenied("only an Owner can grant, change or remove the Owner role")


def _member(uow: UnitOfWork, user_id: str) -> Member:
    if not ids.is_valid("usr", user_id):
        raise InvalidArgument("user_id is not a valid user id (usr_...)", field="user_id")
    row = uow.execute(
        select(memberships.c.user_id, memberships.c.role, memberships.c.created_at, users.c.email)
        .join(users, users.c.user_id == memberships.c.user_id)
        .where(memberships.c.user_id == user_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"user {user_id} is not a member of this organization")
    return Member(row.user_id, row.email, Role(row.role), row.created_at)


def _owner_count(uow: UnitOfWork) -> int:
    return uow.execute(
        select(func.count()).select_from(memberships).where(memberships.c.role == Role.OWNER.value)
    ).scalar_one()


def add_member(
    *, uow: UnitOfWork, context: AuditContext, actor_permissions: frozenset[str], email: str, role: Role
) -> Member:
    """Add the user with `email` (created if unknown) to the bound org with `role`."""
    email = emails.normalize(email)
    if role is Role.OWNER:
        _require_owner_rights(actor_permissions)
    plan = plans.details(_lock_membership_changes(uow))
    user_id = _user_for_email(uow, email)
    if role_of(uow=uow, user_id=user_id) is not None:
        raise AlreadyExists(f"{email} is already a member of this organization")
    if plan.max_members:
        count = uow.execute(select(func.count()).select_from(memberships)).scalar_one()
        if count >= plan.max_members:
            raise FailedPrecondition(
                f"the {plan.display_name} plan allows {plan.max_members} member"
                f"{'s' if plan.max_members != 1 else ''}; change to the Pro plan to add more"
            )
    now = _now()
    uow.execute(insert(memberships).values(org_id=uow.org_id, user_id=user_id, role=role.value, created_at=now))
    audit.record(
        uow=uow,
        context=context,
        action="member.added",
        target_type="member",
        target_id=user_id,
        after={"email": email, "role": role.value},
    )
    billing.request_seat_sync(uow=uow, org_id=_bound_org(uow), context=context)
    return Member(user_id, email, role, now)


def update_member_role(
    *, uow: UnitOfWork, context: AuditContext, actor_permissions: frozenset[str], user_id: str, role: Role
) -> Member:
    """Change a member's role; the org always keeps at least one Owner."""
    _lock_membership_changes(uow)
    member = _member(uow, user_id)
    if Role.OWNER in (member.role, role):
        _require_owner_rights(actor_permissions)
    if member.role is role:
        return member
    if member.role is Role.OWNER and _owner_count(uow) <= 1:
        raise FailedPrecondition("an organization must keep at least one Owner; make someone else Owner first")
    uow.execute(update(memberships).where(memberships.c.user_id == user_id).values(role=role.value))
    audit.record(
        uow=uow,
        context=context,
        action="member.role_changed",
        target_type="member",
        target_id=user_id,
        before={"role": member.role.value},
        after={"role": role.value},
    )
    return Member(member.user_id, member.email, role, member.created_at)


def remove_member(*, uow: UnitOfWork, context: AuditContext, actor_permissions: frozenset[str], user_id: str) -> None:
    """Remove a member; the last Owner cannot be removed."""
    _lock_membership_changes(uow)
    member = _member(uow, user_id)
    if member.role is Role.OWNER:
        _require_owner_rights(actor_permissions)
        if _owner_count(uow) <= 1:
            raise FailedPrecondition("an organization must keep at least one Owner; make someone else Owner first")
    uow.execute(memberships.delete().where(memberships.c.user_id == user_id))
    audit.record(
        uow=uow,
        context=context,
        action="member.removed",
        target_type="member",
        target_id=user_id,
        before={"email": member.email, "role": member.role.value},
    )
    billing.request_seat_sync(uow=uow, org_id=_bound_org(uow), context=context)


def list_members(*, uow: UnitOfWork, page_size: int, page_token: str) -> tuple[list[Member], str]:
    """Members of the bound org, ordered by user id."""
    statement = select(memberships.c.user_id, memberships.c.role, memberships.c.created_at, users.c.email).join(
        users, users.c.user_id == memberships.c.user_id
    )
    rows, next_token = pagination.fetch_page(
        uow, statement, key=memberships.c.user_id, key_type=str, page_size=page_size, page_token=page_token,
        query=pagination.fingerprint("members", uow.org_id),
    )
    return [Member(r.user_id, r.email, Role(r.role), r.created_at) for r in rows], next_token

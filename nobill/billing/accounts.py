"""An org's billing account as other domains need it (usage reporting, entitlements):
its Stripe customer and its current subscription. Stable interface; read-only."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Text, bindparam, select

from nobill.billing.plans import PlanCode, SubscriptionStatus
from nobill.billing.tables import stripe_customer_routes, stripe_customers, subscriptions
from nobill.db.compiled import CompiledQuery
from nobill.db.unit_of_work import UnitOfWork
from nobill.errors import NotFound


@dataclass(frozen=True)
class BillingAccount:
    org_id: str
    stripe_customer_id: str | None  # None until the outbox has created the customer
    stripe_subscription_id: str | None  # None while on the local trial (no checkout yet)
    plan: PlanCode
    status: SubscriptionStatus
    current_period_start: dt.datetime | None
    current_period_end: dt.datetime | None
    metered: bool  # the Stripe subscription has metered prices (usage is billed)


# Read on every usage batch: compiled once (see nobill.db.compiled).
_ACCOUNT = CompiledQuery(
    select(
        subscriptions.c.plan,
        subscriptions.c.status,
        subscriptions.c.stripe_subscription_id,
        subscriptions.c.current_period_start,
        subscriptions.c.current_period_end,
        subscriptions.c.metered,
        stripe_customers.c.stripe_customer_id,
    )
    .select_from(subscriptions)
    .outerjoin(stripe_customers, stripe_customers.c.org_id == subscriptions.c.org_id)
    .where(subscriptions.c.org_id == bindparam("org_id", type_=Text))
)


def get(*, uow: UnitOfWork, org_id: str) -> BillingAccount:
    """The billing account of `org_id` (the unit of work must be bound to it)."""
    assert uow.org_id == org_id, "the unit of work must be bound to the org"
    row = uow.fetch_one(_ACCOUNT, {"org_id": org_id})
    if row is None:
        raise NotFound("organization not found")
    return BillingAccount(
        org_id=org_id,
        stripe_customer_id=row.stripe_customer_id,
        stripe_subscription_id=row.stripe_subscription_id,
        plan=PlanCode(row.plan),
        status=SubscriptionStatus(row.status),
        current_period_start=row.current_period_start,
        current_period_end=row.current_period_end,
        metered=row.metered,
    )


def stripe_customer_id(*, uow: UnitOfWork, org_id: str) -> str | None:
    """The org's Stripe customer id, or None while it is being created."""
    assert uow.org_id == org_id, "the unit of work must be bound to the org"
    return uow.execute(
        select(stripe_customers.c.stripe_customer_id).where(stripe_customers.c.org_id == org_id)
    ).scalar_one_or_none()


def org_for_customer(*, uow: UnitOfWork, stripe_customer_id: str) -> str | None:
    """The org a Stripe customer belongs to (global routing table), or None."""
    return uow.execute(
        select(stripe_customer_routes.c.org_id).where(stripe_customer_routes.c.stripe_customer_id == stripe_customer_id)
    ).scalar_one_or_none()


def orgs_for_customers(*, uow: UnitOfWork, stripe_customer_ids: Iterable[str]) -> dict[str, str]:
    """Stripe customer id -> org id for those of `stripe_customer_ids` an org owns (one query)."""
    wanted = sorted(set(stripe_customer_ids))
    if not wanted:
        return {}
    rows = uow.execute(
        select(stripe_customer_routes.c.stripe_customer_id, stripe_customer_routes.c.org_id)
        .where(stripe_customer_routes.c.stripe_customer_id.in_(wanted))
    ).all()
    return {row.stripe_customer_id: row.org_id for row in rows}


def orgs_with_customers(*, uow: UnitOfWork, after: str = "", limit: int = 500) -> list[tuple[str, str]]:
    """(org id, Stripe customer id) of every org that has a customer, by org id, a page at a time."""
    rows = uow.execute(
        select(stripe_customer_routes.c.org_id, stripe_customer_routes.c.stripe_customer_id)
        .where(stripe_customer_routes.c.org_id > after)
        .order_by(stripe_customer_routes.c.org_id)
        .limit(limit)
    ).all()
    return [(row.org_id, row.stripe_customer_id) for row in rows]

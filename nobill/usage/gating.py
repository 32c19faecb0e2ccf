"""Which plans may send usage: Starter may not; Pro and trials record it; Enterprise
records and bills it. Read from the org's row in `subscriptions`."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, select

from nobill.billing import plans
from nobill.billing.tables import subscriptions
from nobill.db.compiled import CompiledQuery
from nobill.db.unit_of_work import UnitOfWork
from nobill.errors import FailedPrecondition

_PLAN = CompiledQuery(
    select(subscriptions.c.plan, subscriptions.c.status).where(subscriptions.c.org_id == bindparam("org_id"))
)


@dataclass(frozen=True)
class UsagePlan:
    plan: plans.PlanCode
    billed: bool  # the plan charges usage (Stripe meters bill it once the subscription has metered prices)


def usage_plan(*, uow: UnitOfWork, org_id: str) -> UsagePlan:
    """The org's plan as far as usage is concerned; raises FailedPrecondition if the plan
    does not take usage."""
    row = uow.fetch_one(_PLAN, {"org_id": org_id})
    if row is None:
        raise FailedPrecondition(f"organization {org_id} has no subscription; usage cannot be recorded")
    plan = plans.PlanCode(row.plan)
    status = plans.SubscriptionStatus(row.status)
    if plan is plans.PlanCode.STARTER:
        raise FailedPrecondition("the Starter plan does not include usage metering; upgrade to Pro or Enterprise")
    if status is plans.SubscriptionStatus.CANCELED:
        raise FailedPrecondition(f"the {plans.details(plan).display_name} subscription is canceled; usage cannot be recorded")
    billed = plan is plans.PlanCode.ENTERPRISE and status is not plans.SubscriptionStatus.TRIALING
    return UsagePlan(plan, billed)

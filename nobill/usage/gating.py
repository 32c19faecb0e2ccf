"""Which plans may send usage: Starter may not; Pro and trials record it; Enterprise
records and bills it. Read from the org's billing account (its `subscriptions` row)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from nobill.billing import accounts, plans
from nobill.db.unit_of_work import UnitOfWork
from nobill.errors import FailedPrecondition, NotFound
from nobill.usage import periods


@dataclass(frozen=True)
class UsagePlan:
    plan: plans.PlanCode
    periods: periods.Periods  # the org's billing periods now


def periods_of(account: accounts.BillingAccount, now: dt.datetime) -> periods.Periods:
    """Stripe's subscription periods when the org has a Stripe subscription, else calendar months."""
    if account.stripe_subscription_id and account.current_period_start and account.current_period_end:
        return periods.subscription_periods(account.current_period_start, account.current_period_end, now)
    return periods.calendar_periods(now)


def usage_plan(*, uow: UnitOfWork, org_id: str, now: dt.datetime) -> UsagePlan:
    """The org's plan and periods; raises FailedPrecondition if the plan takes no usage."""
    try:
        account = accounts.get(uow=uow, org_id=org_id)
    except NotFound:
        raise FailedPrecondition(f"organization {org_id} has no subscription; usage cannot be recorded") from None
    if account.plan is plans.PlanCode.STARTER:
        raise FailedPrecondition("the Starter plan does not include usage metering; upgrade to Pro or Enterprise")
    if account.status is plans.SubscriptionStatus.CANCELED:
        name = plans.details(account.plan).display_name
        raise FailedPrecondition(f"the {name} subscription is canceled; usage cannot be recorded")
    return UsagePlan(account.plan, periods_of(account, now))

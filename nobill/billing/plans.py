"""The plan catalog. Amounts are in minor units (cents) of `currency`."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass


class PlanCode(str, enum.Enum):
    STARTER = "starter"
    PRO = "pro"
    ENTERPRISE = "enterprise"


class SubscriptionStatus(str, enum.Enum):
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    CANCELED = "canceled"
    INCOMPLETE = "incomplete"


@dataclass(frozen=True)
class PlanDetails:
    code: PlanCode
    display_name: str
    currency: str
    base_amount: int
    seat_amount: int
    included_seats: int
    max_members: int  # 0: no limit
    metered_usage: bool
    unit_amount_decimal: str  # per metered unit, minor units; "0" when not metered
    features: tuple[str, ...]


CATALOG: dict[PlanCode, PlanDetails] = {
    PlanCode.STARTER: PlanDetails(
        PlanCode.STARTER, "Starter", "usd", 1900, 0, 1, 1, False, "0", ("core",)
    ),
    PlanCode.PRO: PlanDetails(
        PlanCode.PRO, "Pro", "usd", 4900, 1200, 0, 0, False, "0", ("core", "roles", "audit_log")
    ),
    PlanCode.ENTERPRISE: PlanDetails(
        PlanCode.ENTERPRISE, "Enterprise", "usd", 50000, 0, 0, 0, True, "0.2",
        ("core", "roles", "audit_log", "sso", "usage_metering"),
    ),
}

TRIAL_PLAN = PlanCode.PRO
TRIAL_LENGTH = dt.timedelta(days=14)


def details(code: PlanCode) -> PlanDetails:
    return CATALOG[code]


def list_() -> list[PlanDetails]:
    return list(CATALOG.values())

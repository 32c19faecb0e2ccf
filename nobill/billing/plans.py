"""The plan catalog, read from catalog.toml (checked in next to this module). Amounts are
in minor units (cents) of `currency`."""

from __future__ import annotations

import datetime as dt
import enum
import functools
import tomllib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any

CATALOG_FILE = "catalog.toml"
METRICS = ("api_requests", "background_jobs", "reports_generated")


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


class PriceRole(str, enum.Enum):
    BASE = "base"  # flat, quantity 1
    SEAT = "seat"  # per member
    METERED = "metered"  # billed from a Billing Meter


@dataclass(frozen=True)
class PriceSpec:
    """One Stripe price of a plan, named by its lookup key."""

    plan: PlanCode
    name: str  # the key in catalog.toml: base, seat, or a metric name
    role: PriceRole
    lookup_key: str
    unit_amount: int | None  # licensed prices
    unit_amount_decimal: str | None  # metered prices (fractional cents)
    meter: str | None  # metric name of a metered price


@dataclass(frozen=True)
class MeterSpec:
    event_name: str
    display_name: str


@dataclass(frozen=True)
class PlanDetails:
    code: PlanCode
    display_name: str
    description: str
    currency: str
    base_amount: int
    seat_amount: int
    included_seats: int
    max_members: int  # 0: no limit
    metered_usage: bool
    usage_tracked: bool
    unit_amount_decimal: str  # per metered unit, minor units; "0" when not metered
    features: tuple[str, ...]
    prices: tuple[PriceSpec, ...]

    def price(self, name: str) -> PriceSpec | None:
        return next((price for price in self.prices if price.name == name), None)

    @property
    def product_id(self) -> str:
        """The Stripe product id of the plan (fixed, so sync finds it on any account)."""
        return f"nobill_{self.code.value}"


@dataclass(frozen=True)
class Catalog:
    currency: str
    interval: str
    trial_plan: PlanCode
    trial_length: dt.timedelta
    meters: tuple[MeterSpec, ...]
    plans: dict[PlanCode, PlanDetails]

    def by_lookup_key(self, lookup_key: str) -> PriceSpec | None:
        for plan in self.plans.values():
            for price in plan.prices:
                if price.lookup_key == lookup_key:
                    return price
        return None


class CatalogError(ValueError):
    """catalog.toml breaks one of its rules."""


def _price(plan: PlanCode, name: str, raw: dict[str, Any], meters: set[str]) -> PriceSpec:
    lookup_key = raw.get("lookup_key")
    if not isinstance(lookup_key, str) or not lookup_key or len(lookup_key) > 200:
        raise CatalogError(f"plans.{plan.value}.prices.{name}: lookup_key must be a string of 1-200 characters")
    meter = raw.get("meter")
    if meter is not None:
        if meter not in meters:
            raise CatalogError(f"plans.{plan.value}.prices.{name}: unknown meter {meter!r}")
        try:
            if Decimal(str(raw["unit_amount_decimal"])) < 0:
                raise CatalogError(f"plans.{plan.value}.prices.{name}: unit_amount_decimal must not be negative")
        except (KeyError, InvalidOperation):
            raise CatalogError(f"plans.{plan.value}.prices.{name}: a metered price needs unit_amount_decimal") from None
        return PriceSpec(plan, name, PriceRole.METERED, lookup_key, None, str(raw["unit_amount_decimal"]), meter)
    amount = raw.get("unit_amount")
    if not isinstance(amount, int) or amount < 0:
        raise CatalogError(f"plans.{plan.value}.prices.{name}: unit_amount must be a whole number of cents")
    if name not in ("base", "seat"):
        raise CatalogError(f"plans.{plan.value}.prices.{name}: licensed prices are named base or seat")
    return PriceSpec(plan, name, PriceRole(name), lookup_key, amount, None, None)


def parse(raw: dict[str, Any]) -> Catalog:
    """Validate the TOML document and build the catalog."""
    currency = raw.get("currency", "")
    if not isinstance(currency, str) or len(currency) != 3 or not currency.islower():
        raise CatalogError("currency must be a lower-case ISO 4217 code")
    meters = tuple(
        MeterSpec(name, str(spec.get("display_name", name))) for name, spec in raw.get("meters", {}).items()
    )
    if tuple(sorted(m.event_name for m in meters)) != tuple(sorted(METRICS)):
        raise CatalogError(f"meters must be exactly {', '.join(METRICS)}")
    meter_names = {meter.event_name for meter in meters}
    plans: dict[PlanCode, PlanDetails] = {}
    for code in PlanCode:
        spec = raw.get("plans", {}).get(code.value)
        if spec is None:
            raise CatalogError(f"plans.{code.value} is missing")
        prices = tuple(_price(code, name, price, meter_names) for name, price in spec.get("prices", {}).items())
        base = next((p for p in prices if p.role is PriceRole.BASE), None)
        if base is None:
            raise CatalogError(f"plans.{code.value}: needs a base price")
        seat = next((p for p in prices if p.role is PriceRole.SEAT), None)
        metered = [p for p in prices if p.role is PriceRole.METERED]
        max_members = spec.get("limits", {}).get("max_members", 0)
        if not isinstance(max_members, int) or max_members < 0:
            raise CatalogError(f"plans.{code.value}.limits.max_members must be a whole number (0: no limit)")
        plans[code] = PlanDetails(
            code=code,
            display_name=str(spec.get("display_name", code.value.title())),
            description=str(spec.get("description", "")),
            currency=currency,
            base_amount=base.unit_amount or 0,
            seat_amount=seat.unit_amount or 0 if seat else 0,
            included_seats=0 if seat else (max_members or 0),
            max_members=max_members,
            metered_usage=bool(metered),
            usage_tracked=bool(spec.get("usage_tracked", False)) or bool(metered),
            # ListPlans carries one per-unit amount: every metered price of a plan shares it.
            unit_amount_decimal=metered[0].unit_amount_decimal or "0" if metered else "0",
            features=tuple(spec.get("features", ())),
            prices=prices,
        )
        amounts = {p.unit_amount_decimal for p in metered}
        if len(amounts) > 1:
            raise CatalogError(f"plans.{code.value}: every metered price must have the same unit_amount_decimal")
    keys = [price.lookup_key for plan in plans.values() for price in plan.prices]
    if len(keys) != len(set(keys)):
        raise CatalogError("lookup keys must be unique across plans")
    trial = raw.get("trial", {})
    try:
        trial_plan = PlanCode(trial.get("plan", "pro"))
    except ValueError:
        raise CatalogError("trial.plan must name a plan") from None
    days = trial.get("days", 14)
    if not isinstance(days, int) or days <= 0:
        raise CatalogError("trial.days must be a positive whole number")
    return Catalog(currency, str(raw.get("interval", "month")), trial_plan, dt.timedelta(days=days), meters, plans)


@functools.cache
def catalog() -> Catalog:
    """The checked-in catalog (read once per process)."""
    text = resources.files("nobill.billing").joinpath(CATALOG_FILE).read_text(encoding="utf-8")
    return parse(tomllib.loads(text))


def details(code: PlanCode) -> PlanDetails:
    return catalog().plans[code]


def list_() -> list[PlanDetails]:
    return list(catalog().plans.values())


TRIAL_PLAN = catalog().trial_plan
TRIAL_LENGTH = catalog().trial_length

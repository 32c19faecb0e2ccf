"""The org's subscription as NOBill mirrors it: started as a local trial, then changed
only by what Stripe reports (apply_subscription_snapshot)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update

from nobill.audit import service as audit
from nobill.audit.actors import AuditContext
from nobill.billing import due_work, plans
from nobill.billing.plans import PlanCode, SubscriptionStatus
from nobill.billing.tables import stripe_customer_routes, stripe_customers, subscriptions
from nobill.db.unit_of_work import UnitOfWork
from nobill.errors import NotFound

# Stripe's subscription statuses → NOBill's (docs/BILLING.md, "Status mapping").
STATUS_FROM_STRIPE: dict[str, SubscriptionStatus] = {
    "trialing": SubscriptionStatus.TRIALING,
    "active": SubscriptionStatus.ACTIVE,
    "past_due": SubscriptionStatus.PAST_DUE,
    "unpaid": SubscriptionStatus.PAST_DUE,  # dunning gave up but kept it: access ends with the grace period
    "incomplete": SubscriptionStatus.INCOMPLETE,
    "incomplete_expired": SubscriptionStatus.CANCELED,
    "canceled": SubscriptionStatus.CANCELED,
    "paused": SubscriptionStatus.CANCELED,  # a trial ended without a payment method: no access
}
LIVE_STATUSES = frozenset(
    {SubscriptionStatus.TRIALING, SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE, SubscriptionStatus.INCOMPLETE}
)


@dataclass(frozen=True)
class ItemDrift:
    """One way the Stripe subscription's items differ from the plan (nobill/billing/drift.py)."""

    kind: str  # base_quantity, seat_quantity, unknown_price, missing_item
    subscription_item_id: str
    price: str  # lookup key, or the price id when it has none
    expected_quantity: int
    actual_quantity: int
    correcting: bool  # NOBill queued the correction; False: flagged for a person
    message: str

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> ItemDrift:
        return cls(**value)


@dataclass(frozen=True)
class Subscription:
    org_id: str
    plan: PlanCode
    status: SubscriptionStatus
    trial_end: dt.datetime | None
    current_period_start: dt.datetime | None
    current_period_end: dt.datetime | None
    cancel_at_period_end: bool
    seats: int
    has_payment_method: bool
    stripe_subscription_id: str | None
    stripe_status: str | None
    past_due_since: dt.datetime | None
    pending_plan: PlanCode | None
    metered: bool
    sync_error: str | None
    drift: tuple[ItemDrift, ...] = ()

    @property
    def has_live_stripe_subscription(self) -> bool:
        return self.stripe_subscription_id is not None and self.status in LIVE_STATUSES


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _from_row(row: Any) -> Subscription:
    return Subscription(
        org_id=row.org_id,
        plan=PlanCode(row.plan),
        status=SubscriptionStatus(row.status),
        trial_end=row.trial_end,
        current_period_start=row.current_period_start,
        current_period_end=row.current_period_end,
        cancel_at_period_end=row.cancel_at_period_end,
        seats=row.seats,
        has_payment_method=row.has_payment_method,
        stripe_subscription_id=row.stripe_subscription_id,
        stripe_status=row.stripe_status,
        past_due_since=row.past_due_since,
        pending_plan=PlanCode(row.pending_plan) if row.pending_plan else None,
        metered=row.metered,
        sync_error=row.sync_error,
        drift=tuple(ItemDrift.from_json(value) for value in row.drift),
    )


def get(*, uow: UnitOfWork, org_id: str, for_update: bool = False) -> Subscription:
    """The org's subscription (locked for the rest of the transaction with for_update)."""
    statement = select(subscriptions).where(subscriptions.c.org_id == org_id)
    if for_update:
        statement = statement.with_for_update()
    row = uow.execute(statement).one_or_none()
    if row is None:
        raise NotFound("organization not found")
    return _from_row(row)


def start_trial(*, uow: UnitOfWork, org_id: str, context: AuditContext, org_name: str) -> Subscription:
    """A new org's trial of the catalog's trial plan; its Stripe customer is created
    asynchronously through the outbox."""
    from nobill.billing import outbox

    now = _now()
    catalog = plans.catalog()
    trial_end = now + catalog.trial_length
    uow.execute(
        insert(subscriptions).values(
            org_id=org_id,
            plan=catalog.trial_plan.value,
            status=SubscriptionStatus.TRIALING.value,
            trial_end=trial_end,
            cancel_at_period_end=False,
            seats=1,
            updated_at=now,
        )
    )
    uow.execute(insert(stripe_customers).values(org_id=org_id, created_at=now, updated_at=now))
    due_work.mark(uow=uow, org_id=org_id, kind=due_work.TRIAL_END, due_at=trial_end)
    outbox.add(uow=uow, org_id=org_id, kind="create_customer", payload={"name": org_name}, context=context,
               idempotency_key=f"nobill-customer-{org_id}")
    audit.record(
        uow=uow,
        context=context,
        action="subscription.trial_started",
        target_type="subscription",
        target_id=org_id,
        after={"plan": catalog.trial_plan.value, "status": "trialing", "trial_end": trial_end.isoformat()},
    )
    return get(uow=uow, org_id=org_id)


def record_customer(*, uow: UnitOfWork, org_id: str, stripe_customer_id: str, test_clock_id: str | None) -> None:
    """Store the org's Stripe customer and its route (customer id → org id)."""
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    now = _now()
    uow.execute(
        update(stripe_customers)
        .where(stripe_customers.c.org_id == org_id)
        .values(stripe_customer_id=stripe_customer_id, test_clock_id=test_clock_id, updated_at=now)
    )
    uow.execute(
        pg_insert(stripe_customer_routes)
        .values(stripe_customer_id=stripe_customer_id, org_id=org_id, created_at=now)
        .on_conflict_do_nothing()
    )


def set_sync_error(*, uow: UnitOfWork, org_id: str, error: str | None) -> None:
    uow.execute(update(subscriptions).where(subscriptions.c.org_id == org_id).values(sync_error=error, updated_at=_now()))


def set_pending_plan(*, uow: UnitOfWork, org_id: str, plan: PlanCode | None) -> None:
    uow.execute(
        update(subscriptions)
        .where(subscriptions.c.org_id == org_id)
        .values(pending_plan=plan.value if plan else None, updated_at=_now())
    )


# --- Stripe snapshots ----------------------------------------------------------------


def _timestamp(value: Any) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(value, dt.timezone.utc) if isinstance(value, int) else None


def plan_of(snapshot: dict[str, Any]) -> PlanCode | None:
    """The plan a Stripe subscription is on: its items' product is `nobill_<plan>`."""
    for item in snapshot.get("items", {}).get("data", []):
        product = item.get("price", {}).get("product")
        product_id = product.get("id") if isinstance(product, dict) else product
        for code in PlanCode:
            if product_id == plans.details(code).product_id:
                return code
    return None


def seat_quantity(snapshot: dict[str, Any]) -> int | None:
    """Quantity of the Pro seat item, or None when the subscription has none."""
    seat = plans.details(PlanCode.PRO).price("seat")
    for item in snapshot.get("items", {}).get("data", []):
        if seat and item.get("price", {}).get("lookup_key") == seat.lookup_key:
            return int(item.get("quantity") or 0)
    return None


def seat_item_id(snapshot: dict[str, Any]) -> str | None:
    seat = plans.details(PlanCode.PRO).price("seat")
    for item in snapshot.get("items", {}).get("data", []):
        if seat and item.get("price", {}).get("lookup_key") == seat.lookup_key:
            return item["id"]
    return None


def _state_of(snapshot: dict[str, Any], current: Subscription) -> dict[str, Any]:
    items = snapshot.get("items", {}).get("data", [])
    first = items[0] if items else {}
    status = STATUS_FROM_STRIPE.get(snapshot.get("status", ""), SubscriptionStatus.INCOMPLETE)
    plan = plan_of(snapshot) or current.plan
    seats = seat_quantity(snapshot)
    return {
        "plan": plan.value,
        "status": status.value,
        "stripe_status": snapshot.get("status"),
        "stripe_subscription_id": snapshot["id"],
        "trial_end": _timestamp(snapshot.get("trial_end")) if status is SubscriptionStatus.TRIALING else current.trial_end,
        "current_period_start": _timestamp(first.get("current_period_start")),
        "current_period_end": _timestamp(first.get("current_period_end")),
        "cancel_at_period_end": bool(snapshot.get("cancel_at_period_end")),
        "seats": seats if seats is not None else current.seats,
        "has_payment_method": bool(snapshot.get("default_payment_method")),
        "metered": any(item.get("price", {}).get("recurring", {}).get("usage_type") == "metered" for item in items),
    }


def _as_json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value


def apply_subscription_snapshot(
    *, uow: UnitOfWork, org_id: str, snapshot: dict[str, Any], context: AuditContext
) -> bool:
    """Make the org's subscription what Stripe's object says; returns whether anything
    changed. Convergent: the snapshot is re-read from Stripe, so applying any snapshot
    any number of times in any order ends in Stripe's current state. A canceled
    subscription other than the org's current live one changes nothing."""
    current = get(uow=uow, org_id=org_id, for_update=True)
    state = _state_of(snapshot, current)
    if (
        current.stripe_subscription_id not in (None, snapshot["id"])
        and current.status in LIVE_STATUSES
        and state["status"] == SubscriptionStatus.CANCELED.value
    ):
        return False
    before = {
        "plan": current.plan.value,
        "status": current.status.value,
        "stripe_status": current.stripe_status,
        "stripe_subscription_id": current.stripe_subscription_id,
        "trial_end": current.trial_end,
        "current_period_start": current.current_period_start,
        "current_period_end": current.current_period_end,
        "cancel_at_period_end": current.cancel_at_period_end,
        "seats": current.seats,
        "has_payment_method": current.has_payment_method,
        "metered": current.metered,
    }
    from nobill.billing import drift  # drift queues outbox rows; outbox imports this module

    drift_changed = drift.record(
        uow=uow, org_id=org_id, snapshot=snapshot, plan=PlanCode(state["plan"]),
        live=SubscriptionStatus(state["status"]) in LIVE_STATUSES, previous=current.drift, context=context,
    )
    changed = {key: value for key, value in state.items() if before[key] != value}
    if not changed:
        return drift_changed
    values = dict(state, updated_at=_now())
    if state["status"] == SubscriptionStatus.PAST_DUE.value:
        values["past_due_since"] = current.past_due_since or _now()
    else:
        values["past_due_since"] = None
    if current.pending_plan is not None and current.pending_plan.value == state["plan"]:
        values["pending_plan"] = None
    uow.execute(update(subscriptions).where(subscriptions.c.org_id == org_id).values(**values))
    # Stripe governs the subscription now: NOBill's own trial clock stops.
    due_work.clear(uow=uow, org_id=org_id, kind=due_work.TRIAL_END)
    audit.record(
        uow=uow,
        context=context,
        action=_action(before, state),
        target_type="subscription",
        target_id=org_id,
        before={key: _as_json(before[key]) for key in changed},
        after={key: _as_json(value) for key, value in changed.items()},
    )
    return True


def _action(before: dict[str, Any], after: dict[str, Any]) -> str:
    if before["status"] != after["status"]:
        return f"subscription.{after['status']}"
    if before["plan"] != after["plan"]:
        return "subscription.plan_changed"
    return "subscription.updated"


def expire_trial(*, uow: UnitOfWork, org_id: str, context: AuditContext, now: dt.datetime) -> bool:
    """Cancel the org's local trial if it ended without a Stripe subscription; returns
    whether it did (False when there was nothing to do)."""
    current = get(uow=uow, org_id=org_id, for_update=True)
    if (
        current.status is not SubscriptionStatus.TRIALING
        or current.stripe_subscription_id is not None
        or current.trial_end is None
        or current.trial_end > now
    ):
        return False
    uow.execute(
        update(subscriptions)
        .where(subscriptions.c.org_id == org_id)
        .values(status=SubscriptionStatus.CANCELED.value, updated_at=_now())
    )
    audit.record(
        uow=uow,
        context=context,
        action="subscription.trial_expired",
        target_type="subscription",
        target_id=org_id,
        before={"status": "trialing", "trial_end": current.trial_end.isoformat()},
        after={"status": "canceled"},
    )
    return True

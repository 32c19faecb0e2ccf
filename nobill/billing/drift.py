"""Subscriptions changed outside NOBill (the Stripe Dashboard, the portal, a script): every
applied snapshot's items are compared with what the plan expects, and the difference is
corrected where NOBill owns the quantity, flagged where it does not, audited, and shown by
GetSubscription (`drift`).

What a plan expects (catalog.toml): its base price with quantity 1 (Enterprise: the
catalog's base or the org's own price, `nobill stripe enterprise-price`); Pro's seat price
with quantity = the member count; Enterprise's metered prices, without a quantity; and no
other price."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from nobill.audit import service as audit
from nobill.audit.actors import AuditContext
from nobill.billing import enterprise, outbox, plans, subscriptions
from nobill.billing.plans import PlanCode, PriceRole
from nobill.billing.subscriptions import ItemDrift
from nobill.billing.tables import stripe_customers, stripe_outbox
from nobill.billing.tables import subscriptions as subscriptions_table
from nobill.db.unit_of_work import UnitOfWork
from nobill.stripe.gateway import StripeGateway
from nobill.tenancy import members as tenancy_members

BASE_QUANTITY = "base_quantity"
SEAT_QUANTITY = "seat_quantity"
UNKNOWN_PRICE = "unknown_price"
MISSING_ITEM = "missing_item"

CORRECT_ITEMS = "correct_items"


def _price_name(price: dict[str, Any]) -> str:
    return str(price.get("lookup_key") or price.get("id") or "")


def compare(
    snapshot: dict[str, Any], *, plan: PlanCode, org_id: str, members: int, enterprise_price_id: str | None
) -> list[ItemDrift]:
    """How the subscription's items differ from `plan`'s (pure: no I/O)."""
    details = plans.details(plan)
    by_lookup_key = {price.lookup_key: price for price in details.prices}
    base = details.price("base")
    found: list[ItemDrift] = []
    seen: set[str] = set()
    for item in snapshot.get("items", {}).get("data", []):
        price = item.get("price") or {}
        spec = by_lookup_key.get(price.get("lookup_key") or "")
        if spec is None and plan is PlanCode.ENTERPRISE and (
            price.get("lookup_key") == enterprise.lookup_key(org_id)
            or (enterprise_price_id and price.get("id") == enterprise_price_id)
        ):
            spec = base  # the org's own Enterprise base price
        name = _price_name(price)
        quantity = int(item.get("quantity") or 0)
        if spec is None:
            found.append(ItemDrift(
                UNKNOWN_PRICE, item.get("id", ""), name, 0, quantity, False,
                f"price {name} is not one of the {details.display_name} plan's; left as it is for a person to check",
            ))
            continue
        seen.add(spec.name)
        if spec.role is PriceRole.BASE and quantity != 1:
            found.append(ItemDrift(
                BASE_QUANTITY, item["id"], name, 1, quantity, True,
                f"the base price has quantity {quantity}; NOBill sets it back to 1",
            ))
        elif spec.role is PriceRole.SEAT and quantity != members:
            found.append(ItemDrift(
                SEAT_QUANTITY, item["id"], name, members, quantity, True,
                f"{quantity} seat(s) for {members} member(s); the seat sync sets the member count",
            ))
    for spec in details.prices:
        if spec.name not in seen:
            found.append(ItemDrift(
                MISSING_ITEM, "", spec.lookup_key, 1 if spec.role is PriceRole.BASE else 0, 0, False,
                f"the subscription has no item for {spec.lookup_key}; left as it is for a person to check",
            ))
    return found


def record(
    *,
    uow: UnitOfWork,
    org_id: str,
    snapshot: dict[str, Any],
    plan: PlanCode,
    live: bool,
    previous: tuple[ItemDrift, ...],
    context: AuditContext,
) -> bool:
    """Compare the org's current subscription snapshot with its plan, queue the corrections
    NOBill owns, and store (and audit) what differs when that changed. Returns whether the
    stored drift changed. The caller holds the org's subscription row."""
    found: list[ItemDrift] = []
    if live:
        members = tenancy_members.count(uow=uow)
        enterprise_price_id = uow.execute(
            select(stripe_customers.c.enterprise_price_id).where(stripe_customers.c.org_id == org_id)
        ).scalar_one_or_none()
        found = compare(snapshot, plan=plan, org_id=org_id, members=members, enterprise_price_id=enterprise_price_id)
    pending = set(
        uow.execute(
            select(stripe_outbox.c.kind).where(
                stripe_outbox.c.state == "pending", stripe_outbox.c.kind.in_((CORRECT_ITEMS, "sync_seats"))
            )
        ).scalars()
    )
    # NOTE: seats lag membership changes by the seat sync's delay on purpose: while NOBill's
    # own sync is queued the difference is its change in flight, not drift.
    found = [d for d in found if not (d.kind == SEAT_QUANTITY and "sync_seats" in pending)]
    if any(d.kind == BASE_QUANTITY for d in found) and CORRECT_ITEMS not in pending:
        outbox.add(uow=uow, org_id=org_id, kind=CORRECT_ITEMS, payload={"subscription": snapshot["id"]}, context=context)
    if any(d.kind == SEAT_QUANTITY for d in found):
        outbox.add_coalesced(uow=uow, org_id=org_id, kind="sync_seats", payload={}, context=context, delay_seconds=0)
    if tuple(found) == tuple(previous):
        return False
    uow.execute(
        update(subscriptions_table)
        .where(subscriptions_table.c.org_id == org_id)
        .values(drift=[d.to_json() for d in found])
    )
    audit.record(
        uow=uow,
        context=context,
        action="subscription.drift_found" if found else "subscription.drift_resolved",
        target_type="subscription",
        target_id=org_id,
        before={"drift": [d.to_json() for d in previous]},
        after={"drift": [d.to_json() for d in found], "stripe_subscription_id": snapshot.get("id")},
    )
    return True


def correct_items(*, uow: UnitOfWork, gateway: StripeGateway, row: outbox.OutboxRow) -> None:
    """Set every base item whose quantity is not 1 back to 1 (prorated: the credit undoes
    the charge the extra quantity made), reading the subscription as it is now."""
    current = subscriptions.get(uow=uow, org_id=row.org_id)
    subscription_id = current.stripe_subscription_id
    if not current.has_live_stripe_subscription or subscription_id is None or subscription_id != row.payload.get("subscription"):
        return
    snapshot = gateway.retrieve_subscription(subscription_id)
    corrected = []
    for difference in compare(snapshot, plan=current.plan, org_id=row.org_id, members=0, enterprise_price_id=None):
        if difference.kind != BASE_QUANTITY:
            continue
        gateway.update_subscription_item(
            difference.subscription_item_id,
            params={"quantity": 1, "proration_behavior": "create_prorations"},
            idempotency_key=f"{row.idempotency_key}-{difference.subscription_item_id}",
        )
        corrected.append(difference.to_json())
    if corrected:
        audit.record(
            uow=uow,
            context=row.requested_by,
            action="subscription.drift_corrected",
            target_type="subscription",
            target_id=row.org_id,
            before={"drift": corrected},
            after={"quantity": 1},
        )

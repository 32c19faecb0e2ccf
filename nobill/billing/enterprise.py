"""An Enterprise org's own base price: the operator sets an amount, the outbox creates the
Stripe price (lookup key `nobill_enterprise_base_<org id>`) and moves a live Enterprise
subscription onto it."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import update

from nobill.audit import service as audit
from nobill.audit.actors import AuditContext
from nobill.billing import outbox, plans, subscriptions
from nobill.billing.plans import PlanCode
from nobill.billing.tables import stripe_customers
from nobill.db.unit_of_work import UnitOfWork
from nobill.errors import InvalidArgument
from nobill.stripe.gateway import StripeGateway

MAX_AMOUNT = 100_000_000  # one million in major units


def lookup_key(org_id: str) -> str:
    return f"nobill_enterprise_base_{org_id}"


def set_price(*, uow: UnitOfWork, org_id: str, amount: int, context: AuditContext) -> str:
    """Record the org's custom monthly base amount (minor units) and queue its Stripe price."""
    if not 0 < amount <= MAX_AMOUNT:
        raise InvalidArgument(f"amount must be between 1 and {MAX_AMOUNT} (minor units)", field="amount")
    subscriptions.get(uow=uow, org_id=org_id)  # NotFound for an unknown org
    uow.execute(
        update(stripe_customers)
        .where(stripe_customers.c.org_id == org_id)
        .values(enterprise_base_amount=amount, updated_at=dt.datetime.now(dt.timezone.utc))
    )
    audit.record(
        uow=uow, context=context, action="billing.enterprise_price_requested", target_type="organization",
        target_id=org_id, after={"amount": amount},
    )
    return outbox.add(uow=uow, org_id=org_id, kind="set_enterprise_price", payload={"amount": amount}, context=context)


def create_price(*, uow: UnitOfWork, gateway: StripeGateway, row: outbox.OutboxRow) -> None:
    enterprise = plans.details(PlanCode.ENTERPRISE)
    amount = int(row.payload["amount"])
    price = gateway.create_price(
        {
            "product": enterprise.product_id,
            "currency": enterprise.currency,
            "unit_amount": amount,
            "recurring": {"interval": plans.catalog().interval, "usage_type": "licensed"},
            "lookup_key": lookup_key(row.org_id),
            "transfer_lookup_key": True,
            "nickname": f"Enterprise base for {row.org_id}",
            "metadata": {"org_id": row.org_id},
        },
        idempotency_key=row.idempotency_key,
    )
    uow.execute(
        update(stripe_customers)
        .where(stripe_customers.c.org_id == row.org_id)
        .values(enterprise_price_id=price["id"], updated_at=dt.datetime.now(dt.timezone.utc))
    )
    current = subscriptions.get(uow=uow, org_id=row.org_id)
    moved = None
    if current.plan is PlanCode.ENTERPRISE and current.has_live_stripe_subscription and current.stripe_subscription_id:
        snapshot = gateway.retrieve_subscription(current.stripe_subscription_id)
        for item in snapshot.get("items", {}).get("data", []):
            item_price = item.get("price", {})
            product = item_price.get("product")
            product_id = product.get("id") if isinstance(product, dict) else product
            if product_id == enterprise.product_id and item_price.get("recurring", {}).get("usage_type") == "licensed":
                if item_price.get("id") != price["id"]:
                    gateway.update_subscription_item(
                        item["id"], params={"price": price["id"], "proration_behavior": "create_prorations"},
                        idempotency_key=f"{row.idempotency_key}-item",
                    )
                    moved = item["id"]
    audit.record(
        uow=uow, context=row.requested_by, action="billing.enterprise_price_set", target_type="organization",
        target_id=row.org_id, after={"amount": amount, "price": price["id"], "subscription_item": moved},
    )

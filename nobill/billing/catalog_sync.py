"""`nobill stripe sync`: make Stripe's products, prices and Billing Meters match the
catalog. Idempotent: a second run finds everything in place and changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from nobill.billing import plans
from nobill.stripe.gateway import StripeGateway


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)


def _meter_params(meter: plans.MeterSpec) -> dict[str, Any]:
    return {
        "display_name": meter.display_name,
        "event_name": meter.event_name,
        "default_aggregation": {"formula": "sum"},
        "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
        "value_settings": {"event_payload_key": "value"},
    }


def _price_params(catalog: plans.Catalog, plan: plans.PlanDetails, price: plans.PriceSpec, meter_ids: dict[str, str]) -> dict[str, Any]:
    recurring: dict[str, Any] = {"interval": catalog.interval}
    params: dict[str, Any] = {
        "product": plan.product_id,
        "currency": catalog.currency,
        "lookup_key": price.lookup_key,
        "nickname": f"{plan.display_name} {price.name}",
        "metadata": {"nobill_plan": plan.code.value, "nobill_price": price.name},
    }
    if price.role is plans.PriceRole.METERED:
        assert price.meter
        recurring.update(usage_type="metered", meter=meter_ids[price.meter])
        params["unit_amount_decimal"] = price.unit_amount_decimal
    else:
        recurring["usage_type"] = "licensed"
        params["unit_amount"] = price.unit_amount
    params["recurring"] = recurring
    return params


def _same_price(existing: dict[str, Any], wanted: dict[str, Any]) -> bool:
    recurring = existing.get("recurring") or {}
    if existing.get("currency") != wanted["currency"] or existing.get("product") != wanted["product"]:
        return False
    if recurring.get("interval") != wanted["recurring"]["interval"]:
        return False
    if recurring.get("usage_type") != wanted["recurring"]["usage_type"]:
        return False
    if wanted["recurring"].get("meter") and recurring.get("meter") != wanted["recurring"]["meter"]:
        return False
    if "unit_amount" in wanted:
        return existing.get("unit_amount") == wanted["unit_amount"]
    return Decimal(str(existing.get("unit_amount_decimal"))) == Decimal(wanted["unit_amount_decimal"])


def sync(
    gateway: StripeGateway,
    *,
    progress: Callable[[str], None] = lambda line: None,
    catalog: plans.Catalog | None = None,
) -> SyncReport:
    """Create or update the catalog's meters, products and prices on Stripe (the checked-in
    catalog unless another is given)."""
    catalog = catalog or plans.catalog()
    report = SyncReport()

    meters = {meter["event_name"]: meter for meter in gateway.list_meters()}
    meter_ids: dict[str, str] = {}
    for spec in catalog.meters:
        name = f"meter {spec.event_name}"
        existing = meters.get(spec.event_name)
        if existing is None:
            created = gateway.create_meter(_meter_params(spec), idempotency_key=f"nobill-sync-meter-{spec.event_name}")
            meter_ids[spec.event_name] = created["id"]
            report.created.append(name)
            progress(f"created  {name} ({created['id']})")
            continue
        meter_ids[spec.event_name] = existing["id"]
        # Only the display name may change on an existing meter; the rest is fixed by Stripe.
        if existing.get("status") == "inactive":
            gateway.reactivate_meter(existing["id"])
            report.updated.append(name)
            progress(f"reactivated {name}")
        elif existing.get("display_name") != spec.display_name:
            gateway.update_meter(existing["id"], {"display_name": spec.display_name})
            report.updated.append(name)
            progress(f"updated  {name}")
        else:
            report.unchanged.append(name)
            progress(f"ok       {name}")

    for plan in catalog.plans.values():
        name = f"product {plan.product_id}"
        wanted = {"name": f"NOBill {plan.display_name}", "description": plan.description or None}
        existing = gateway.retrieve_product(plan.product_id)
        if existing is None:
            gateway.create_product(
                {"id": plan.product_id, "name": wanted["name"], "description": plan.description or plan.display_name,
                 "metadata": {"nobill_plan": plan.code.value}},
                idempotency_key=f"nobill-sync-product-{plan.product_id}",
            )
            report.created.append(name)
            progress(f"created  {name}")
        elif existing.get("name") != wanted["name"] or not existing.get("active", True) or (
            plan.description and existing.get("description") != plan.description
        ):
            gateway.update_product(
                plan.product_id,
                {"name": wanted["name"], "active": True, **({"description": plan.description} if plan.description else {})},
            )
            report.updated.append(name)
            progress(f"updated  {name}")
        else:
            report.unchanged.append(name)
            progress(f"ok       {name}")

    specs = [(plan, price) for plan in catalog.plans.values() for price in plan.prices]
    existing_prices = gateway.prices_by_lookup_key([price.lookup_key for _plan, price in specs])
    for plan, price in specs:
        name = f"price {price.lookup_key}"
        params = _price_params(catalog, plan, price, meter_ids)
        existing = existing_prices.get(price.lookup_key)
        if existing is not None and _same_price(existing, params):
            report.unchanged.append(name)
            progress(f"ok       {name} ({existing['id']})")
            continue
        # Prices are immutable: a new amount is a new price that takes over the lookup key.
        created = gateway.create_price({**params, "transfer_lookup_key": existing is not None})
        if existing is not None:
            gateway.update_price(existing["id"], {"active": False})
            report.updated.append(name)
            progress(f"replaced {name} ({existing['id']} -> {created['id']})")
        else:
            report.created.append(name)
            progress(f"created  {name} ({created['id']})")
    if report.changed:
        from nobill.billing import prices

        prices.forget()
    return report

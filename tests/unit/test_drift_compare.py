"""Drift, pure: how a Stripe subscription's items differ from what its plan expects
(nobill.billing.drift.compare). The applied path is in tests/billing/test_drift.py."""

from __future__ import annotations

from typing import Any

from nobill.billing import drift, plans
from nobill.billing.plans import PlanCode


def _item(item_id: str, lookup_key: str | None, quantity: int | None, price_id: str = "price_x") -> dict[str, Any]:
    item: dict[str, Any] = {"id": item_id, "price": {"id": price_id, "lookup_key": lookup_key}}
    if quantity is not None:
        item["quantity"] = quantity
    return item


def _snapshot(*items: dict[str, Any]) -> dict[str, Any]:
    return {"id": "sub_x", "items": {"data": list(items)}}


def _key(plan: PlanCode, name: str) -> str:
    spec = plans.details(plan).price(name)
    assert spec is not None
    return spec.lookup_key


def test_a_pro_subscription_as_the_plan_expects_has_no_drift() -> None:
    snapshot = _snapshot(_item("si_base", _key(PlanCode.PRO, "base"), 1), _item("si_seat", _key(PlanCode.PRO, "seat"), 4))
    assert drift.compare(snapshot, plan=PlanCode.PRO, org_id="org_x", members=4, enterprise_price_id=None) == []


def test_base_quantity_seats_unknown_and_missing_prices_are_each_drift() -> None:
    snapshot = _snapshot(
        _item("si_base", _key(PlanCode.PRO, "base"), 3),
        _item("si_seat", _key(PlanCode.PRO, "seat"), 2),
        _item("si_other", None, 1, price_id="price_someone_made"),
    )
    found = drift.compare(snapshot, plan=PlanCode.PRO, org_id="org_x", members=5, enterprise_price_id=None)
    assert [(d.kind, d.subscription_item_id, d.expected_quantity, d.actual_quantity, d.correcting) for d in found] == [
        (drift.BASE_QUANTITY, "si_base", 1, 3, True),
        (drift.SEAT_QUANTITY, "si_seat", 5, 2, True),
        (drift.UNKNOWN_PRICE, "si_other", 0, 1, False),
    ]
    missing = drift.compare(_snapshot(_item("si_base", _key(PlanCode.PRO, "base"), 1)), plan=PlanCode.PRO,
                            org_id="org_x", members=1, enterprise_price_id=None)
    assert [(d.kind, d.price) for d in missing] == [(drift.MISSING_ITEM, _key(PlanCode.PRO, "seat"))]


def test_an_enterprise_org_s_own_base_price_and_metered_items_are_expected() -> None:
    metered = [
        _item(f"si_{price.name}", price.lookup_key, None)
        for price in plans.details(PlanCode.ENTERPRISE).prices if price.role is plans.PriceRole.METERED
    ]
    own = _item("si_base", "nobill_enterprise_base_org_x", 1, price_id="price_own")
    assert drift.compare(_snapshot(own, *metered), plan=PlanCode.ENTERPRISE, org_id="org_x", members=9,
                         enterprise_price_id="price_own") == []

"""Stripe's subscription statuses as NOBill states (docs/BILLING.md, "Status mapping"), and
the items a checkout or plan change asks Stripe for."""

from __future__ import annotations

from typing import Any

import pytest

from nobill.billing import plans, prices
from nobill.billing.plans import PlanCode, SubscriptionStatus
from nobill.billing.subscriptions import LIVE_STATUSES, STATUS_FROM_STRIPE
from nobill.errors import FailedPrecondition


def test_every_stripe_status_has_a_nobill_state_and_access_follows_it() -> None:
    assert set(STATUS_FROM_STRIPE) == {
        "trialing", "active", "past_due", "unpaid", "incomplete", "incomplete_expired", "canceled", "paused",
    }
    assert STATUS_FROM_STRIPE["unpaid"] is SubscriptionStatus.PAST_DUE
    assert STATUS_FROM_STRIPE["paused"] is SubscriptionStatus.CANCELED
    assert STATUS_FROM_STRIPE["incomplete_expired"] is SubscriptionStatus.CANCELED
    assert SubscriptionStatus.CANCELED not in LIVE_STATUSES
    assert {SubscriptionStatus.TRIALING, SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE} <= LIVE_STATUSES


class _Prices:
    """Stands in for the Stripe gateway's one price lookup (by lookup key)."""

    def __init__(self, known: set[str]) -> None:
        self.known = known
        self.asked: list[list[str]] = []

    def prices_by_lookup_key(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        self.asked.append(list(keys))
        return {key: {"id": f"price_{key}"} for key in keys if key in self.known}


@pytest.fixture(autouse=True)
def _fresh_price_cache() -> None:
    prices.forget()


def _keys(plan: PlanCode) -> set[str]:
    return {price.lookup_key for price in plans.details(plan).prices}


def test_pro_is_the_base_once_and_one_seat_per_member() -> None:
    gateway = _Prices(_keys(PlanCode.PRO))
    items = prices.line_items(gateway, PlanCode.PRO, seats=3, enterprise_price_id=None)  # type: ignore[arg-type]
    base, seat = plans.details(PlanCode.PRO).price("base"), plans.details(PlanCode.PRO).price("seat")
    assert base is not None and seat is not None
    assert items == [{"price": f"price_{base.lookup_key}", "quantity": 1}, {"price": f"price_{seat.lookup_key}", "quantity": 3}]
    # An org has at least its Owner; a seat count of 0 still buys one seat.
    assert prices.line_items(gateway, PlanCode.PRO, seats=0, enterprise_price_id=None)[1]["quantity"] == 1  # type: ignore[arg-type]
    assert len(gateway.asked) == 1, "prices are looked up once, then cached"


def test_enterprise_uses_the_deal_price_and_metered_items_carry_no_quantity() -> None:
    gateway = _Prices(_keys(PlanCode.ENTERPRISE))
    items = prices.line_items(gateway, PlanCode.ENTERPRISE, seats=7, enterprise_price_id="price_deal")  # type: ignore[arg-type]
    assert items[0] == {"price": "price_deal", "quantity": 1}
    metered = [p for p in plans.details(PlanCode.ENTERPRISE).prices if p.role is plans.PriceRole.METERED]
    assert items[1:] == [{"price": f"price_{p.lookup_key}"} for p in metered]
    assert all(key != plans.details(PlanCode.ENTERPRISE).price("base").lookup_key for key in gateway.asked[0])  # type: ignore[union-attr]


def test_a_price_stripe_does_not_have_names_the_command_that_creates_it() -> None:
    with pytest.raises(FailedPrecondition, match="nobill stripe sync"):
        prices.line_items(_Prices(set()), PlanCode.STARTER, seats=1, enterprise_price_id=None)  # type: ignore[arg-type]

"""Stripe price ids for the catalog's lookup keys, looked up on Stripe (never hard-coded)
and kept for a few minutes per process."""

from __future__ import annotations

import threading
import time

from nobill.billing import plans
from nobill.errors import FailedPrecondition
from nobill.stripe.gateway import StripeGateway

TTL_SECONDS = 300.0

_lock = threading.Lock()
_cache: dict[str, tuple[float, str]] = {}


def price_ids(gateway: StripeGateway, lookup_keys: list[str]) -> dict[str, str]:
    """lookup key → active price id; FAILED_PRECONDITION naming `nobill stripe sync` when one is missing."""
    now = time.monotonic()
    with _lock:
        found = {key: entry[1] for key in lookup_keys if (entry := _cache.get(key)) and entry[0] > now}
    missing = [key for key in lookup_keys if key not in found]
    if missing:
        fetched = {key: price["id"] for key, price in gateway.prices_by_lookup_key(missing).items()}
        absent = [key for key in missing if key not in fetched]
        if absent:
            raise FailedPrecondition(f"Stripe has no active price for {', '.join(absent)}; run `nobill stripe sync`")
        with _lock:
            for key, price_id in fetched.items():
                _cache[key] = (now + TTL_SECONDS, price_id)
        found.update(fetched)
    return found


def forget() -> None:
    """Drop the cache (after `nobill stripe sync` moved a lookup key)."""
    with _lock:
        _cache.clear()


def line_items(
    gateway: StripeGateway, plan: plans.PlanCode, *, seats: int, enterprise_price_id: str | None
) -> list[dict[str, object]]:
    """Checkout / subscription items of `plan`: base ×1, seats × member count, metered prices without quantity."""
    details = plans.details(plan)
    keys = [price.lookup_key for price in details.prices if not (price.role is plans.PriceRole.BASE and enterprise_price_id)]
    ids = price_ids(gateway, keys)
    items: list[dict[str, object]] = []
    for price in details.prices:
        if price.role is plans.PriceRole.BASE:
            items.append({"price": enterprise_price_id or ids[price.lookup_key], "quantity": 1})
        elif price.role is plans.PriceRole.SEAT:
            items.append({"price": ids[price.lookup_key], "quantity": max(1, seats)})
        else:  # metered: Stripe refuses a quantity on them
            items.append({"price": ids[price.lookup_key]})
    return items

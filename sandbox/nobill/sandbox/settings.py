"""Knobs of one sandbox instance: set at start, most of them changeable through `/_sandbox/settings`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from nobill.sandbox import errors

API_VERSION = "2026-10-28.endive"

DUNNING_FINAL_ACTIONS = ("cancel", "unpaid", "past_due")


@dataclass
class SandboxSettings:
    # Seconds to wait before retry n (1-based) of a failed webhook delivery; the delivery
    # is abandoned after the last one. Tests shorten this to hundredths of a second.
    webhook_retry_schedule: tuple[float, ...] = (1.0, 5.0, 25.0, 125.0, 625.0, 3125.0)
    webhook_timeout: float = 10.0
    # Days after the first failed payment of an invoice at which it is retried. With the
    # default, a renewal is attempted 4 times (day 0, 3, 5, 7) before `dunning_final_action`.
    dunning_retry_days: tuple[int, ...] = (3, 5, 7)
    # What happens to the subscription after the last retry fails (Stripe's
    # "subscription status" setting for failed payments): cancel it, mark it unpaid,
    # or leave it past_due.
    dunning_final_action: str = "cancel"
    # Stripe finalizes a renewal invoice about an hour after creating it (the window in
    # which webhooks may still edit the draft).
    invoice_finalize_delay: int = 3600
    # How often objects that are not on a test clock are checked for due work (trial
    # ends, renewals, retries, expiring Checkout Sessions) in real time.
    tick_interval: float = 1.0
    # Seconds a test clock stays `advancing` before the sandbox performs the advance in the
    # background and makes it `ready`. Stripe advances asynchronously too; client code must
    # poll the clock (or wait for `test_helpers.test_clock.ready`) before reading results.
    test_clock_advance_delay: float = 0.2
    # Stripe keeps 30 days of events; the sandbox keeps the most recent N.
    max_events: int = 50_000

    def public(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a JSON object from the control API, validating each field."""
        for name, value in changes.items():
            if name not in {f.name for f in dataclasses.fields(self)}:
                raise errors.invalid_request(f"Unknown sandbox setting: {name}", param=name)
            setattr(self, name, _coerce(name, value))


def _coerce(name: str, value: Any) -> Any:
    def fail() -> errors.StripeError:
        return errors.invalid_request(f"Invalid value for sandbox setting {name}: {value!r}", param=name)

    if name in ("webhook_retry_schedule", "dunning_retry_days"):
        if not isinstance(value, list) or not all(isinstance(v, (int, float)) and v >= 0 for v in value):
            raise fail()
        if name == "dunning_retry_days" and (
            not all(float(v).is_integer() for v in value) or list(value) != sorted(value) or len(set(value)) != len(value)
        ):
            raise fail()
        return tuple(int(v) for v in value) if name == "dunning_retry_days" else tuple(float(v) for v in value)
    if name == "dunning_final_action":
        if value not in DUNNING_FINAL_ACTIONS:
            raise fail()
        return value
    if name == "test_clock_advance_delay":
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise fail()
        return float(value)
    if name in ("webhook_timeout", "tick_interval"):
        if not isinstance(value, (int, float)) or value <= 0:
            raise fail()
        return float(value)
    if name in ("invoice_finalize_delay", "max_events"):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise fail()
        return value
    raise fail()

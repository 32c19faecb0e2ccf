"""Advancing a test clock the way Stripe requires: start the advance, then poll the clock
until it is `ready`. Works against the sandbox and against Stripe with any
stripe-python `StripeClient` (duck-typed: this module does not import `stripe`).

    from nobill.sandbox.clock_polling import advance_and_wait

    clock = advance_and_wait(client, clock.id, clock.frozen_time + 30 * 86_400)
    assert clock.status == "ready"   # everything due up to then has happened
"""

from __future__ import annotations

import time
from typing import Any


class ClockNotReady(TimeoutError):
    """The test clock was still advancing when the wait ran out."""


def wait_until_ready(client: Any, clock_id: str, *, timeout: float = 60.0, interval: float = 0.02, max_interval: float = 1.0) -> Any:
    """Poll `test_clocks.retrieve` until the clock's status is `ready`; returns the clock.

    The interval doubles up to `max_interval`, so a quick sandbox advance is seen within
    milliseconds and Stripe is not polled harder than needed.
    """
    deadline = time.monotonic() + timeout
    while True:
        clock = client.v1.test_helpers.test_clocks.retrieve(clock_id)
        if clock.status == "ready":
            return clock
        if clock.status != "advancing":
            raise RuntimeError(f"test clock {clock_id} is {clock.status!r}; it will not become ready")
        if time.monotonic() >= deadline:
            raise ClockNotReady(f"test clock {clock_id} still advancing after {timeout} s")
        time.sleep(interval)
        interval = min(interval * 2, max_interval)


def advance_and_wait(client: Any, clock_id: str, frozen_time: int, *, timeout: float = 60.0) -> Any:
    """Advance the clock to `frozen_time` and wait until it is `ready`; returns the clock."""
    client.v1.test_helpers.test_clocks.advance(clock_id, {"frozen_time": frozen_time})
    return wait_until_ready(client, clock_id, timeout=timeout)

"""Work that falls due with time: trial notices and ends, renewals, invoice finalization,
payment retries, expiring `incomplete` subscriptions and Checkout Sessions.

Each object lives either on a test clock or in real time. `settle(state, clock, until)`
performs, in time order, everything due for that world up to `until`; a test clock's
frozen time steps through each due moment, so objects and events carry the simulated
times Stripe would give them. The real-time world is settled by the server's ticker.
"""

from __future__ import annotations

from typing import Any, Callable

from nobill.sandbox import checkout, lifecycle
from nobill.sandbox.state import SandboxState

# Order of work falling due at the same second (e.g. a trial ending at a period boundary).
_PRIORITY = {
    "trial_will_end": 0,
    "trial_end": 1,
    "incomplete_expired": 2,
    "cancel_at": 3,
    "renew": 4,
    "finalize": 5,
    "retry": 6,
    "expire_checkout": 7,
    "pending_update_expired": 8,
}
MAX_STEPS = 100_000


def _due_items(state: SandboxState, test_clock: str | None) -> list[tuple[int, int, str, Any]]:
    due: list[tuple[int, int, str, Any]] = []
    for subscription in state.subscriptions.values():
        if subscription.test_clock != test_clock:
            continue
        if subscription.pending_update is not None:
            due.append((subscription.pending_update["expires_at"], _PRIORITY["pending_update_expired"], "pending_update_expired", subscription))
        status = subscription.status
        if status == "trialing" and subscription.trial_end is not None:
            if not subscription.trial_will_end_sent:
                notice = max(subscription.trial_end - lifecycle.TRIAL_WILL_END_NOTICE, subscription.created)
                due.append((notice, _PRIORITY["trial_will_end"], "trial_will_end", subscription))
            due.append((subscription.trial_end, _PRIORITY["trial_end"], "trial_end", subscription))
        elif status == "incomplete" and subscription.incomplete_expires_at is not None:
            due.append((subscription.incomplete_expires_at, _PRIORITY["incomplete_expired"], "incomplete_expired", subscription))
        elif status in lifecycle.BILLING_STATUSES:
            if subscription.cancel_at is not None and subscription.cancel_at < subscription.current_period_end:
                due.append((subscription.cancel_at, _PRIORITY["cancel_at"], "cancel_at", subscription))
            due.append((subscription.current_period_end, _PRIORITY["renew"], "renew", subscription))
    for invoice in state.invoices.values():
        if invoice.test_clock != test_clock:
            continue
        if invoice.status == "draft" and invoice.automatically_finalizes_at is not None:
            due.append((invoice.automatically_finalizes_at, _PRIORITY["finalize"], "finalize", invoice))
        elif invoice.status == "open" and invoice.next_payment_attempt is not None:
            due.append((invoice.next_payment_attempt, _PRIORITY["retry"], "retry", invoice))
    for session in state.checkout_sessions.values():
        if session.test_clock == test_clock and session.status == "open":
            due.append((session.expires_at, _PRIORITY["expire_checkout"], "expire_checkout", session))
    return due


_ACTIONS: dict[str, Callable[[SandboxState, Any, int], Any]] = {
    "trial_will_end": lifecycle.send_trial_will_end,
    "trial_end": lifecycle.end_trial,
    "incomplete_expired": lifecycle.expire_incomplete,
    "cancel_at": lambda state, sub, now: lifecycle.cancel(state, sub, now, reason="cancellation_requested"),
    "renew": lifecycle.renew,
    "finalize": lifecycle.finalize_and_charge,
    "retry": lifecycle.charge,
    "expire_checkout": checkout.expire_session,
    "pending_update_expired": lifecycle.expire_pending_update,
}


def next_due_time(state: SandboxState, test_clock: str | None) -> int | None:
    due = _due_items(state, test_clock)
    return min(item[0] for item in due) if due else None


def settle(state: SandboxState, test_clock: str | None, until: int) -> int:
    """Perform everything due up to `until` (call with the state lock held); returns the
    number of steps taken."""
    clock = state.test_clocks.get(test_clock) if test_clock else None
    # Work that falls due is Stripe's own doing, not the caller's: its events carry no
    # request id even when an API call (a clock advance) set time moving.
    request, state.request = state.request, None
    try:
        for step in range(MAX_STEPS):
            due = [item for item in _due_items(state, test_clock) if item[0] <= until]
            if not due:
                return step
            when, _, action, target = min(due, key=lambda item: (item[0], item[1]))
            if clock is not None:
                clock.frozen_time = max(clock.frozen_time, when)
                now = clock.frozen_time
            else:
                now = state.real_now()
            _ACTIONS[action](state, target, now)
            state.dirty = True
    finally:
        state.request = request
    raise RuntimeError(f"due work did not settle after {MAX_STEPS} steps (test clock {test_clock})")

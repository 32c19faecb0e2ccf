"""Stripe's test clocks: `/v1/test_helpers/test_clocks` create, retrieve, list, delete, advance.

Customers created with `test_clock=clock_...` live in the clock's time. Advancing the
clock performs, in order, everything due up to the new time (trial notices and ends,
renewals, invoice finalization, payment attempts and retries) with the clock's frozen
time set to each due moment.

NOTE: Stripe advances asynchronously: `advance` answers `status: advancing` (with
`status_details.advancing.target_frozen_time`) and the clock becomes `ready` later, so
clients must poll the clock or wait for `test_helpers.test_clock.ready`
(https://docs.stripe.com/billing/testing/test-clocks/api-advanced-usage). The sandbox
does the same: the work runs in the background `test_clock_advance_delay` seconds after
the call (`finish_due_advances`), and while a clock advances its objects cannot change
and it cannot be advanced again.
"""

from __future__ import annotations

import time
from typing import Any

from nobill.sandbox import errors, events, ids, objects
from nobill.sandbox.billing_periods import DAY, add_intervals, interval_seconds_upper_bound
from nobill.sandbox.due_work import settle
from nobill.sandbox.listing import newest_first, paginate
from nobill.sandbox.params import Int, Str, endpoint, list_endpoint
from nobill.sandbox.records import TestClockRecord
from nobill.sandbox.routing import Call, route
from nobill.sandbox.state import SandboxState

LIFETIME = 30 * DAY


@route(
    "POST",
    "/v1/test_helpers/test_clocks",
    endpoint({"frozen_time": Int(minimum=0), "name": Str(max_length=300)}, required=("frozen_time",), not_simulated=("customer",)),
)
def create_test_clock(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params
    now = state.real_now()
    clock = TestClockRecord(
        id=ids.new_id("clock"), created=now, frozen_time=params["frozen_time"], deletes_after=now + LIFETIME, name=params.get("name")
    )
    state.test_clocks[clock.id] = clock
    state.dirty = True
    rendered = objects.test_clock(state, clock)
    events.emit(state, "test_helpers.test_clock.created", rendered, created=now)
    return rendered


@route("GET", "/v1/test_helpers/test_clocks/{test_clock}", endpoint({}))
def retrieve_test_clock(call: Call) -> dict[str, Any]:
    return objects.test_clock(call.state, call.state.get_test_clock(call.path_args["test_clock"], status=404, param="test_clock"))


@route("GET", "/v1/test_helpers/test_clocks", list_endpoint({}))
def list_test_clocks(call: Call) -> dict[str, Any]:
    state = call.state
    return paginate(
        newest_first(state.test_clocks),
        call.params,
        url="/v1/test_helpers/test_clocks",
        render=lambda clock: objects.test_clock(state, clock),
        collection=state.test_clocks,
        resource="test_helpers.test_clock",
    )


@route("DELETE", "/v1/test_helpers/test_clocks/{test_clock}", endpoint({}, expand=False))
def delete_test_clock(call: Call) -> dict[str, Any]:
    state = call.state
    clock = state.get_test_clock(call.path_args["test_clock"], status=404, param="test_clock")
    rendered = objects.test_clock(state, clock)
    delete_clock_and_objects(state, clock)
    events.emit(state, "test_helpers.test_clock.deleted", rendered, created=state.real_now())
    return objects.deleted(clock.id, "test_helpers.test_clock")


def delete_clock_and_objects(state: SandboxState, clock: TestClockRecord) -> None:
    """Deleting a clock deletes every object that lives on it, as on Stripe."""
    customers = {c.id for c in state.customers.values() if c.test_clock == clock.id}
    subscriptions = {s.id for s in state.subscriptions.values() if s.test_clock == clock.id}
    for collection, doomed in (
        (state.customers, lambda r: r.id in customers),
        (state.payment_methods, lambda r: r.customer in customers),
        (state.subscriptions, lambda r: r.id in subscriptions),
        (state.subscription_items, lambda r: r.subscription in subscriptions),
        (state.invoices, lambda r: r.test_clock == clock.id),
        (state.invoice_items, lambda r: r.test_clock == clock.id),
        (state.checkout_sessions, lambda r: r.test_clock == clock.id),
    ):
        for object_id in [key for key, record in collection.items() if doomed(record)]:
            del collection[object_id]
    for by_customer in state.meter_events.values():
        for customer_id in customers:
            by_customer.pop(customer_id, None)
    del state.test_clocks[clock.id]
    state.dirty = True


def _advance_limit(state: SandboxState, clock: TestClockRecord) -> int:
    """Stripe lets a clock move at most two intervals of its shortest subscription
    interval, or two years when no subscription lives on it (the `frozen_time` parameter
    of https://docs.stripe.com/api/test_clocks/advance)."""
    live = [
        s
        for s in state.subscriptions.values()
        if s.test_clock == clock.id and s.status not in ("canceled", "incomplete_expired")
    ]
    if not live:
        return add_intervals(clock.frozen_time, "year", 1, 2)
    shortest = min(live, key=lambda s: interval_seconds_upper_bound(s.interval, s.interval_count))
    return add_intervals(clock.frozen_time, shortest.interval, shortest.interval_count, 2)


@route(
    "POST",
    "/v1/test_helpers/test_clocks/{test_clock}/advance",
    endpoint({"frozen_time": Int(minimum=0)}, required=("frozen_time",)),
)
def advance_test_clock(call: Call) -> dict[str, Any]:
    state = call.state
    clock = state.get_test_clock(call.path_args["test_clock"], status=404, param="test_clock")
    target = call.params["frozen_time"]
    if clock.status == "advancing":
        raise errors.invalid_request(
            f"The test clock {clock.id} is already advancing (to {clock.advance_target}); "
            "wait until its status is `ready` before advancing it again."
        )
    if target <= clock.frozen_time:
        raise errors.invalid_request(
            f"The frozen_time must be later than the test clock's current frozen_time ({clock.frozen_time}).",
            param="frozen_time",
        )
    limit = _advance_limit(state, clock)
    if target > limit:
        raise errors.invalid_request(
            "A test clock cannot be advanced more than two intervals of its shortest subscription interval at once, "
            f"or two years without subscriptions (at most to {limit}); advance it in steps.",
            param="frozen_time",
        )
    clock.status = "advancing"
    clock.advance_target = target
    clock.advance_starts_at = time.time() + state.settings.test_clock_advance_delay
    state.dirty = True
    rendered = objects.test_clock(state, clock)
    events.emit(state, "test_helpers.test_clock.advancing", rendered, created=state.real_now())
    state.on_clock_advance()
    return rendered


def finish_due_advances(state: SandboxState) -> float | None:
    """Perform the advances whose start time has come (call with the lock held); returns
    the seconds until the next pending one starts, or None when none is pending."""
    wall = time.time()
    waits: list[float] = []
    for clock in list(state.test_clocks.values()):
        if clock.status != "advancing" or clock.advance_target is None:
            continue
        starts_at = clock.advance_starts_at or 0.0
        if starts_at > wall:
            waits.append(starts_at - wall)
            continue
        target = clock.advance_target
        settle(state, clock.id, target)
        clock.frozen_time = target
        clock.status = "ready"
        clock.advance_target = None
        clock.advance_starts_at = None
        state.dirty = True
        events.emit(state, "test_helpers.test_clock.ready", objects.test_clock(state, clock), created=state.real_now())
    return min(waits) if waits else None

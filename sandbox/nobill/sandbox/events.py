"""Events: one per state change, stored for `/v1/events` and handed to webhook delivery."""

from __future__ import annotations

import fnmatch
from typing import Any

from nobill.sandbox import errors, ids
from nobill.sandbox.listing import paginate
from nobill.sandbox.params import CREATED_FILTER, Array, Bool, Str, endpoint, in_range, list_endpoint
from nobill.sandbox.routing import Call, route
from nobill.sandbox.settings import API_VERSION
from nobill.sandbox.state import SandboxState

# Every event type the sandbox emits. Webhook endpoints may subscribe to these, to "*",
# or to other real Stripe event types (see webhook_endpoints.OTHER_STRIPE_EVENT_TYPES).
EMITTED_EVENT_TYPES = (
    "billing.meter.created",
    "billing.meter.deactivated",
    "billing.meter.reactivated",
    "billing.meter.updated",
    "checkout.session.completed",
    "checkout.session.expired",
    "customer.created",
    "customer.deleted",
    "customer.updated",
    "customer.subscription.created",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.pending_update_applied",
    "customer.subscription.pending_update_expired",
    "customer.subscription.resumed",
    "customer.subscription.trial_will_end",
    "customer.subscription.updated",
    "invoice.created",
    "invoice.deleted",
    "invoice.finalized",
    "invoice.marked_uncollectible",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.payment_succeeded",
    "invoice.updated",
    "invoice.voided",
    "invoiceitem.created",
    "invoiceitem.deleted",
    "payment_method.attached",
    "payment_method.detached",
    "price.created",
    "price.updated",
    "product.created",
    "product.deleted",
    "product.updated",
    "test_helpers.test_clock.advancing",
    "test_helpers.test_clock.created",
    "test_helpers.test_clock.deleted",
    "test_helpers.test_clock.ready",
)


def emit(
    state: SandboxState,
    event_type: str,
    data_object: dict[str, Any],
    *,
    created: int,
    previous_attributes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Record an event (called with the state lock held) and hand it to webhook delivery.

    `created` is the time in the object's world: a test clock's frozen time for objects
    on a clock, as Stripe stamps events caused by advancing a clock.
    """
    assert event_type in EMITTED_EVENT_TYPES, event_type
    request = state.request
    data: dict[str, Any] = {"object": data_object}
    if previous_attributes:
        data["previous_attributes"] = previous_attributes
    event: dict[str, Any] = {
        "id": ids.new_id("evt"),
        "object": "event",
        "api_version": API_VERSION,
        "created": created,
        "data": data,
        "livemode": False,
        "pending_webhooks": 0,
        "request": {
            "id": request.request_id if request else None,
            "idempotency_key": request.idempotency_key if request else None,
        },
        "type": event_type,
    }
    state.events[event["id"]] = event
    while len(state.events) > state.settings.max_events:
        state.events.popitem(last=False)
    state.dirty = True
    state.on_event(event)
    return event


def changed_fields(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """`data.previous_attributes`: the old value of every top-level field that changed."""
    return {key: value for key, value in before.items() if after.get(key) != value}


def emit_updated(
    state: SandboxState, event_type: str, before: dict[str, Any], after: dict[str, Any], *, created: int
) -> dict[str, Any] | None:
    """Emit an `*.updated` event if anything changed; nothing otherwise."""
    previous = changed_fields(before, after)
    if not previous:
        return None
    return emit(state, event_type, after, created=created, previous_attributes=previous)


# -- API ------------------------------------------------------------------------------


def snapshot(event: dict[str, Any]) -> dict[str, Any]:
    """A copy safe to serialise outside the lock (delivery updates `pending_webhooks`)."""
    return dict(event)


def _matches_type(event_type: str, pattern: str) -> bool:
    # `type=invoice.*` is a prefix wildcard on Stripe.
    return fnmatch.fnmatchcase(event_type, pattern) if "*" in pattern else event_type == pattern


@route(
    "GET",
    "/v1/events",
    list_endpoint(
        {
            "created": CREATED_FILTER,
            "delivery_success": Bool(),
            "type": Str(),
            "types": Array(Str(), max_items=20),
        }
    ),
)
def list_events(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params
    if "type" in params and "types" in params:
        raise errors.invalid_request("You may only specify one of these parameters: type, types.", param="types")
    patterns = [params["type"]] if "type" in params else params.get("types")

    def keep(event: dict[str, Any]) -> bool:
        if patterns and not any(_matches_type(event["type"], p) for p in patterns):
            return False
        if not in_range(event["created"], params.get("created")):
            return False
        # Stripe: delivery_success=false lists events not yet delivered to every endpoint,
        # whether still being retried or given up on, i.e. `pending_webhooks > 0`.
        if "delivery_success" in params and (event["pending_webhooks"] == 0) != params["delivery_success"]:
            return False
        return True

    rows = [event for event in reversed(state.events.values()) if keep(event)]
    return paginate(
        rows,
        params,
        url="/v1/events",
        render=snapshot,
        id_of=lambda event: event["id"],
        collection=state.events,
        resource="event",
    )


@route("GET", "/v1/events/{id}", endpoint({}))
def retrieve_event(call: Call) -> dict[str, Any]:
    event = call.state.events.get(call.path_args["id"])
    if event is None:
        raise errors.no_such("event", call.path_args["id"], status=404, param="id")
    return snapshot(event)

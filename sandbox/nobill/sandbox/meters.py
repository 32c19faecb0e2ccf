"""Billing Meters, meter events and meter event summaries.

Meter events follow Stripe's rules: whole-number values of at most 15 digits, timestamps
within the past 35 days and at most 5 minutes ahead (of the customer's test clock, if
any), and an `identifier` that may be used once (a repeat is rejected with 400, not double
counted).

NOTE (deliberate difference): Stripe validates the event name and the customer
asynchronously and reports problems through meter error reports, which the sandbox
cannot deliver; it rejects such events synchronously instead, so a bug surfaces in the
test that causes it.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

from nobill.sandbox import errors, events, ids, objects
from nobill.sandbox.listing import newest_first, paginate
from nobill.sandbox.params import Enum, Hash, Int, Str, StringMap, endpoint, list_endpoint
from nobill.sandbox.records import MeterEventRecord, MeterRecord
from nobill.sandbox.routing import Call, route
from nobill.sandbox.state import SandboxState

# Stripe's error code for an identifier it already holds (its OpenAPI spec documents it as
# `duplicate_meter_event`); callers must match on the code. The wording is Stripe's v1 one
# and is not a contract (v2 words the same refusal differently): tests change it.
DUPLICATE_METER_EVENT = "duplicate_meter_event"
DUPLICATE_IDENTIFIER_MESSAGE = "An event already exists with identifier {identifier}."
MAX_VALUE_DIGITS = 15
PAST_WINDOW = 35 * 86_400
FUTURE_WINDOW = 5 * 60
_WHOLE_NUMBER = re.compile(r"^-?\d+$")


# -- aggregation (also used by invoicing) ---------------------------------------------


def aggregate(state: SandboxState, meter: MeterRecord, customer_id: str, start: int, end: int) -> int:
    """The meter's value for one customer over [start, end)."""
    window = {"hour": 3_600, "day": 86_400}.get(meter.event_time_window or "")
    selected = [
        event
        for event in state.meter_events.get(meter.event_name, {}).get(customer_id, [])
        if start <= event.timestamp < end and not event.canceled
    ]
    if window:
        # Pre-aggregated meters: the last event received in each window replaces earlier ones.
        latest: dict[int, MeterEventRecord] = {}
        for event in selected:
            latest[event.timestamp // window] = event
        selected = list(latest.values())
    if meter.formula == "count":
        return len(selected)
    if meter.formula == "last":
        if not selected:
            return 0
        # Stable sort keeps arrival order among equal timestamps: the later arrival wins.
        return sorted(selected, key=lambda event: event.timestamp)[-1].value
    return sum(event.value for event in selected)


def find_active_meter(state: SandboxState, event_name: str) -> MeterRecord | None:
    for meter in state.meters.values():
        if meter.event_name == event_name and meter.status == "active":
            return meter
    return None


# -- meters ---------------------------------------------------------------------------

METER_CREATE = endpoint(
    {
        "customer_mapping": Hash(
            {"event_payload_key": Str(max_length=100), "type": Enum("by_id")}, required=("event_payload_key", "type")
        ),
        "default_aggregation": Hash({"formula": Enum("count", "last", "sum")}, required=("formula",)),
        "display_name": Str(max_length=250),
        "event_name": Str(max_length=100),
        "event_time_window": Enum("day", "hour"),
        "value_settings": Hash({"event_payload_key": Str(max_length=100)}, required=("event_payload_key",)),
    },
    required=("default_aggregation", "display_name", "event_name"),
)


@route("POST", "/v1/billing/meters", METER_CREATE)
def create_meter(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params
    if any(meter.event_name == params["event_name"] for meter in state.meters.values()):
        raise errors.invalid_request(
            f"A meter with the event_name `{params['event_name']}` already exists; an event name can be used by one meter only.",
            param="event_name",
        )
    now = state.real_now()
    meter = MeterRecord(
        id=ids.new_id("mtr_test"),
        created=now,
        updated=now,
        display_name=params["display_name"],
        event_name=params["event_name"],
        formula=params["default_aggregation"]["formula"],
        customer_payload_key=params.get("customer_mapping", {}).get("event_payload_key", "stripe_customer_id"),
        value_payload_key=params.get("value_settings", {}).get("event_payload_key", "value"),
        event_time_window=params.get("event_time_window"),
    )
    state.meters[meter.id] = meter
    rendered = objects.meter(state, meter)
    events.emit(state, "billing.meter.created", rendered, created=now)
    return rendered


@route("GET", "/v1/billing/meters/{id}", endpoint({}))
def retrieve_meter(call: Call) -> dict[str, Any]:
    return objects.meter(call.state, call.state.get_meter(call.path_args["id"], status=404, param="id"))


@route("POST", "/v1/billing/meters/{id}", endpoint({"display_name": Str(max_length=250)}))
def update_meter(call: Call) -> dict[str, Any]:
    state = call.state
    meter = state.get_meter(call.path_args["id"], status=404, param="id")
    before = objects.meter(state, meter)
    if "display_name" in call.params:
        meter.display_name = call.params["display_name"]
        meter.updated = state.real_now()
    after = objects.meter(state, meter)
    events.emit_updated(state, "billing.meter.updated", before, after, created=meter.updated)
    state.dirty = True
    return after


@route("POST", "/v1/billing/meters/{id}/deactivate", endpoint({}))
def deactivate_meter(call: Call) -> dict[str, Any]:
    return _set_meter_status(call, "inactive")


@route("POST", "/v1/billing/meters/{id}/reactivate", endpoint({}))
def reactivate_meter(call: Call) -> dict[str, Any]:
    return _set_meter_status(call, "active")


def _set_meter_status(call: Call, status: str) -> dict[str, Any]:
    state = call.state
    meter = state.get_meter(call.path_args["id"], status=404, param="id")
    if meter.status == status:
        raise errors.invalid_request(f"This meter is already {status}.")
    now = state.real_now()
    meter.status = status
    meter.deactivated_at = now if status == "inactive" else None
    meter.updated = now
    state.dirty = True
    rendered = objects.meter(state, meter)
    events.emit(state, "billing.meter.deactivated" if status == "inactive" else "billing.meter.reactivated", rendered, created=now)
    return rendered


@route("GET", "/v1/billing/meters", list_endpoint({"status": Enum("active", "inactive")}))
def list_meters(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params
    rows = newest_first(state.meters, lambda m: "status" not in params or m.status == params["status"])
    return paginate(
        rows, params, url="/v1/billing/meters", render=lambda m: objects.meter(state, m), collection=state.meters, resource="billing.meter"
    )


# -- meter events ---------------------------------------------------------------------

METER_EVENT_CREATE = endpoint(
    {
        "event_name": Str(max_length=100),
        "identifier": Str(max_length=100),
        "payload": StringMap(),
        "timestamp": Int(),
    },
    required=("event_name", "payload"),
)


@route("POST", "/v1/billing/meter_events", METER_EVENT_CREATE)
def create_meter_event(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params
    event_name = params["event_name"]
    payload: dict[str, str] = params["payload"]
    meter = find_active_meter(state, event_name)
    if meter is None:
        raise errors.invalid_request(
            f"No active meter with event_name `{event_name}` exists (the sandbox checks this synchronously).",
            param="event_name",
        )
    customer_key = meter.customer_payload_key
    if customer_key not in payload:
        raise errors.missing_parameter(f"payload[{customer_key}]")
    customer = state.get_customer(payload[customer_key], param=f"payload[{customer_key}]")
    value_key = meter.value_payload_key
    raw_value = payload.get(value_key)
    if raw_value is None:
        if meter.formula != "count":
            raise errors.missing_parameter(f"payload[{value_key}]")
        raw_value = "1"
    if not _WHOLE_NUMBER.match(raw_value):
        raise errors.invalid_request(
            f"Invalid payload[{value_key}]: meter event values must be whole numbers, got '{raw_value}'.",
            param=f"payload[{value_key}]",
        )
    if len(raw_value.lstrip("-").lstrip("0")) > MAX_VALUE_DIGITS:
        # Stripe (API 2026-04-22.dahlia and later) refuses values of more than 15 digits:
        # it aggregates in double precision, which would corrupt them.
        raise errors.invalid_request(
            f"The value in the event payload can have at most {MAX_VALUE_DIGITS} digits. Received {raw_value}.",
            param=f"payload[{value_key}]", code="meter_event_value_too_many_digits",
        )
    now = state.now(customer.test_clock)
    timestamp = params.get("timestamp", now)
    if timestamp < now - PAST_WINDOW:
        raise errors.invalid_request(
            "The timestamp must be within the past 35 days.", param="timestamp", code="timestamp_too_far_in_past"
        )
    if timestamp > now + FUTURE_WINDOW:
        raise errors.invalid_request(
            "The timestamp cannot be more than 5 minutes in the future.", param="timestamp", code="timestamp_in_future"
        )
    identifier = params.get("identifier") or str(uuid.uuid4())
    if identifier in state.meter_identifiers:
        error = errors.invalid_request(
            DUPLICATE_IDENTIFIER_MESSAGE.format(identifier=identifier), param="identifier", code=DUPLICATE_METER_EVENT
        )
        error.should_retry = False
        raise error
    record = MeterEventRecord(
        event_name=event_name,
        identifier=identifier,
        customer=customer.id,
        value=int(raw_value),
        timestamp=timestamp,
        created=now,
        payload=dict(payload),
    )
    state.meter_identifiers[identifier] = state.real_now()
    state.meter_events.setdefault(event_name, {}).setdefault(customer.id, []).append(record)
    state.dirty = True
    return objects.meter_event(record)


# -- meter event adjustments ---------------------------------------------------------

CANCEL_WINDOW = 86_400

ADJUSTMENT_CREATE = endpoint(
    {"cancel": Hash({"identifier": Str(max_length=100)}), "event_name": Str(max_length=100), "type": Enum("cancel")},
    required=("event_name", "type"),
)


@route("POST", "/v1/billing/meter_event_adjustments", ADJUSTMENT_CREATE)
def create_meter_event_adjustment(call: Call) -> dict[str, Any]:
    """Cancel one meter event by its identifier, so wrongly reported usage is not billed.

    Stripe accepts cancellations within 24 hours of receiving the event
    (https://docs.stripe.com/billing/subscriptions/usage-based/recording-usage-api#cancel-events);
    the sandbox measures that on the customer's clock. The adjustment answers `pending`
    as Stripe's does; the sandbox applies it at once.
    """
    state, params = call.state, call.params
    event_name = params["event_name"]
    identifier = (params.get("cancel") or {}).get("identifier")
    if identifier is None:
        raise errors.missing_parameter("cancel[identifier]")
    found = next(
        (
            event
            for events_of_customer in state.meter_events.get(event_name, {}).values()
            for event in events_of_customer
            if event.identifier == identifier
        ),
        None,
    )
    if found is None:
        raise errors.invalid_request(
            f"No meter event with identifier {identifier} and event_name {event_name} exists.",
            param="cancel[identifier]",
            code="resource_missing",
        )
    if found.canceled:
        raise errors.invalid_request(f"The meter event with identifier {identifier} is already canceled.", param="cancel[identifier]")
    if state.now_for_customer(found.customer) - found.created > CANCEL_WINDOW:
        raise errors.invalid_request(
            f"The meter event with identifier {identifier} was received more than 24 hours ago and can no longer be canceled.",
            param="cancel[identifier]",
        )
    found.canceled = True
    state.dirty = True
    return {
        "object": "billing.meter_event_adjustment",
        "cancel": {"identifier": identifier},
        "event_name": event_name,
        "livemode": False,
        "status": "pending",
        "type": "cancel",
    }


# -- meter event summaries -------------------------------------------------------------

SUMMARY_LIST = list_endpoint(
    {
        "customer": Str(),
        "end_time": Int(minimum=0),
        "start_time": Int(minimum=0),
        "value_grouping_window": Enum("day", "hour"),
    },
    required=("customer", "end_time", "start_time"),
)


def summary_id(meter_id: str, customer_id: str, start: int, end: int) -> str:
    """Stable ids, so that `starting_after` pages through summaries like any list."""
    digest = hashlib.sha256(f"{meter_id}:{customer_id}:{start}:{end}".encode()).hexdigest()[:24]
    return f"mtrusg_{digest}"


@route("GET", "/v1/billing/meters/{id}/event_summaries", SUMMARY_LIST)
def list_event_summaries(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params
    meter = state.get_meter(call.path_args["id"], status=404, param="id")
    customer = state.get_customer(params["customer"], param="customer")
    start, end = params["start_time"], params["end_time"]
    window = {"hour": 3_600, "day": 86_400}.get(params.get("value_grouping_window", ""), 60)
    for name, value in (("start_time", start), ("end_time", end)):
        if value % window:
            unit = {60: "minute", 3_600: "hour", 86_400: "day"}[window]
            raise errors.invalid_request(f"{name} must be aligned with {unit} boundaries.", param=name)
    if end <= start:
        raise errors.invalid_request("end_time must be after start_time.", param="end_time")
    if "value_grouping_window" in params:
        bounds = [(s, min(s + window, end)) for s in range(start, end, window)]
    else:
        bounds = [(start, end)]
    # Chronological order, one summary per window, including windows with no usage.
    rows = [
        objects.meter_event_summary(summary_id(meter.id, customer.id, s, e), meter.id, s, e, aggregate(state, meter, customer.id, s, e))
        for s, e in bounds
    ]
    return paginate(
        rows,
        params,
        url=f"/v1/billing/meters/{meter.id}/event_summaries",
        render=lambda row: row,
        id_of=lambda row: row["id"],
        resource="billing.meter_event_summary",
    )

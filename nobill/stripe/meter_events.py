"""Billing Meter events and summaries: the only Stripe calls usage reporting makes.

    POST /v1/billing/meter_events                     (one call per report, never per event)
    GET  /v1/billing/meters                           (meter ids by event_name, cached)
    GET  /v1/billing/meters/{id}/event_summaries      (reconciliation)

Calls go through the billing gateway's breaker and error classification; the meter event's
`identifier` doubles as the request's Idempotency-Key, so a retry after a lost answer (a
500 after Stripe committed) gets the stored answer instead of a second event."""

from __future__ import annotations

import datetime as dt
import enum
import threading
import time
from decimal import Decimal
from typing import Any

from nobill.stripe.errors import StripePermanent
from nobill.stripe.gateway import StripeGateway

# Meters map the customer from this payload key and sum this one (catalog.toml).
CUSTOMER_KEY = "stripe_customer_id"
VALUE_KEY = "value"
METER_CACHE_SECONDS = 300.0
# Stripe's error code for a meter event whose identifier it already holds.
DUPLICATE_METER_EVENT = "duplicate_meter_event"
# The largest value one meter event may carry: Stripe refuses values of more than 15
# digits (API 2026-04-22.dahlia on; it aggregates in double precision). Larger deltas
# are reported as several events (nobill.usage.reporting).
MAX_VALUE = 10**15 - 1


class Sent(enum.Enum):
    SENT = "sent"
    ALREADY_SENT = "already_sent"  # Stripe already holds an event with this identifier


class MeterEvents:
    def __init__(self, gateway: StripeGateway) -> None:
        self._gateway = gateway
        self._meters: dict[str, str] = {}
        self._meters_at = 0.0
        self._lock = threading.Lock()

    def send(
        self, *, event_name: str, identifier: str, stripe_customer_id: str, value: int, timestamp: dt.datetime
    ) -> Sent:
        """Create one meter event; raises StripeTransient (retry later) or StripePermanent."""
        if not 0 <= value <= MAX_VALUE:
            raise ValueError(f"a meter event carries 0 to {MAX_VALUE}, not {value}")  # a bug in the caller
        params: dict[str, Any] = {
            "event_name": event_name,
            "identifier": identifier,
            "payload": {CUSTOMER_KEY: stripe_customer_id, VALUE_KEY: str(value)},
            "timestamp": int(timestamp.timestamp()),
        }
        try:
            self._gateway.create_meter_event(params, idempotency_key=identifier)
        except StripePermanent as failure:
            # Stripe holds an event with this identifier already (sent under another
            # Idempotency-Key, or after the key expired): it was delivered. Recognised by
            # Stripe's error code; its wording is not a contract.
            if failure.code == DUPLICATE_METER_EVENT:
                return Sent.ALREADY_SENT
            raise
        return Sent.SENT

    def meter_id(self, event_name: str) -> str:
        """The id of the active meter for `event_name` (raises StripePermanent if none)."""
        with self._lock:
            if time.monotonic() - self._meters_at > METER_CACHE_SECONDS or event_name not in self._meters:
                meters = self._gateway.list_meters()
                self._meters = {m["event_name"]: m["id"] for m in meters if m.get("status", "active") == "active"}
                self._meters_at = time.monotonic()
            if event_name not in self._meters:
                raise StripePermanent(f"no active Stripe meter for event_name {event_name!r}; run `nobill stripe sync`")
            return self._meters[event_name]

    def summary(self, *, event_name: str, stripe_customer_id: str, start: dt.datetime, end: dt.datetime) -> int:
        """Stripe's total of the meter for the customer over [start, end) (minute-aligned)."""
        meter_id = self.meter_id(event_name)
        params = {"customer": stripe_customer_id, "start_time": int(start.timestamp()), "end_time": int(end.timestamp())}
        summaries = self._gateway.meter_event_summaries(meter_id, params)
        # Decimal, not float: exact for whatever Stripe sends as a whole number.
        return int(sum(Decimal(str(item["aggregated_value"])) for item in summaries))

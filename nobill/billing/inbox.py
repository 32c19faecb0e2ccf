"""Stripe's webhooks, the inbox: IngestStripeEvents (and IngestStripeEvent, a batch of one)
verifies each delivery and stores its event under its Stripe id, a whole batch in one
transaction, acknowledged only once committed. Each event is routed at intake by the
customer it names: into that org's inbox (stripe_events, row-level security), or, handled
but owned by no org yet, without its body into stripe_unrouted_events
(nobill/billing/inbox_routes.py). One apply message per stored batch hands its handled
events to the worker (nobill/billing/inbox_apply.py); every other event type is stored and
ignored. Events that never got their message are swept; parked ones can be replayed
(`nobill stripe replay`)."""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text, update

from nobill import metrics
from nobill.billing import inbox_routes
from nobill.billing.inbox_events import HANDLERS, customer_of, target_of
from nobill.billing.tables import stripe_event_ids, stripe_events, stripe_unrouted_events
from nobill.db.database import Database
from nobill.db.unit_of_work import UnitOfWork
from nobill.errors import InvalidArgument
from nobill.jobs.send import send
from nobill.stripe.webhooks import REASONS as REJECT_REASONS
from nobill.stripe.webhooks import InvalidWebhook, verify_event

log = logging.getLogger("nobill.billing.inbox")

APPLY_ACTOR = "nobill.billing.apply_stripe_events"
# One event id a message: what a core from before batching enqueues (still drained).
LEGACY_APPLY_ACTOR = "nobill.billing.apply_stripe_event"
SWEEP_GRACE = dt.timedelta(seconds=30)
# Event ids per apply message sent by the sweep and replay.
SEND_CHUNK = 500

# A batch as a whole: at most this many deliveries and payload bytes (the server takes
# messages of up to 8 MiB; one delivery may be 1 MiB, so 4 MiB leaves room for the rest).
MAX_BATCH_DELIVERIES = 500
MAX_BATCH_PAYLOAD_BYTES = 4 * 1024 * 1024

# What became of a delivery; a rejected one's reason is one of REJECT_REASONS.
STORED = "stored"
DUPLICATE = "duplicate"
REJECTED = "rejected"

# Unrouted events wait at most this long by default (NOBILL_STRIPE_UNROUTED_RETENTION_DAYS).
UNROUTED_RETENTION = dt.timedelta(days=7)

# One statement stores the whole batch (migrations/versions/0006_inbox_rls.py): each id is
# claimed in stripe_event_ids (a redelivered id, already stored or stored by a concurrent
# batch, is skipped), each event routed by its customer through stripe_customer_routes and
# stored in its org's inbox, or without its body among the unrouted; it answers which ids
# it stored. A SECURITY DEFINER function, so that one statement may write several orgs'
# rows under forced row-level security; it can only insert, and the routing table, not the
# caller, says which org. The bodies are stored as received (the JSON the signature
# covers), sent as one JSON array that PostgreSQL splits: a text[] of JSON bodies would
# escape every quote in them, which cost more CPU than everything else here.
_STORE = text(
    "SELECT stored_event_id FROM nobill_store_stripe_events(CAST(:event_ids AS text[]), CAST(:event_types AS text[]),"
    " CAST(:customers AS text[]), CAST(:target_kinds AS text[]), CAST(:target_ids AS text[]), CAST(:states AS text[]),"
    " CAST(:payloads AS jsonb))"
)
# Org ids with events in a state received by a time (only ids: each org is then read in a
# unit of work bound to it).
_ORGS_WITH = text("SELECT nobill_orgs_with_stripe_events(:state, :received_before, :limit)")


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery: the raw body and its Stripe-Signature header."""

    payload: bytes
    signature_header: str


@dataclass(frozen=True)
class DeliveryResult:
    """`outcome`: STORED, DUPLICATE or REJECTED (then `reject_reason`, one of
    nobill.stripe.webhooks.REASONS, and `message` say why)."""

    outcome: str
    event_id: str = ""
    event_type: str = ""
    reject_reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class Ingested:
    event_id: str
    event_type: str
    duplicate: bool


def ingest(*, uow: UnitOfWork, payload: bytes, signature_header: str, secrets: tuple[str, ...], apply_delay: float = 0.0) -> Ingested:
    """One delivery (IngestStripeEvent): a batch of one that raises InvalidArgument when
    the delivery is rejected."""
    # Not through ingest_batch's checks of a batch as a whole: a body too large is this
    # delivery's fault (field `payload`, as the released contract says), not a batch's.
    [result] = _ingest(uow, [Delivery(payload, signature_header)], secrets, apply_delay)
    if result.outcome == REJECTED:
        raise InvalidArgument(result.message, field="payload")
    return Ingested(result.event_id, result.event_type, duplicate=result.outcome == DUPLICATE)


def ingest_batch(
    *, uow: UnitOfWork, deliveries: Sequence[Delivery], secrets: tuple[str, ...], apply_delay: float = 0.0
) -> list[DeliveryResult]:
    """Verify each delivery and store the events of those that pass, in the caller's
    transaction (which must commit before Stripe is answered); one result per delivery,
    in order. A redelivered id changes nothing. After commit, one message hands the newly
    stored handled events to the apply actor, `apply_delay` seconds later."""
    _check_batch(deliveries)
    return _ingest(uow, deliveries, secrets, apply_delay)


def _ingest(uow: UnitOfWork, deliveries: Sequence[Delivery], secrets: tuple[str, ...], apply_delay: float) -> list[DeliveryResult]:
    results: list[DeliveryResult | None] = [None] * len(deliveries)
    carried: list[str | None] = [None] * len(deliveries)  # the event id each verified delivery carries
    events: dict[str, tuple[int, dict[str, Any], bytes]] = {}  # event id -> its first delivery
    rejected = 0
    for index, delivery in enumerate(deliveries):
        try:
            event = verify_event(delivery.payload, delivery.signature_header, secrets)
        except InvalidWebhook as error:
            rejected += 1
            results[index] = DeliveryResult(REJECTED, reject_reason=error.reason, message=str(error))
            continue
        carried[index] = event["id"]
        events.setdefault(event["id"], (index, event, delivery.payload))
    if rejected:
        metrics.webhook_event("unknown", "rejected", rejected)
    stored = _store(uow, events) if events else set()
    counts: Counter[tuple[str, str]] = Counter()
    for index, event_id in enumerate(carried):
        if event_id is None:
            continue
        first, event, _ = events[event_id]
        # The same event twice in one batch: its first delivery stores it, the others are duplicates.
        is_new = first == index and event_id in stored
        results[index] = DeliveryResult(STORED if is_new else DUPLICATE, event_id, event["type"])
        counts[(event["type"], (STORED if event["type"] in HANDLERS else "ignored") if is_new else DUPLICATE)] += 1
    to_apply = sorted(event_id for event_id in stored if events[event_id][1]["type"] in HANDLERS)
    if to_apply:
        # One message for the batch, sent only once the events are committed (the sweep
        # covers a crash between the commit and this send).
        uow.after_commit(lambda: send(APPLY_ACTOR, to_apply, delay_seconds=apply_delay))
    uow.after_commit(lambda: _count(counts))
    return [result for result in results if result is not None]


def _check_batch(deliveries: Sequence[Delivery]) -> None:
    """A request wrong as a whole is refused before anything is verified or stored."""
    if not deliveries:
        raise InvalidArgument("deliveries is empty; send 1 to 500", field="deliveries")
    if len(deliveries) > MAX_BATCH_DELIVERIES:
        raise InvalidArgument(f"more than {MAX_BATCH_DELIVERIES} deliveries in one batch", field="deliveries")
    size = sum(len(delivery.payload) for delivery in deliveries)
    if size > MAX_BATCH_PAYLOAD_BYTES:
        raise InvalidArgument(
            f"the payloads add up to {size} bytes; at most {MAX_BATCH_PAYLOAD_BYTES} in one batch", field="deliveries"
        )


def _store(uow: UnitOfWork, events: dict[str, tuple[int, dict[str, Any], bytes]]) -> set[str]:
    """Route and insert the events (one statement); the ids this statement stored."""
    ordered = sorted(events)
    rows = [events[event_id] for event_id in ordered]
    targets = [target_of(event) for _, event, _ in rows]
    return set(
        uow.execute(
            _STORE,
            {
                "event_ids": ordered,
                "event_types": [event["type"] for _, event, _ in rows],
                "customers": [customer_of(event) for _, event, _ in rows],
                "target_kinds": [target.kind if target else None for target in targets],
                "target_ids": [target.object_id if target else None for target in targets],
                # Each body is one JSON value (verify_event parsed it as strict JSON).
                "payloads": "[" + ",".join(payload.decode("utf-8") for _, _, payload in rows) + "]",
                "states": ["pending" if event["type"] in HANDLERS else "ignored" for _, event, _ in rows],
            },
        ).scalars()
    )


def _count(counts: Counter[tuple[str, str]]) -> None:
    for (event_type, result), count in counts.items():
        metrics.webhook_event(event_type, result, count)


def _orgs_with(uow: UnitOfWork, state: str, received_before: dt.datetime, limit: int) -> list[str]:
    return list(uow.execute(_ORGS_WITH, {"state": state, "received_before": received_before, "limit": limit}).scalars())


def sweep(
    *, database: Database, now: dt.datetime | None = None, limit: int = 1000,
    unrouted_retention: dt.timedelta = UNROUTED_RETENTION,
) -> int:
    """Hand stored-but-unapplied events (older than a grace period) to the actor again, and
    delete unrouted events older than `unrouted_retention`. Returns how many were re-sent."""
    now = now or dt.datetime.now(dt.timezone.utc)
    grace = now - SWEEP_GRACE
    with UnitOfWork(database) as uow:
        event_ids = list(
            uow.execute(
                select(stripe_unrouted_events.c.event_id)
                .where(stripe_unrouted_events.c.state == "pending", stripe_unrouted_events.c.received_at <= grace)
                .order_by(stripe_unrouted_events.c.received_at)
                .limit(limit)
            ).scalars()
        )
        expired = inbox_routes.delete_expired(uow=uow, received_before=now - unrouted_retention, limit=limit)
        orgs = _orgs_with(uow, "pending", grace, limit)
        uow.commit()
    for org_id in orgs:
        with UnitOfWork(database, org_id=org_id) as uow:
            event_ids += uow.execute(
                select(stripe_events.c.event_id)
                .where(stripe_events.c.org_id == org_id, stripe_events.c.state == "pending",
                       stripe_events.c.received_at <= grace)
                .order_by(stripe_events.c.received_at)
                .limit(limit)
            ).scalars()
    _send(event_ids)
    if event_ids:
        log.info("inbox sweep re-sent events", extra={"events": len(event_ids)})
    if expired:
        log.warning("inbox sweep deleted unrouted events past their retention",
                    extra={"events": expired, "retention_days": unrouted_retention / dt.timedelta(days=1)})
    return len(event_ids)


def replay(*, database: Database, event_ids: list[str] | None = None) -> list[str]:
    """Put parked events (all, or those named) back to pending and hand them to the actor."""
    now = dt.datetime.now(dt.timezone.utc)
    with UnitOfWork(database) as uow:
        statement = update(stripe_unrouted_events).where(stripe_unrouted_events.c.state == "parked")
        if event_ids:
            statement = statement.where(stripe_unrouted_events.c.event_id.in_(event_ids))
            orgs = sorted({org for org in inbox_routes.orgs_of(uow=uow, event_ids=event_ids).values() if org})
        else:
            orgs = _orgs_with(uow, "parked", now, 100_000)
        replayed = list(
            uow.execute(statement.values(state="pending", attempts=0).returning(stripe_unrouted_events.c.event_id)).scalars()
        )
        uow.commit()
    for org_id in orgs:
        with UnitOfWork(database, org_id=org_id) as uow:
            statement = update(stripe_events).where(stripe_events.c.org_id == org_id, stripe_events.c.state == "parked")
            if event_ids:
                statement = statement.where(stripe_events.c.event_id.in_(event_ids))
            replayed += uow.execute(
                statement.values(state="pending", attempts=0).returning(stripe_events.c.event_id)
            ).scalars()
            uow.commit()
    _send(replayed)
    return replayed


def _send(event_ids: Iterable[str]) -> None:
    ids = list(event_ids)
    for start in range(0, len(ids), SEND_CHUNK):
        send(APPLY_ACTOR, ids[start : start + SEND_CHUNK])


@dataclass(frozen=True)
class EventRecord:
    """Where a stored event is (`org_id`: None while no org owns its customer) and what
    became of it (`reason`: why it was parked or refused, or why it waits)."""

    event_id: str
    event_type: str
    state: str
    org_id: str | None
    stripe_customer_id: str | None
    attempts: int
    reason: str | None
    received_at: dt.datetime


_RECORD_COLUMNS = (
    stripe_events.c.event_id, stripe_events.c.event_type, stripe_events.c.state, stripe_events.c.org_id,
    stripe_events.c.stripe_customer_id, stripe_events.c.attempts, stripe_events.c.last_error, stripe_events.c.received_at,
)
_UNROUTED_COLUMNS = (
    stripe_unrouted_events.c.event_id, stripe_unrouted_events.c.event_type, stripe_unrouted_events.c.state,
    stripe_unrouted_events.c.stripe_customer_id, stripe_unrouted_events.c.attempts, stripe_unrouted_events.c.received_at,
)


def _record(row: Any) -> EventRecord:
    return EventRecord(row.event_id, row.event_type, row.state, row.org_id, row.stripe_customer_id, row.attempts,
                       row.last_error, row.received_at)


def _unrouted_record(row: Any) -> EventRecord:
    return EventRecord(row.event_id, row.event_type, row.state, None, row.stripe_customer_id, row.attempts,
                       inbox_routes.reason(row.stripe_customer_id), row.received_at)


def find(*, database: Database, event_ids: Sequence[str]) -> dict[str, EventRecord]:
    """The stored events among `event_ids`, each read where it lives (each org's in a unit
    of work bound to it). Of an event no org owned only its id may be left: state "ignored"
    (not a handled type), or "expired" (it waited past its retention)."""
    with UnitOfWork(database) as uow:
        ids = uow.execute(
            select(stripe_event_ids).where(stripe_event_ids.c.event_id.in_(sorted(set(event_ids))))
        ).all()
        unrouted = [row.event_id for row in ids if row.org_id is None]
        found = {
            row.event_id: _unrouted_record(row)
            for row in uow.execute(select(*_UNROUTED_COLUMNS).where(stripe_unrouted_events.c.event_id.in_(unrouted)))
        }
    for row in ids:
        if row.org_id is None and row.event_id not in found:
            state = "expired" if row.event_type in HANDLERS else "ignored"
            found[row.event_id] = EventRecord(row.event_id, row.event_type, state, None, None, 0, None, row.received_at)
    by_org: dict[str, list[str]] = {}
    for row in ids:
        if row.org_id is not None:
            by_org.setdefault(row.org_id, []).append(row.event_id)
    for org_id, org_events in sorted(by_org.items()):
        with UnitOfWork(database, org_id=org_id) as uow:
            for row in uow.execute(select(*_RECORD_COLUMNS).where(stripe_events.c.event_id.in_(org_events))):
                found[row.event_id] = _record(row)
    return found


def parked(*, database: Database, limit: int = 100) -> list[dict[str, Any]]:
    """Parked events, oldest first (for `nobill stripe replay --list`): each a dict of
    event_id, event_type, stripe_customer_id, last_error, received_at and org_id."""
    now = dt.datetime.now(dt.timezone.utc)
    records: list[EventRecord] = []
    with UnitOfWork(database) as uow:
        records += [
            _unrouted_record(row)
            for row in uow.execute(
                select(*_UNROUTED_COLUMNS).where(stripe_unrouted_events.c.state == "parked")
                .order_by(stripe_unrouted_events.c.received_at).limit(limit)
            )
        ]
        orgs = _orgs_with(uow, "parked", now, limit)
    for org_id in orgs:
        with UnitOfWork(database, org_id=org_id) as uow:
            records += [
                _record(row)
                for row in uow.execute(
                    select(*_RECORD_COLUMNS)
                    .where(stripe_events.c.org_id == org_id, stripe_events.c.state == "parked")
                    .order_by(stripe_events.c.received_at).limit(limit)
                )
            ]
    records.sort(key=lambda record: record.received_at)
    return [
        {"event_id": r.event_id, "event_type": r.event_type, "stripe_customer_id": r.stripe_customer_id,
         "last_error": r.reason, "received_at": r.received_at, "org_id": r.org_id}
        for r in records[:limit]
    ]

"""Stripe's webhooks: IngestStripeEvent verifies and stores each event under its Stripe
id (the inbox, acknowledged only once stored); the apply actor routes it to its org and
applies it convergently, by re-reading the object from Stripe. One table of handlers;
every other event type is stored and ignored. An event whose customer no org owns is
retried, then parked, and can be replayed (`nobill stripe replay`)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from nobill import metrics
from nobill.audit.actors import AuditContext
from nobill.billing import accounts, actors_context, invoices, service, subscriptions
from nobill.billing.tables import stripe_events
from nobill.db.database import Database
from nobill.db.unit_of_work import UnitOfWork
from nobill.errors import InvalidArgument
from nobill.jobs.send import send
from nobill.stripe.errors import StripePermanent
from nobill.stripe.gateway import StripeGateway
from nobill.stripe.webhooks import InvalidWebhook, verify_event

log = logging.getLogger("nobill.billing.inbox")

APPLY_ACTOR = "nobill.billing.apply_stripe_event"
SWEEP_GRACE = dt.timedelta(seconds=30)


class UnknownCustomer(Exception):
    """No org owns the event's customer (yet): retried, then parked."""


@dataclass(frozen=True)
class Ingested:
    event_id: str
    event_type: str
    duplicate: bool


@dataclass(frozen=True)
class Applying:
    """What a handler gets: the org's unit of work, Stripe, the event, the audit context."""

    uow: UnitOfWork
    org_id: str
    gateway: StripeGateway
    event: dict[str, Any]
    context: AuditContext
    seat_sync_delay: float

    @property
    def object(self) -> dict[str, Any]:
        return self.event["data"]["object"]


def _apply_subscription(applying: Applying, subscription_id: str | None) -> None:
    if not subscription_id:
        return
    snapshot = applying.gateway.retrieve_subscription(subscription_id)
    subscriptions.apply_subscription_snapshot(
        uow=applying.uow, org_id=applying.org_id, snapshot=snapshot, context=applying.context
    )
    # Members added between checkout and now: one coalesced seat sync.
    seats = subscriptions.seat_quantity(snapshot)
    if seats is not None and seats != subscriptions.member_count(uow=applying.uow):
        service.request_seat_sync(
            uow=applying.uow, org_id=applying.org_id, context=applying.context, delay_seconds=applying.seat_sync_delay
        )


def _checkout_completed(applying: Applying) -> None:
    if applying.object.get("mode") == "subscription":
        subscription = applying.object.get("subscription")
        _apply_subscription(applying, subscription.get("id") if isinstance(subscription, dict) else subscription)


def _subscription_changed(applying: Applying) -> None:
    _apply_subscription(applying, applying.object["id"])


def _invoice_changed(applying: Applying) -> None:
    invoice = applying.gateway.retrieve_invoice(applying.object["id"])
    invoices.apply_invoice_snapshot(uow=applying.uow, org_id=applying.org_id, invoice=invoice)
    _apply_subscription(applying, invoices.subscription_of(invoice))


# The one table of handled event types; everything else is stored and ignored.
HANDLERS: dict[str, Callable[[Applying], None]] = {
    "checkout.session.completed": _checkout_completed,
    "customer.subscription.created": _subscription_changed,
    "customer.subscription.updated": _subscription_changed,
    "customer.subscription.deleted": _subscription_changed,
    "invoice.paid": _invoice_changed,
    "invoice.payment_failed": _invoice_changed,
}


def _customer_of(event: dict[str, Any]) -> str | None:
    obj = event["data"]["object"]
    if obj.get("object") == "customer":
        return obj.get("id")
    customer = obj.get("customer")
    if isinstance(customer, dict):
        return customer.get("id")
    return customer if isinstance(customer, str) else None


def ingest(*, uow: UnitOfWork, payload: bytes, signature_header: str, secrets: tuple[str, ...]) -> Ingested:
    """Verify the signature and store the event (in the caller's transaction, which must
    commit before Stripe is answered). A redelivered id changes nothing."""
    try:
        event = verify_event(payload, signature_header, secrets)
    except InvalidWebhook as error:
        metrics.webhook_event("unknown", "rejected")
        raise InvalidArgument(str(error), field="payload") from None
    handled = event["type"] in HANDLERS
    stored = uow.execute(
        pg_insert(stripe_events)
        .values(
            event_id=event["id"],
            event_type=event["type"],
            stripe_customer_id=_customer_of(event),
            payload=event,
            state="pending" if handled else "ignored",
            # The database's clock, like the apply actor's read_from (see _coalesce).
            received_at=func.clock_timestamp(),
        )
        .on_conflict_do_nothing()
        .returning(stripe_events.c.event_id)
    ).scalar_one_or_none()
    if stored and handled:
        uow.after_commit(lambda: send(APPLY_ACTOR, event["id"]))
    result = "duplicate" if stored is None else "stored" if handled else "ignored"
    uow.after_commit(lambda: metrics.webhook_event(event["type"], result))
    return Ingested(event["id"], event["type"], duplicate=stored is None)


def apply(*, database: Database, gateway: StripeGateway, event_id: str, max_attempts: int, seat_sync_delay: float) -> str:
    """Apply one stored event in its org's unit of work. Returns "applied", "parked" or
    "skipped"; raises UnknownCustomer / StripeTransient so the actor retries."""
    event_type, result = _apply(
        database=database, gateway=gateway, event_id=event_id, max_attempts=max_attempts, seat_sync_delay=seat_sync_delay
    )
    if result != "skipped":
        metrics.webhook_event(event_type, result)
    return result


def _apply(
    *, database: Database, gateway: StripeGateway, event_id: str, max_attempts: int, seat_sync_delay: float
) -> tuple[str, str]:
    with UnitOfWork(database) as uow:
        row = uow.execute(select(stripe_events).where(stripe_events.c.event_id == event_id)).one_or_none()
        if row is None or row.state != "pending":
            return (row.event_type if row else ""), "skipped"
        org_id = accounts.org_for_customer(uow=uow, stripe_customer_id=row.stripe_customer_id or "")
        if org_id is None:
            attempts = row.attempts + 1
            parked = attempts >= max_attempts
            uow.execute(
                update(stripe_events)
                .where(stripe_events.c.event_id == event_id, stripe_events.c.state == "pending")
                .values(
                    attempts=attempts,
                    state="parked" if parked else "pending",
                    last_error=f"no organization owns Stripe customer {row.stripe_customer_id}",
                )
            )
            uow.commit()
            if parked:
                log.error("stripe event parked: unknown customer",
                          extra={"event_id": event_id, "event_type": row.event_type, "customer": row.stripe_customer_id})
                return row.event_type, "parked"
            raise UnknownCustomer(f"no organization owns Stripe customer {row.stripe_customer_id} (yet)")
    with UnitOfWork(database, org_id=org_id) as uow:
        # The row lock makes concurrent deliveries of the same event apply it once.
        locked = uow.execute(
            select(stripe_events.c.state, stripe_events.c.payload)
            .where(stripe_events.c.event_id == event_id)
            .with_for_update(skip_locked=True)
        ).one_or_none()
        if locked is None or locked.state != "pending":
            return row.event_type, "skipped"
        # Events of one org apply one at a time, and each re-reads Stripe only once it holds
        # the org's subscription lock: the last to apply read Stripe last, so no older
        # snapshot can overwrite a newer one.
        subscriptions.get(uow=uow, org_id=org_id, for_update=True)
        read_from = uow.execute(select(func.clock_timestamp())).scalar_one()
        applying = Applying(uow, org_id, gateway, locked.payload, actors_context.stripe_event(event_id), seat_sync_delay)
        try:
            HANDLERS[locked.payload["type"]](applying)
        except StripePermanent as error:
            # The object is gone or refused (e.g. deleted in the dashboard): nothing to converge to.
            uow.execute(
                update(stripe_events).where(stripe_events.c.event_id == event_id)
                .values(state="parked", org_id=org_id, last_error=error.message, attempts=stripe_events.c.attempts + 1)
            )
            uow.commit()
            log.error(
                "stripe event parked: Stripe refused the re-read",
                extra={"event_id": event_id, "event_type": locked.payload["type"], "error": error.message},
            )
            return row.event_type, "parked"
        uow.execute(
            update(stripe_events)
            .where(stripe_events.c.event_id == event_id)
            .values(state="applied", org_id=org_id, applied_at=dt.datetime.now(dt.timezone.utc), last_error=None,
                    attempts=stripe_events.c.attempts + 1)
        )
        _coalesce(uow, org_id=org_id, event=locked.payload, read_from=read_from)
        uow.commit()
    return row.event_type, "applied"


def _coalesce(uow: UnitOfWork, *, org_id: str, event: dict[str, Any], read_from: dt.datetime) -> None:
    """Mark applied the other pending events of the same subscription that were stored
    before this one re-read it: Stripe's state we just applied already includes them, so
    a burst of updates costs one Stripe read. (Rows another actor holds are left to it.)"""
    if not event["type"].startswith("customer.subscription."):
        return
    same = (
        select(stripe_events.c.event_id)
        .where(
            stripe_events.c.state == "pending",
            stripe_events.c.event_type.like("customer.subscription.%"),
            stripe_events.c.stripe_customer_id == _customer_of(event),
            stripe_events.c.payload["data"]["object"]["id"].astext == event["data"]["object"]["id"],
            stripe_events.c.received_at <= read_from,
            stripe_events.c.event_id != event["id"],
        )
        .with_for_update(skip_locked=True)
    )
    covered = list(uow.execute(same).scalars())
    if covered:
        uow.execute(
            update(stripe_events)
            .where(stripe_events.c.event_id.in_(covered))
            .values(state="applied", org_id=org_id, applied_at=dt.datetime.now(dt.timezone.utc),
                    last_error=f"covered by {event['id']}")
        )


def sweep(*, database: Database, now: dt.datetime | None = None, limit: int = 1000) -> int:
    """Hand stored-but-unapplied events (older than a grace period) to the actor again."""
    now = now or dt.datetime.now(dt.timezone.utc)
    with UnitOfWork(database) as uow:
        event_ids = list(
            uow.execute(
                select(stripe_events.c.event_id)
                .where(stripe_events.c.state == "pending", stripe_events.c.received_at <= now - SWEEP_GRACE)
                .order_by(stripe_events.c.received_at)
                .limit(limit)
            ).scalars()
        )
    for event_id in event_ids:
        send(APPLY_ACTOR, event_id)
    if event_ids:
        log.info("inbox sweep re-sent events", extra={"events": len(event_ids)})
    return len(event_ids)


def replay(*, database: Database, event_ids: list[str] | None = None) -> list[str]:
    """Put parked events (all, or those named) back to pending and hand them to the actor."""
    with UnitOfWork(database) as uow:
        statement = update(stripe_events).where(stripe_events.c.state == "parked")
        if event_ids:
            statement = statement.where(stripe_events.c.event_id.in_(event_ids))
        replayed = list(
            uow.execute(statement.values(state="pending", attempts=0).returning(stripe_events.c.event_id)).scalars()
        )
        uow.commit()
    for event_id in replayed:
        send(APPLY_ACTOR, event_id)
    return replayed


def parked(*, database: Database, limit: int = 100) -> list[dict[str, Any]]:
    """Parked events, oldest first (for `nobill stripe replay --list`)."""
    with UnitOfWork(database) as uow:
        rows = uow.execute(
            select(stripe_events.c.event_id, stripe_events.c.event_type, stripe_events.c.stripe_customer_id,
                   stripe_events.c.last_error, stripe_events.c.received_at)
            .where(stripe_events.c.state == "parked")
            .order_by(stripe_events.c.received_at)
            .limit(limit)
        ).all()
    return [dict(row._mapping) for row in rows]

"""The Stripe outbox: every Stripe mutation NOBill decides on its own is a row committed
with the change that asks for it. After commit the row is handed to a Dramatiq actor;
the periodic sweep hands over whatever a crash between commit and enqueue left behind.

A row runs under its row lock (a second runner skips it), calls Stripe with the row's
idempotency key, and records the outcome in the same transaction: done, retried later
(transient failures, with backoff and jitter), or failed for good (permanent failures:
logged, audited, shown by GetSubscription as `sync_error`)."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from nobill import ids
from nobill.audit import service as audit
from nobill.audit.actors import AuditContext
from nobill.billing import actors_context, due_work, subscriptions
from nobill.billing.tables import stripe_outbox
from nobill.db.database import Database
from nobill.db.unit_of_work import UnitOfWork
from nobill.jobs.send import send
from nobill.stripe.errors import StripePermanent, StripeTransient
from nobill.stripe.gateway import StripeGateway

log = logging.getLogger("nobill.billing.outbox")

RUN_ACTOR = "nobill.billing.run_outbox_row"
# The sweep leaves fresh rows to the after-commit hand-over.
SWEEP_GRACE = dt.timedelta(seconds=30)


@dataclass(frozen=True)
class OutboxRow:
    org_id: str
    outbox_id: str
    kind: str
    payload: dict[str, Any]
    idempotency_key: str
    state: str
    attempts: int
    requested_by: AuditContext
    created_at: dt.datetime


Handler = Callable[..., None]
HANDLERS: dict[str, Handler] = {}


def handler(kind: str) -> Callable[[Handler], Handler]:
    """Register the function that performs rows of `kind`: f(*, uow, gateway, row)."""

    def register(function: Handler) -> Handler:
        HANDLERS[kind] = function
        return function

    return register


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _enqueue_after_commit(uow: UnitOfWork, org_id: str, outbox_id: str, delay_seconds: float = 0) -> None:
    uow.after_commit(lambda: send(RUN_ACTOR, org_id, outbox_id, delay_seconds=delay_seconds))


def add(
    *,
    uow: UnitOfWork,
    org_id: str,
    kind: str,
    payload: dict[str, Any],
    context: AuditContext,
    idempotency_key: str | None = None,
    delay_seconds: float = 0,
) -> str:
    """Queue a Stripe mutation with the unit of work's change; returns the row id."""
    outbox_id = ids.new_id("obx")
    now = _now()
    run_at = now + dt.timedelta(seconds=delay_seconds)
    uow.execute(
        insert(stripe_outbox).values(
            org_id=org_id,
            outbox_id=outbox_id,
            kind=kind,
            payload=payload,
            idempotency_key=idempotency_key or f"nobill-{kind}-{org_id}-{outbox_id}",
            state="pending",
            next_attempt_at=run_at,
            requested_by=actors_context.to_json(context),
            created_at=now,
        )
    )
    due_work.mark(uow=uow, org_id=org_id, kind=due_work.OUTBOX, due_at=run_at + SWEEP_GRACE)
    _enqueue_after_commit(uow, org_id, outbox_id, delay_seconds)
    return outbox_id


def add_coalesced(
    *, uow: UnitOfWork, org_id: str, kind: str, payload: dict[str, Any], context: AuditContext, delay_seconds: float
) -> str | None:
    """Like `add`, unless a row of `kind` is already pending for the org (it will do the
    work, reading the state when it runs): returns the new row id, or None."""
    outbox_id = ids.new_id("obx")
    now = _now()
    run_at = now + dt.timedelta(seconds=delay_seconds)
    created = uow.execute(
        pg_insert(stripe_outbox)
        .values(
            org_id=org_id,
            outbox_id=outbox_id,
            kind=kind,
            payload=payload,
            idempotency_key=f"nobill-{kind}-{org_id}-{outbox_id}",
            state="pending",
            next_attempt_at=run_at,
            requested_by=actors_context.to_json(context),
            created_at=now,
        )
        .on_conflict_do_nothing()
        .returning(stripe_outbox.c.outbox_id)
    ).scalar_one_or_none()
    if created is None:
        return None
    due_work.mark(uow=uow, org_id=org_id, kind=due_work.OUTBOX, due_at=run_at + SWEEP_GRACE)
    _enqueue_after_commit(uow, org_id, outbox_id, delay_seconds)
    return created


def row_of(record: Any) -> OutboxRow:
    return OutboxRow(
        org_id=record.org_id,
        outbox_id=record.outbox_id,
        kind=record.kind,
        payload=record.payload,
        idempotency_key=record.idempotency_key,
        state=record.state,
        attempts=record.attempts,
        requested_by=actors_context.from_json(record.requested_by),
        created_at=record.created_at,
    )


def lock_pending(*, uow: UnitOfWork, outbox_id: str, wait: bool = False) -> OutboxRow | None:
    """The pending row, locked; None when it is done, failed, missing, or (without
    `wait`) being run by someone else right now."""
    statement = select(stripe_outbox).where(stripe_outbox.c.outbox_id == outbox_id)
    statement = statement.with_for_update() if wait else statement.with_for_update(skip_locked=True)
    record = uow.execute(statement).one_or_none()
    if record is None or record.state != "pending":
        return None
    return row_of(record)


def backoff(attempts: int) -> dt.timedelta:
    """Exponential backoff with full jitter: up to 2^attempts seconds, capped at 10 minutes."""
    return dt.timedelta(seconds=random.uniform(1, min(600, 2 ** min(attempts, 10))))


def perform(*, uow: UnitOfWork, gateway: StripeGateway, row: OutboxRow) -> str:
    """Run a locked row and record its outcome in `uow` (the caller commits). Returns
    "done" or "failed"; re-raises StripeTransient after recording the attempt."""
    try:
        HANDLERS[row.kind](uow=uow, gateway=gateway, row=row)
    except StripeTransient as error:
        uow.execute(
            update(stripe_outbox)
            .where(stripe_outbox.c.outbox_id == row.outbox_id)
            .values(attempts=row.attempts + 1, last_error=error.message, next_attempt_at=_now() + backoff(row.attempts + 1))
        )
        raise
    except StripePermanent as error:
        uow.execute(
            update(stripe_outbox)
            .where(stripe_outbox.c.outbox_id == row.outbox_id)
            .values(state="failed", attempts=row.attempts + 1, last_error=error.message, completed_at=_now())
        )
        message = f"{row.kind} failed: {error.message}"
        subscriptions.set_sync_error(uow=uow, org_id=row.org_id, error=message)
        audit.record(
            uow=uow,
            context=row.requested_by,
            action="billing.stripe_call_failed",
            target_type="stripe_outbox",
            target_id=row.outbox_id,
            after={"kind": row.kind, "error": error.message, "status": error.status, "code": error.code},
        )
        log.error(
            "stripe outbox row failed for good",
            extra={"org_id": row.org_id, "outbox_id": row.outbox_id, "kind": row.kind, "error": error.message},
        )
        return "failed"
    complete(uow=uow, row=row)
    return "done"


def complete(*, uow: UnitOfWork, row: OutboxRow) -> None:
    """Mark a locked row done (its Stripe call succeeded), in `uow`."""
    uow.execute(
        update(stripe_outbox)
        .where(stripe_outbox.c.outbox_id == row.outbox_id)
        .values(state="done", attempts=row.attempts + 1, last_error=None, completed_at=_now())
    )
    # A later success of the same kind of change supersedes its earlier failure.
    current = subscriptions.get(uow=uow, org_id=row.org_id)
    if current.sync_error and current.sync_error.startswith(f"{row.kind} failed"):
        subscriptions.set_sync_error(uow=uow, org_id=row.org_id, error=None)


def run(*, database: Database, gateway: StripeGateway, org_id: str, outbox_id: str) -> str:
    """Run one row (the actor's body). Returns "done", "failed" or "skipped"; raises
    StripeTransient (after committing the attempt) so the actor retries."""
    with UnitOfWork(database, org_id=org_id) as uow:
        row = lock_pending(uow=uow, outbox_id=outbox_id)
        if row is None:
            return "skipped"
        try:
            outcome = perform(uow=uow, gateway=gateway, row=row)
        except StripeTransient:
            uow.commit()
            raise
        uow.commit()
        return outcome


def retry_failed(*, uow: UnitOfWork, org_id: str, context: AuditContext) -> list[str]:
    """Put the org's failed rows back to pending (after the cause was fixed, e.g. a
    missing price synced) and hand them to the worker; returns their ids."""
    now = _now()
    retried = list(
        uow.execute(
            update(stripe_outbox)
            .where(stripe_outbox.c.state == "failed")
            .values(state="pending", next_attempt_at=now, completed_at=None)
            .returning(stripe_outbox.c.outbox_id)
        ).scalars()
    )
    if retried:
        due_work.mark(uow=uow, org_id=org_id, kind=due_work.OUTBOX, due_at=now + SWEEP_GRACE)
        subscriptions.set_sync_error(uow=uow, org_id=org_id, error=None)
        audit.record(
            uow=uow, context=context, action="billing.stripe_calls_retried", target_type="organization",
            target_id=org_id, after={"outbox_ids": retried},
        )
        uow.after_commit(functools.partial(_send_all, org_id, retried))
    return retried


def _send_all(org_id: str, outbox_ids: list[str]) -> None:
    for outbox_id in outbox_ids:
        send(RUN_ACTOR, org_id, outbox_id)


def sweep(*, database: Database, now: dt.datetime | None = None) -> int:
    """Hand every due pending row to the actor again; returns how many were sent."""
    now = now or _now()
    with UnitOfWork(database) as uow:
        orgs = due_work.due_orgs(uow=uow, kind=due_work.OUTBOX, now=now)
    sent = 0
    for org_id in orgs:
        with UnitOfWork(database, org_id=org_id) as uow:
            if due_work.lock(uow=uow, org_id=org_id, kind=due_work.OUTBOX) is None:
                continue
            pending = uow.execute(
                select(stripe_outbox.c.outbox_id, stripe_outbox.c.next_attempt_at)
                .where(stripe_outbox.c.state == "pending")
                .order_by(stripe_outbox.c.next_attempt_at)
            ).all()
            if not pending:
                due_work.clear(uow=uow, org_id=org_id, kind=due_work.OUTBOX)
            else:
                due_work.reschedule(
                    uow=uow, org_id=org_id, kind=due_work.OUTBOX,
                    due_at=max(now, min(row.next_attempt_at for row in pending)) + SWEEP_GRACE,
                )
            due = [row.outbox_id for row in pending if row.next_attempt_at <= now]
            uow.after_commit(functools.partial(_send_all, org_id, due))
            sent += len(due)
            uow.commit()
    if sent:
        log.info("outbox sweep re-sent rows", extra={"rows": sent, "orgs": len(orgs)})
    return sent

"""The Stripe outbox: every Stripe mutation NOBill decides on its own is a row committed
with the change that asks for it. After commit the row is handed to a Dramatiq actor;
the periodic sweep hands over whatever a crash between commit and enqueue left behind.

A row runs under its row lock (a second runner skips it), calls Stripe with the row's
idempotency key, and records the outcome in the same transaction: done, retried later
(transient failures, with backoff and jitter), or failed for good (permanent failures:
logged, audited, shown by GetSubscription as `sync_error`).

A *staged* kind (nobill/billing/outbox_kinds.py, STAGED: the seat sync) holds nothing while Stripe answers: a
first short unit of work locks the row, reads and decides, claims the row for a while and
commits; Stripe is called with no transaction open, with a key from the row and what was
decided; a second short unit of work takes the org's subscription row (the lock membership
changes take first), then the row, records the result and checks the state again: the row
is done, or runs again when what it decided on changed meanwhile."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from sqlalchemy import func, insert, select, text, update
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
# A staged row whose Stripe call is under way is not due for the sweep before this (a run
# that crashed meanwhile is swept after it).
CLAIM = dt.timedelta(minutes=2)


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


# What performs rows of a kind: f(*, uow, gateway, row). The table of kinds is
# nobill/billing/outbox_kinds.py.
Handler = Callable[..., None]


@dataclass(frozen=True)
class StagedHandler:
    """How a staged kind runs (see the module docstring): `prepare(*, uow, row)` reads and
    decides in the first unit of work, returning a plan; `call(*, gateway, row, plan)` calls
    Stripe with no transaction open, returning a result; `record(*, uow, row, plan, result)`
    records it in the second unit of work (the row as it is now, in any state) and returns
    None when the row's work is done, or the seconds after which to run it again."""

    prepare: Callable[..., Any]
    call: Callable[..., Any]
    record: Callable[..., float | None]


def _kinds() -> ModuleType:
    # NOTE: imported when a row runs, not at import: the handlers' modules queue rows
    # through this one, so the table cannot be imported before them.
    from nobill.billing import outbox_kinds

    return outbox_kinds


def version_of(row: OutboxRow) -> int:
    """How many times `add_coalesced` folded another request into the row: a request that
    arrives while the row's Stripe call is under way changes it."""
    return int(row.payload.get("version", 0))


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
    work, reading the state when it runs; its `version_of` goes up by one, so a run already
    under way sees that it must run again): returns the new row id, or None."""
    outbox_id = ids.new_id("obx")
    now = _now()
    run_at = now + dt.timedelta(seconds=delay_seconds)
    statement = pg_insert(stripe_outbox).values(
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
    # Only the seat sync has a unique index over pending rows (one pending row per org):
    # other kinds never conflict here and are simply added.
    version = func.coalesce(stripe_outbox.c.payload["version"].as_integer(), 0) + 1
    returned = uow.execute(
        statement.on_conflict_do_update(
            index_elements=["org_id", "kind"],
            index_where=text("state = 'pending' AND kind = 'sync_seats'"),
            set_={"payload": func.jsonb_set(stripe_outbox.c.payload, text("'{version}'"), func.to_jsonb(version))},
        ).returning(stripe_outbox.c.outbox_id)
    ).scalar_one()
    if returned != outbox_id:
        return None
    due_work.mark(uow=uow, org_id=org_id, kind=due_work.OUTBOX, due_at=run_at + SWEEP_GRACE)
    _enqueue_after_commit(uow, org_id, outbox_id, delay_seconds)
    return outbox_id


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
        _kinds().HANDLERS[row.kind](uow=uow, gateway=gateway, row=row)
    except StripeTransient as error:
        _record_transient(uow=uow, row=row, error=error)
        raise
    except StripePermanent as error:
        _record_failed(uow=uow, row=row, error=error)
        return "failed"
    complete(uow=uow, row=row)
    return "done"


def _record_transient(*, uow: UnitOfWork, row: OutboxRow, error: StripeTransient) -> None:
    uow.execute(
        update(stripe_outbox)
        .where(stripe_outbox.c.outbox_id == row.outbox_id)
        .values(attempts=row.attempts + 1, last_error=error.message, next_attempt_at=_now() + backoff(row.attempts + 1))
    )


def _record_failed(*, uow: UnitOfWork, row: OutboxRow, error: StripePermanent) -> None:
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
    """Run one row (the actor's body). Returns "done", "failed", "skipped", or "again" (a
    staged row whose state changed while Stripe answered: it is queued to run again); raises
    StripeTransient (after committing the attempt) so the actor retries."""
    with UnitOfWork(database, org_id=org_id) as uow:
        kind = uow.execute(select(stripe_outbox.c.kind).where(stripe_outbox.c.outbox_id == outbox_id)).scalar_one_or_none()
        # NOTE: a staged row is locked only briefly (never across a Stripe call), also by a
        # membership change folding into it: wait for that rather than skip the row and leave
        # it to the sweep.
        row = lock_pending(uow=uow, outbox_id=outbox_id, wait=kind in _kinds().STAGED)
        if row is None:
            return "skipped"
        staged = _kinds().STAGED.get(row.kind)
        if staged is not None:
            plan = staged.prepare(uow=uow, row=row)
            _claim(uow=uow, row=row)
            uow.commit()
        else:
            try:
                outcome = perform(uow=uow, gateway=gateway, row=row)
            except StripeTransient:
                uow.commit()
                raise
            uow.commit()
            return outcome
    assert staged is not None
    return _run_staged(database=database, gateway=gateway, staged=staged, row=row, plan=plan)


def _claim(*, uow: UnitOfWork, row: OutboxRow) -> None:
    """Keep the sweep from handing the row to a second runner while its Stripe call runs."""
    uow.execute(
        update(stripe_outbox).where(stripe_outbox.c.outbox_id == row.outbox_id).values(next_attempt_at=_now() + CLAIM)
    )


def _lock_any(*, uow: UnitOfWork, outbox_id: str) -> OutboxRow | None:
    """The row in whatever state, locked (waiting for a runner that holds it)."""
    record = uow.execute(select(stripe_outbox).where(stripe_outbox.c.outbox_id == outbox_id).with_for_update()).one_or_none()
    return row_of(record) if record is not None else None


def _run_staged(*, database: Database, gateway: StripeGateway, staged: StagedHandler, row: OutboxRow, plan: Any) -> str:
    """The rest of a staged row's run, once its first unit of work has committed: Stripe with
    no transaction open, then the second unit of work."""
    try:
        result = staged.call(gateway=gateway, row=row, plan=plan)
    except StripeTransient as error:
        with UnitOfWork(database, org_id=row.org_id) as uow:
            current = _lock_any(uow=uow, outbox_id=row.outbox_id)
            if current is not None and current.state == "pending":
                _record_transient(uow=uow, row=current, error=error)
            uow.commit()
        raise
    except StripePermanent as error:
        with UnitOfWork(database, org_id=row.org_id) as uow:
            subscriptions.get(uow=uow, org_id=row.org_id, for_update=True)  # the one lock order (see below)
            current = _lock_any(uow=uow, outbox_id=row.outbox_id)
            if current is None or current.state != "pending":
                return "skipped"
            _record_failed(uow=uow, row=current, error=error)
            uow.commit()
        return "failed"
    with UnitOfWork(database, org_id=row.org_id) as uow:
        # NOTE: the org's subscription row first, then the outbox row: the order in which
        # membership changes take them (they lock the subscription row, then fold their
        # request into this row), so the two never deadlock, and a membership change either
        # committed before this check or comes after this row is done (and adds a new one).
        subscriptions.get(uow=uow, org_id=row.org_id, for_update=True)
        current = _lock_any(uow=uow, outbox_id=row.outbox_id)
        if current is None:
            return "skipped"
        again_after = staged.record(uow=uow, row=current, plan=plan, result=result)
        if current.state == "pending" and again_after is None:
            complete(uow=uow, row=current)
            outcome = "done"
        elif current.state == "pending" and again_after is not None:
            # What the call acted on changed while Stripe answered: the same row runs again.
            run_at = _now() + dt.timedelta(seconds=again_after)
            uow.execute(
                update(stripe_outbox).where(stripe_outbox.c.outbox_id == current.outbox_id).values(next_attempt_at=run_at)
            )
            due_work.mark(uow=uow, org_id=row.org_id, kind=due_work.OUTBOX, due_at=run_at + SWEEP_GRACE)
            _enqueue_after_commit(uow, row.org_id, current.outbox_id, again_after)
            outcome = "again"
        elif again_after is not None:
            # Another runner finished the row meanwhile, but this call's Stripe change may have
            # landed after its own: a new row sets things right.
            add_coalesced(
                uow=uow, org_id=row.org_id, kind=row.kind, payload={}, context=row.requested_by,
                delay_seconds=again_after,
            )
            outcome = "again"
        else:
            outcome = "skipped"
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


def state_of(*, uow: UnitOfWork, outbox_id: str) -> str | None:
    """The row's state now ("pending", "done", "failed"), None if there is no such row: what a
    caller whose run was "skipped" (another runner had the row) reports."""
    return uow.execute(select(stripe_outbox.c.state).where(stripe_outbox.c.outbox_id == outbox_id)).scalar_one_or_none()

"""The global index of which orgs have due billing work (billing_due_work): sweeps read
only org ids from it, then do each org's work in a unit of work bound to that org."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from nobill.billing.tables import billing_due_work
from nobill.db.unit_of_work import UnitOfWork

OUTBOX = "outbox"
TRIAL_END = "trial_end"


def mark(*, uow: UnitOfWork, org_id: str, kind: str, due_at: dt.datetime) -> None:
    """Record that `org_id` has `kind` work due at `due_at` (the later mark wins)."""
    statement = pg_insert(billing_due_work).values(kind=kind, org_id=org_id, due_at=due_at)
    uow.execute(statement.on_conflict_do_update(index_elements=["kind", "org_id"], set_={"due_at": statement.excluded.due_at}))


def due_orgs(*, uow: UnitOfWork, kind: str, now: dt.datetime, limit: int = 1000) -> list[str]:
    """Org ids with `kind` work due by `now`, oldest first."""
    return list(
        uow.execute(
            select(billing_due_work.c.org_id)
            .where(billing_due_work.c.kind == kind, billing_due_work.c.due_at <= now)
            .order_by(billing_due_work.c.due_at)
            .limit(limit)
        ).scalars()
    )


def lock(*, uow: UnitOfWork, org_id: str, kind: str) -> dt.datetime | None:
    """Lock the org's mark for `kind` (a concurrent `mark` waits for this transaction);
    returns its due time, or None when there is none."""
    return uow.execute(
        select(billing_due_work.c.due_at)
        .where(billing_due_work.c.kind == kind, billing_due_work.c.org_id == org_id)
        .with_for_update()
    ).scalar_one_or_none()


def reschedule(*, uow: UnitOfWork, org_id: str, kind: str, due_at: dt.datetime) -> None:
    uow.execute(
        update(billing_due_work)
        .where(billing_due_work.c.kind == kind, billing_due_work.c.org_id == org_id)
        .values(due_at=due_at)
    )


def clear(*, uow: UnitOfWork, org_id: str, kind: str) -> None:
    uow.execute(delete(billing_due_work).where(billing_due_work.c.kind == kind, billing_due_work.c.org_id == org_id))

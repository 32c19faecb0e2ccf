"""Rolling per-batch deltas into totals per (org, metric, billing period), exactly once:
the deltas taken are deleted in the same transaction that adds them to the totals, and
concurrent aggregators take disjoint rows (FOR UPDATE SKIP LOCKED)."""

from __future__ import annotations

from sqlalchemy import text

from nobill.db.database import Database
from nobill.db.unit_of_work import UnitOfWork

# ORDER BY: concurrent aggregators lock total rows in the same order (no deadlock).
_AGGREGATE = text(
    """WITH taken AS (
        DELETE FROM usage_deltas
        WHERE org_id = :org_id AND delta_id IN (
            SELECT delta_id FROM usage_deltas WHERE org_id = :org_id
            ORDER BY delta_id LIMIT :limit FOR UPDATE SKIP LOCKED)
        RETURNING metric, period_start, period_end, quantity, event_count
    ), summed AS (
        SELECT metric, period_start, max(period_end) AS period_end, sum(quantity) AS quantity,
               sum(event_count) AS event_count, count(*) AS deltas
        FROM taken GROUP BY metric, period_start
    ), upserted AS (
        INSERT INTO usage_totals (org_id, metric, period_start, period_end, quantity, event_count, updated_at)
        SELECT :org_id, metric, period_start, period_end, quantity, event_count, now()
        FROM summed ORDER BY metric, period_start
        ON CONFLICT (org_id, metric, period_start) DO UPDATE
        SET quantity = usage_totals.quantity + excluded.quantity,
            event_count = usage_totals.event_count + excluded.event_count,
            updated_at = excluded.updated_at
        RETURNING 1
    )
    SELECT coalesce((SELECT sum(deltas) FROM summed), 0)::bigint, (SELECT count(*) FROM upserted)"""
)

BATCH = 5_000


def aggregate(*, uow: UnitOfWork, org_id: str, limit: int = BATCH) -> int:
    """Move up to `limit` deltas of the org into its totals; returns how many were taken."""
    taken, _ = uow.execute(_AGGREGATE, {"org_id": org_id, "limit": limit}).one()
    return int(taken)


def aggregate_all(*, database: Database, org_id: str) -> int:
    """Aggregate every delta of the org waiting now, one transaction per chunk."""
    total = 0
    while True:
        with UnitOfWork(database, org_id=org_id) as uow:
            taken = aggregate(uow=uow, org_id=org_id)
            uow.commit()
        total += taken
        if taken < BATCH:
            return total


def orgs_with_deltas(*, database: Database) -> list[str]:
    """Org ids that have deltas waiting (the one look across orgs, ids only)."""
    with UnitOfWork(database) as uow:
        return list(uow.execute(text("SELECT nobill_usage_orgs_with_deltas()")).scalars())


def oldest_delta_age_seconds(*, uow: UnitOfWork) -> float | None:
    """How long the org's oldest waiting delta has waited (aggregation lag), or None."""
    value = uow.execute(
        text("SELECT extract(epoch FROM now() - min(created_at)) FROM usage_deltas")
    ).scalar_one()
    return None if value is None else float(value)

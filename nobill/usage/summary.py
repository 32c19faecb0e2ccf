"""Usage summaries: totals per metric and billing period, with what is not aggregated yet."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import text

from nobill.db.unit_of_work import UnitOfWork
from nobill.errors import InvalidArgument
from nobill.billing import accounts
from nobill.usage import periods, reporting
from nobill.usage.metrics import METRICS


@dataclass(frozen=True)
class MetricTotal:
    metric: str
    period_start: dt.datetime
    period_end: dt.datetime
    quantity: int
    event_count: int
    reported_quantity: int
    pending_quantity: int


@dataclass(frozen=True)
class Summary:
    totals: list[MetricTotal]
    billed: bool
    last_reconciliation: reporting.Reconciliation | None


_TOTALS = text(
    """SELECT metric, period_start, sum(quantity)::bigint, sum(event_count)::bigint, sum(reported)::bigint FROM (
        SELECT metric, period_start, quantity, event_count, reported_quantity AS reported FROM usage_totals
        WHERE org_id = :org_id AND period_start >= :start AND period_start < :end
          AND (:metric = '' OR metric = :metric)
        UNION ALL
        SELECT metric, period_start, quantity, event_count, 0 FROM usage_deltas
        WHERE org_id = :org_id AND period_start >= :start AND period_start < :end
          AND (:metric = '' OR metric = :metric)
    ) AS parts GROUP BY metric, period_start ORDER BY period_start, metric"""
)


def get(
    *, uow: UnitOfWork, org_id: str, metric: str = "", start: dt.datetime | None = None, end: dt.datetime | None = None
) -> Summary:
    """Totals of periods starting in [start, end) (default: the current period)."""
    if metric and metric not in METRICS:
        raise InvalidArgument(f"unknown metric {metric!r}; known: {', '.join(sorted(METRICS))}", field="metric")
    now = dt.datetime.now(dt.timezone.utc)
    if start is not None and end is not None and end <= start:
        raise InvalidArgument("end_time must be after start_time", field="end_time")
    # Totals are per period: a period is in the range when it starts inside it.
    start = periods.period_start(now if start is None else start)
    end = now if end is None else max(end, start + dt.timedelta(microseconds=1))
    # Pending = recorded but not yet in Stripe, for orgs whose usage Stripe charges.
    billed = reporting.bills_usage(accounts.get(uow=uow, org_id=org_id))
    rows = uow.execute(_TOTALS, {"org_id": org_id, "start": start, "end": end, "metric": metric})
    totals = [
        MetricTotal(
            metric=name,
            period_start=period_start,
            period_end=periods.period_end(period_start),
            quantity=quantity,
            event_count=count,
            reported_quantity=reported,
            pending_quantity=quantity - reported if billed else 0,
        )
        for name, period_start, quantity, count, reported in rows
    ]
    return Summary(totals=totals, billed=billed, last_reconciliation=reporting.last_reconciliation(uow=uow, org_id=org_id))

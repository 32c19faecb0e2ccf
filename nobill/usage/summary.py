"""Usage summaries: totals per metric and billing period, with what is not aggregated yet."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import text

from nobill.db.unit_of_work import UnitOfWork
from nobill.errors import InvalidArgument
from nobill.billing import accounts
from nobill.usage import reporting
from nobill.usage.gating import periods_of
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
    # Sums stay NUMERIC (totals are; no cast that could overflow); exact ints in Python.
    """SELECT metric, period_start, max(period_end), sum(quantity), sum(event_count), sum(reported) FROM (
        SELECT metric, period_start, period_end, quantity, event_count, reported_quantity AS reported FROM usage_totals
        WHERE org_id = :org_id AND period_start >= :start AND period_start < :end
          AND (:metric = '' OR metric = :metric)
        UNION ALL
        SELECT metric, period_start, period_end, quantity, event_count, 0 FROM usage_deltas
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
    account = accounts.get(uow=uow, org_id=org_id)
    # Totals are per period: a period is in the range when it starts inside it (by
    # default the org's current period).
    start = periods_of(account, now).current_start if start is None else start
    end = now if end is None else end
    # Pending = recorded but not yet in Stripe, for orgs whose usage Stripe charges.
    billed = reporting.bills_usage(account)
    rows = uow.execute(_TOTALS, {"org_id": org_id, "start": start, "end": end, "metric": metric})
    totals = [
        MetricTotal(
            metric=name,
            period_start=period_start,
            period_end=period_end,
            quantity=int(quantity),
            event_count=int(count),
            reported_quantity=int(reported),
            pending_quantity=int(quantity - reported) if billed else 0,
        )
        for name, period_start, period_end, quantity, count, reported in rows
    ]
    return Summary(totals=totals, billed=billed, last_reconciliation=reporting.last_reconciliation(uow=uow, org_id=org_id))

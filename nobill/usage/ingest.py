"""Recording a batch of usage events: bulk validation, COPY into a staging table, one
INSERT that drops keys already stored (this window or the previous one) and writes the
batch's per-metric deltas for the aggregators, all in the caller's unit of work.

(COPY cannot write to usage_events itself: PostgreSQL refuses COPY FROM into a table
under row-level security, hence the staging table.)"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import text

from nobill.db.compiled import CompiledQuery
from nobill.db.unit_of_work import UnitOfWork
from nobill.errors import InvalidArgument
from nobill.usage import partitions, periods
from nobill.usage.gating import usage_plan
from nobill.usage.metrics import METRICS

MAX_EVENTS = 10_000
# NOTE: the largest quantity one event may carry (a trillion: far beyond any count of
# requests, jobs or reports one event stands for). It makes every sum provably safe:
# a batch, and so each delta row it writes, sums at most MAX_EVENTS * MAX_QUANTITY = 10^16,
# within bigint (9.2 * 10^18) with a margin of 900x. Period totals grow with the number of
# events, which nothing bounds, so they are NUMERIC (migration 0009) and cannot overflow;
# reports split them into meter events Stripe accepts (nobill.usage.reporting).
MAX_QUANTITY = 10**12
MAX_KEY_LENGTH = 128
MAX_PROPERTIES_LENGTH = 2048
MAX_AHEAD = dt.timedelta(minutes=5)
MAX_AGE = dt.timedelta(days=35)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
# An event without a timestamp: it happened when the batch was received.
NOW = None


class Reject(enum.IntEnum):
    """Why one event was not recorded (values match the contract's RejectReason)."""

    MISSING_IDEMPOTENCY_KEY = 1
    IDEMPOTENCY_KEY_TOO_LONG = 2
    UNKNOWN_METRIC = 3
    INVALID_QUANTITY = 4
    TIMESTAMP_IN_FUTURE = 5
    TIMESTAMP_TOO_OLD = 6
    PERIOD_CLOSED = 7
    PROPERTIES_TOO_LONG = 8
    INVALID_CHARACTER = 9


@dataclass
class EventColumns:
    """A batch as parallel columns (no object per event). `occurred_us` is microseconds
    since the epoch, None (NOW) meaning "unset: the time of receipt" (0 is the epoch
    itself, refused as too old); `properties` "" meaning none."""

    keys: Sequence[str]
    metrics: Sequence[str]
    quantities: Sequence[int]
    occurred_us: Sequence[int | None]
    properties: Sequence[str]

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class BatchResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, Reject]] = field(default_factory=list)


_STAGING = "usage_staging"
_STAGING_COLUMNS = ("idempotency_key", "metric", "quantity", "occurred_us", "properties")

# NOTE: the previous window's partition is probed too, so a key resent across a window
# boundary is still a duplicate; ON CONFLICT covers the current window (and concurrent
# batches carrying the same key: the second waits for the first and skips the row).
# Compiled once and run on the driver (nobill.db.compiled): it runs for every batch.
_INSERT = CompiledQuery(text(
    """WITH inserted AS (
        INSERT INTO usage_events (org_id, idempotency_key, dedupe_window, metric, quantity, occurred_at,
                                  received_at, properties)
        SELECT :org_id, s.idempotency_key, :window, s.metric, s.quantity,
               timestamptz 'epoch' + s.occurred_us * interval '1 microsecond', :now, nullif(s.properties, '')
        FROM usage_staging s
        -- One index probe per staged key (a LATERAL subquery with LIMIT is never turned into
        -- a hash join that would read all of the org's keys of the previous window).
        LEFT JOIN LATERAL (SELECT 1 AS found FROM usage_events p
                           WHERE p.org_id = :org_id AND p.dedupe_window = :previous
                             AND p.idempotency_key = s.idempotency_key LIMIT 1) previous ON true
        WHERE previous.found IS NULL
        ON CONFLICT DO NOTHING
        RETURNING metric, quantity, occurred_at
    ), periods AS (
        -- Validation admits only the previous, current and (5 minutes ahead) next period.
        SELECT metric, quantity,
               CASE WHEN occurred_at >= :current_end THEN :current_end
                    WHEN occurred_at >= :current_start THEN :current_start
                    ELSE :previous_start END AS period_start,
               CASE WHEN occurred_at >= :current_end THEN :next_end
                    WHEN occurred_at >= :current_start THEN :current_end
                    ELSE :current_start END AS period_end
        FROM inserted
    ), deltas AS (
        INSERT INTO usage_deltas (org_id, metric, period_start, period_end, quantity, event_count, created_at)
        SELECT :org_id, metric, period_start, period_end, sum(quantity), count(*), :now
        FROM periods GROUP BY 2, 3, 4
        RETURNING event_count
    )
    SELECT coalesce(sum(event_count), 0)::bigint FROM deltas"""
))


def check_batch_size(count: int, *, field_name: str = "events") -> None:
    """A batch must hold 1 to MAX_EVENTS events (a request wrong as a whole)."""
    if count == 0:
        raise InvalidArgument("a batch needs at least one event", field=field_name)
    if count > MAX_EVENTS:
        raise InvalidArgument(f"a batch holds at most {MAX_EVENTS} events, got {count}", field=field_name)


def validate(
    events: EventColumns, now: dt.datetime, open_since: dt.datetime | None = None
) -> tuple[list[tuple[str, str, int, int, str]], BatchResult]:
    """Rows to stage (first occurrence of each key) and the per-event verdicts so far.
    `open_since`: events before it belong to a closed period (default: calendar months)."""
    now_us = (now - _EPOCH) // dt.timedelta(microseconds=1)
    latest = now_us + MAX_AHEAD // dt.timedelta(microseconds=1)
    oldest = now_us - MAX_AGE // dt.timedelta(microseconds=1)
    closed_before = (
        (periods.open_since(now) if open_since is None else open_since) - _EPOCH
    ) // dt.timedelta(microseconds=1)
    metrics = METRICS
    rows: list[tuple[str, str, int, int, str]] = []
    rejected: list[tuple[int, Reject]] = []
    seen: set[str] = set()
    repeated = 0
    for index, (key, metric, quantity, occurred, props) in enumerate(
        zip(events.keys, events.metrics, events.quantities, events.occurred_us, events.properties)
    ):
        if not key:
            rejected.append((index, Reject.MISSING_IDEMPOTENCY_KEY))
        elif len(key) > MAX_KEY_LENGTH:
            rejected.append((index, Reject.IDEMPOTENCY_KEY_TOO_LONG))
        elif metric not in metrics:
            rejected.append((index, Reject.UNKNOWN_METRIC))
        elif not 0 < quantity <= MAX_QUANTITY:
            rejected.append((index, Reject.INVALID_QUANTITY))
        elif len(props) > MAX_PROPERTIES_LENGTH:
            rejected.append((index, Reject.PROPERTIES_TOO_LONG))
        elif "\x00" in key or "\x00" in props:  # PostgreSQL text cannot hold NUL
            rejected.append((index, Reject.INVALID_CHARACTER))
        else:
            if occurred is None:
                occurred = now_us
            elif occurred > latest:
                rejected.append((index, Reject.TIMESTAMP_IN_FUTURE))
                continue
            elif occurred < oldest:
                rejected.append((index, Reject.TIMESTAMP_TOO_OLD))
                continue
            elif occurred < closed_before:
                rejected.append((index, Reject.PERIOD_CLOSED))
                continue
            if key in seen:
                repeated += 1
                continue
            seen.add(key)
            rows.append((key, metric, quantity, occurred, props))
    return rows, BatchResult(duplicates=repeated, rejected=rejected)


_COPY_SPECIAL = ("\\", "\t", "\n", "\r")


def _stage(uow: UnitOfWork, rows: list[tuple[str, str, int, int, str]]) -> None:
    """COPY the rows into the staging table: as one text block when no key or properties
    needs escaping (the common case, checked in bulk), else row by row."""
    text_fields = "".join([key + props for key, _, _, _, props in rows])
    if any(special in text_fields for special in _COPY_SPECIAL):
        uow.copy_rows(_STAGING, _STAGING_COLUMNS, rows)
        return
    # Metrics come from a fixed set and quantities/timestamps are integers: nothing to escape.
    data = "".join([f"{key}\t{metric}\t{quantity}\t{occurred}\t{props}\n" for key, metric, quantity, occurred, props in rows])
    uow.copy_text(_STAGING, _STAGING_COLUMNS, data.encode())


_TAKE_TURNS = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


def record_usage(*, uow: UnitOfWork, org_id: str, events: EventColumns, now: dt.datetime | None = None) -> BatchResult:
    """Store a batch exactly once per key; the caller's unit of work commits it. One batch
    per unit of work: the staging rows are cleared at commit."""
    check_batch_size(len(events))
    now = now or dt.datetime.now(dt.timezone.utc)
    plan = usage_plan(uow=uow, org_id=org_id, now=now)  # raises for a plan that takes no usage
    rows, result = validate(events, now, plan.periods.open_since(now))
    if not rows:
        return result
    received = now.timestamp()
    window = partitions.window_of(received)
    if partitions.near_turnover(received):
        # Each window's primary key only sees its own partition, and the probe cannot see
        # rows not yet committed: near a boundary, the org's batches take turns.
        uow.execute(_TAKE_TURNS, {"key": f"nobill.usage.turnover:{org_id}"})
    partitions.ensure(uow=uow, window=window)
    uow.ensure_temp_table(
        _STAGING, 'idempotency_key text COLLATE "C", metric text, quantity bigint, occurred_us bigint, properties text'
    )
    _stage(uow, rows)
    span = plan.periods
    parameters = {
        "org_id": org_id, "window": window, "previous": window - 1, "now": now,
        "previous_start": span.previous_start, "current_start": span.current_start,
        "current_end": span.current_end, "next_end": span.next_end,
    }
    row = uow.fetch_one(_INSERT, parameters)
    assert row is not None, "the insert always answers one row"
    stored = int(row[0])
    result.accepted = stored
    result.duplicates += len(rows) - result.accepted
    return result

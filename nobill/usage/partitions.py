"""Time partitions of usage events: one per 35-day dedupe window of the time of receipt.

A key is unique inside its window (primary key) and checked against the previous window,
so it counts once for at least 35 days. Windows older than the previous one are dropped
whole (`DROP TABLE`), which is the whole retention policy: no DELETE ever runs on events."""

from __future__ import annotations

import logging
import threading

from sqlalchemy import text

from nobill.db.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

WINDOW_DAYS = 35
_WINDOW_SECONDS = WINDOW_DAYS * 86400
# An org's batches received this close to a window boundary (either side) are stored one at
# a time, so a batch in the new window sees a key that a batch in the old window is still
# committing (see nobill.usage.ingest). Far longer than an ingest transaction lasts, and
# than the clock skew between servers.
TURNOVER_GUARD_SECONDS = 120
_known: set[int] = set()
_lock = threading.Lock()


def window_of(epoch_seconds: float) -> int:
    return int(epoch_seconds // 86400) // WINDOW_DAYS


def near_turnover(epoch_seconds: float) -> bool:
    """True within TURNOVER_GUARD_SECONDS of the boundary between two windows."""
    offset = epoch_seconds % _WINDOW_SECONDS
    return offset < TURNOVER_GUARD_SECONDS or offset > _WINDOW_SECONDS - TURNOVER_GUARD_SECONDS


def ensure(*, uow: UnitOfWork, window: int) -> None:
    """Make sure the window's partition exists (creates it on demand; cached per process)."""
    if window in _known:
        return
    uow.execute(text("SELECT nobill_usage_ensure_partition(:w)"), {"w": window})
    with _lock:
        _known.add(window)


def maintain(*, uow: UnitOfWork, now_epoch: float) -> list[str]:
    """Create the current and next windows ahead; drop windows no key can need any more."""
    current = window_of(now_epoch)
    for window in (current, current + 1):
        uow.execute(text("SELECT nobill_usage_ensure_partition(:w)"), {"w": window})
    dropped = list(
        uow.execute(text("SELECT nobill_usage_drop_partitions_before(:w)"), {"w": current - 1}).scalars()
    )
    if dropped:
        log.info("usage partitions dropped", extra={"partitions": dropped})
    return dropped

"""Billing periods of usage: calendar months in UTC, closed one hour after they end
(Stripe's grace for late usage before the invoice is finalized)."""

from __future__ import annotations

import datetime as dt

UTC = dt.timezone.utc
CLOSING_GRACE = dt.timedelta(hours=1)


def period_start(moment: dt.datetime) -> dt.datetime:
    """Start of the period `moment` falls in."""
    moment = moment.astimezone(UTC)
    return dt.datetime(moment.year, moment.month, 1, tzinfo=UTC)


def period_end(start: dt.datetime) -> dt.datetime:
    """End (exclusive) of the period starting at `start`."""
    return dt.datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)


def open_since(now: dt.datetime) -> dt.datetime:
    """Events before this moment belong to a closed period: the previous period stays
    open for CLOSING_GRACE after it ends."""
    current = period_start(now)
    if now - current < CLOSING_GRACE:
        return period_start(current - dt.timedelta(seconds=1))
    return current

"""Billing periods of usage: the org's Stripe subscription periods when it has a Stripe
subscription, else calendar months (UTC). A period closes one hour after it ends (Stripe
finalizes the invoice then; later usage would never be billed)."""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass

UTC = dt.timezone.utc
CLOSING_GRACE = dt.timedelta(hours=1)
MINUTE = dt.timedelta(minutes=1)


def add_months(moment: dt.datetime, months: int) -> dt.datetime:
    """The same day and time `months` later (the day clamped to the month's length)."""
    index = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def period_start(moment: dt.datetime) -> dt.datetime:
    """Start of the calendar month `moment` falls in."""
    moment = moment.astimezone(UTC)
    return dt.datetime(moment.year, moment.month, 1, tzinfo=UTC)


def period_end(start: dt.datetime) -> dt.datetime:
    """End (exclusive) of the calendar month starting at `start`."""
    return add_months(start, 1)


@dataclass(frozen=True)
class Periods:
    """The periods an event may belong to at one moment: the current one, the previous
    one (open during the grace hour), and the next (an event up to 5 minutes ahead)."""

    previous_start: dt.datetime
    current_start: dt.datetime
    current_end: dt.datetime
    next_end: dt.datetime

    def open_since(self, now: dt.datetime) -> dt.datetime:
        """Events before this moment belong to a closed period."""
        return self.previous_start if now - self.current_start < CLOSING_GRACE else self.current_start


def calendar_periods(now: dt.datetime) -> Periods:
    start = period_start(now)
    return Periods(add_months(start, -1), start, add_months(start, 1), add_months(start, 2))


def subscription_periods(start: dt.datetime, end: dt.datetime, now: dt.datetime) -> Periods:
    """Periods from the subscription's current one; rolled forward (monthly) when the
    renewal has not reached us yet."""
    while now >= end:
        start, end = end, add_months(end, 1)
    return Periods(add_months(start, -1), start, end, add_months(end, 1))


def open_since(now: dt.datetime) -> dt.datetime:
    """Calendar-month rule: events before this moment belong to a closed period."""
    return calendar_periods(now).open_since(now)


def report_window(start: dt.datetime, end: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The whole minutes inside [start, end): Stripe's meter summaries take minute-aligned
    ranges, so reports are timestamped inside this window and summed over it exactly."""
    first = start.replace(second=0, microsecond=0)
    if first < start:
        first += MINUTE
    last = end.replace(second=0, microsecond=0)
    return first, last

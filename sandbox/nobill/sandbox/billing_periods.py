"""Calendar arithmetic for billing periods, money rounding and line descriptions."""

from __future__ import annotations

import calendar
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

DAY = 86_400


def add_intervals(anchor: int, interval: str, interval_count: int, n: int) -> int:
    """`anchor` moved by n × interval_count intervals.

    Months and years are calendar months anchored on the anchor's day, clamped to the end
    of shorter months (Jan 31 → Feb 28 → Mar 31), as Stripe bills.
    """
    if interval == "day":
        return anchor + n * interval_count * DAY
    if interval == "week":
        return anchor + n * interval_count * 7 * DAY
    months = n * interval_count * (12 if interval == "year" else 1)
    start = datetime.fromtimestamp(anchor, tz=timezone.utc)
    years, month_index = divmod(start.month - 1 + months, 12)
    year, month = start.year + years, month_index + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return int(start.replace(year=year, month=month, day=day).timestamp())


def next_boundary(anchor: int, interval: str, interval_count: int, after: int) -> int:
    """The first period boundary (anchor + k intervals, k ≥ 1) strictly after `after`."""
    approximate = {"day": DAY, "week": 7 * DAY, "month": 28 * DAY, "year": 365 * DAY}[interval] * interval_count
    n = max(1, (after - anchor) // approximate - 1)
    while add_intervals(anchor, interval, interval_count, n) <= after:
        n += 1
    while n > 1 and add_intervals(anchor, interval, interval_count, n - 1) > after:
        n -= 1
    return add_intervals(anchor, interval, interval_count, n)


def interval_seconds_upper_bound(interval: str, interval_count: int) -> int:
    return {"day": DAY, "week": 7 * DAY, "month": 31 * DAY, "year": 366 * DAY}[interval] * interval_count


def round_amount(value: Decimal | Fraction) -> int:
    """Whole cents, half up."""
    if isinstance(value, Fraction):
        value = Decimal(value.numerator) / Decimal(value.denominator)
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def line_amount(unit_amount_decimal: str, quantity: int, fraction: Fraction = Fraction(1)) -> int:
    unit = Fraction(Decimal(unit_amount_decimal))
    return round_amount(unit * quantity * fraction)


_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "cad": "CA$", "aud": "A$"}
_ZERO_DECIMAL = {"jpy", "krw", "vnd", "clp", "isk", "ugx", "xaf", "xof", "pyg", "bif", "djf", "gnf", "kmf", "mga", "rwf", "vuv", "xpf"}


def format_money(unit_amount_decimal: str, currency: str) -> str:
    amount = Decimal(unit_amount_decimal)
    if currency not in _ZERO_DECIMAL:
        amount = amount / 100
    text = f"{amount:,.2f}" if amount == amount.quantize(Decimal("0.01")) else f"{amount:,f}".rstrip("0")
    symbol = _SYMBOLS.get(currency)
    return f"{symbol}{text}" if symbol else f"{text} {currency.upper()}"


def format_date(timestamp: int) -> str:
    """`15 Jan 2026`, as Stripe writes dates in proration line descriptions."""
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return f"{moment.day} {moment.strftime('%b %Y')}"

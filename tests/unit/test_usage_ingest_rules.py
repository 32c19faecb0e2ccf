"""The ingestion domain on its own: reject reasons match the contract, bulk validation."""

from __future__ import annotations

import datetime as dt

from nobill.usage import ingest, periods
from nobill.v1 import usage_pb2

UTC = dt.timezone.utc


def test_reject_reasons_are_the_contracts() -> None:
    domain = {reason.name: reason.value for reason in ingest.Reject}
    contract = {
        name.removeprefix("REJECT_REASON_"): value
        for name, value in usage_pb2.RejectReason.items()
        if value != usage_pb2.REJECT_REASON_UNSPECIFIED
    }
    assert domain == contract


def test_validation_keeps_the_first_copy_of_a_key_and_defaults_the_time_to_now() -> None:
    now = dt.datetime(2026, 12, 15, 12, tzinfo=UTC)
    now_us = int(now.timestamp() * 1_000_000)
    events = ingest.EventColumns(
        ["a", "b", "a", "c"], ["api_requests", "background_jobs", "api_requests", "nope"], [1, 2, 9, 1], [ingest.NOW, now_us - 5, ingest.NOW, ingest.NOW], ["", "x", "", ""]
    )

    rows, result = ingest.validate(events, now)

    assert rows == [("a", "api_requests", 1, now_us, ""), ("b", "background_jobs", 2, now_us - 5, "x")]
    assert (result.duplicates, result.rejected) == (1, [(3, ingest.Reject.UNKNOWN_METRIC)])


def test_the_epoch_itself_is_a_time_not_unset() -> None:
    now = dt.datetime(2026, 12, 15, 12, tzinfo=UTC)
    events = ingest.EventColumns(["epoch", "second"], ["api_requests"] * 2, [1, 1], [0, 1_000_000], ["", ""])

    rows, result = ingest.validate(events, now)

    assert rows == []
    assert result.rejected == [(0, ingest.Reject.TIMESTAMP_TOO_OLD), (1, ingest.Reject.TIMESTAMP_TOO_OLD)]


def test_a_period_stays_open_for_an_hour_after_it_ends() -> None:
    december = dt.datetime(2026, 12, 1, tzinfo=UTC)

    assert periods.open_since(december + dt.timedelta(minutes=59)) == dt.datetime(2026, 11, 1, tzinfo=UTC)
    assert periods.open_since(december + dt.timedelta(minutes=61)) == december
    assert periods.period_end(december) == dt.datetime(2027, 1, 1, tzinfo=UTC)


def test_subscription_periods_roll_forward_and_months_clamp_their_day() -> None:
    start = dt.datetime(2026, 10, 31, 10, 23, 37, tzinfo=UTC)
    end = periods.add_months(start, 1)

    rolled = periods.subscription_periods(start, end, dt.datetime(2026, 12, 2, tzinfo=UTC))

    assert end == dt.datetime(2026, 11, 30, 10, 23, 37, tzinfo=UTC)
    assert (rolled.current_start, rolled.current_end) == (end, dt.datetime(2026, 12, 30, 10, 23, 37, tzinfo=UTC))
    assert rolled.previous_start == dt.datetime(2026, 10, 30, 10, 23, 37, tzinfo=UTC)


def test_reports_are_timestamped_inside_the_periods_whole_minutes() -> None:
    from nobill.usage import reporting

    start = dt.datetime(2026, 11, 15, 10, 23, 37, tzinfo=UTC)
    end = dt.datetime(2026, 12, 15, 10, 23, 37, tzinfo=UTC)

    assert periods.report_window(start, end) == (start.replace(minute=24, second=0), end.replace(second=0))
    assert reporting.event_timestamp(start, end, start) == start.replace(minute=24, second=0)
    assert reporting.event_timestamp(start, end, end + dt.timedelta(hours=1)) == end.replace(minute=22, second=59)


def test_quantities_from_one_to_the_maximum_are_accepted_and_a_full_batch_fits_bigint() -> None:
    now = dt.datetime(2026, 12, 15, 12, tzinfo=UTC)
    quantities = [0, 1, ingest.MAX_QUANTITY, ingest.MAX_QUANTITY + 1, -1, 2**63 - 1]
    events = ingest.EventColumns([f"k{i}" for i in range(6)], ["api_requests"] * 6, quantities, [ingest.NOW] * 6, [""] * 6)

    rows, result = ingest.validate(events, now)

    assert [row[2] for row in rows] == [1, ingest.MAX_QUANTITY]
    assert [index for index, reason in result.rejected if reason is ingest.Reject.INVALID_QUANTITY] == [0, 3, 4, 5]
    assert ingest.MAX_EVENTS * ingest.MAX_QUANTITY < 2**63 - 1  # a batch's sum, and so a delta

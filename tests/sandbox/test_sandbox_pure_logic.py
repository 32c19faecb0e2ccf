"""Pure logic under the sandbox: form decoding, parameter specs, billing calendar, money."""

from __future__ import annotations

from datetime import datetime, timezone
from fractions import Fraction

import pytest

from nobill.sandbox import errors
from nobill.sandbox.billing_periods import add_intervals, format_date, format_money, line_amount, next_boundary
from nobill.sandbox.params import UNSET, Array, Hash, Int, Metadata, Str, merge_metadata
from nobill.sandbox.wire_form import decode, split_key


def ts(year: int, month: int, day: int, hour: int = 0) -> int:
    return int(datetime(year, month, day, hour, tzinfo=timezone.utc).timestamp())


def test_form_decoding_with_brackets():
    assert split_key("items[0][price]") == ["items", "0", "price"]
    assert split_key("expand[]") == ["expand", ""]
    assert split_key("a[b") == ["a[b"]
    decoded = decode("items[0][price]=p1&items[1][price]=p2&items[1][quantity]=3&expand[]=a&expand[]=b&metadata[k]=v&email=x%40y.z&empty=")
    assert decoded == {
        "items": {"0": {"price": "p1"}, "1": {"price": "p2", "quantity": "3"}},
        "expand": ["a", "b"],
        "metadata": {"k": "v"},
        "email": "x@y.z",
        "empty": "",
    }
    with pytest.raises(errors.StripeError) as caught:
        decode("a=1&a[b]=2")
    assert caught.value.param == "a"


def test_specs_turn_indexed_hashes_into_arrays_and_report_bracket_paths():
    schema = Hash({"items": Array(Hash({"price": Str(), "quantity": Int(minimum=0)}, required=("price",))), "metadata": Metadata()})
    parsed = schema.parse(decode("items[1][price]=b&items[0][price]=a&items[0][quantity]=2&metadata[x]="), [])
    assert parsed == {"items": [{"price": "a", "quantity": 2}, {"price": "b"}], "metadata": {"x": UNSET}}
    with pytest.raises(errors.StripeError) as caught:
        schema.parse(decode("items[0][quantity]=-1&items[0][price]=a"), [])
    assert caught.value.param == "items[0][quantity]"
    with pytest.raises(errors.StripeError) as caught:
        schema.parse(decode("items[0][quantity]=1"), [])
    assert (caught.value.code, caught.value.param) == ("parameter_missing", "items[0][price]")
    assert merge_metadata({"a": "1", "b": "2"}, {"a": UNSET, "c": "3"}) == {"b": "2", "c": "3"}
    assert merge_metadata({"a": "1"}, UNSET) == {}


def test_monthly_periods_keep_the_anchor_day_and_clamp_short_months():
    anchor = ts(2026, 1, 31, 9)
    assert [datetime.fromtimestamp(add_intervals(anchor, "month", 1, n), tz=timezone.utc).date().isoformat() for n in range(1, 5)] == [
        "2026-02-28",
        "2026-03-31",
        "2026-04-30",
        "2026-05-31",
    ]
    assert add_intervals(ts(2028, 2, 29), "year", 1, 1) == ts(2029, 2, 28)
    assert add_intervals(anchor, "week", 2, 1) == anchor + 14 * 86_400
    assert next_boundary(anchor, "month", 1, add_intervals(anchor, "month", 1, 1)) == ts(2026, 3, 31, 9)
    assert next_boundary(anchor, "month", 3, anchor) == ts(2026, 4, 30, 9)


def test_amounts_round_half_up_and_money_reads_like_stripe():
    assert line_amount("0.5", 1233) == 617
    assert line_amount("500", 3, Fraction(1, 3)) == 500
    assert line_amount("1000", 1, Fraction(1, 8)) == 125
    assert format_money("2000", "usd") == "$20.00"
    assert format_money("0.5", "usd") == "$0.005"
    assert format_money("1500", "jpy") == "¥1,500.00"
    assert format_money("999", "chf") == "9.99 CHF"
    assert format_date(ts(2026, 1, 5, 12)) == "5 Jan 2026"

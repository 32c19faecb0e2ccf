"""Billing Meters, meter events (identifier dedupe, timestamp window, whole numbers) and
meter event summaries."""

from __future__ import annotations

import threading

import pytest
import stripe

from sandbox_helpers import http

DAY = 86_400


def send(client, customer_id, value, **extra):
    return client.v1.billing.meter_events.create(
        {"event_name": extra.pop("event_name", "api_calls"), "payload": {"stripe_customer_id": customer_id, "value": str(value)}, **extra}
    )


def summary(client, meter_id, customer_id, start, end, **extra):
    return client.v1.billing.meters.event_summaries.list(meter_id, {"customer": customer_id, "start_time": start, "end_time": end, **extra})


def test_meter_lifecycle(client):
    meter = client.v1.billing.meters.create(
        {
            "display_name": "Tokens",
            "event_name": "tokens",
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"event_payload_key": "customer", "type": "by_id"},
            "value_settings": {"event_payload_key": "tokens"},
        }
    )
    assert meter.id.startswith("mtr_") and meter.status == "active"
    assert (meter.customer_mapping.event_payload_key, meter.value_settings.event_payload_key) == ("customer", "tokens")
    assert client.v1.billing.meters.update(meter.id, {"display_name": "LLM tokens"}).display_name == "LLM tokens"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.billing.meters.update(meter.id, {"event_name": "other"})  # type: ignore[typeddict-unknown-key]
    assert caught.value.code == "parameter_unknown"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.billing.meters.create({"display_name": "Again", "event_name": "tokens", "default_aggregation": {"formula": "count"}})
    assert caught.value.param == "event_name"
    inactive = client.v1.billing.meters.deactivate(meter.id)
    assert inactive.status == "inactive" and inactive.status_transitions.deactivated_at is not None
    assert client.v1.billing.meters.list({"status": "active"}).data == []
    customer = client.v1.customers.create({})
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.billing.meter_events.create({"event_name": "tokens", "payload": {"customer": customer.id, "tokens": "5"}})
    assert client.v1.billing.meters.reactivate(meter.id).status == "active"
    event = client.v1.billing.meter_events.create({"event_name": "tokens", "payload": {"customer": customer.id, "tokens": "5"}})
    assert event.payload["tokens"] == "5" and event.identifier
    types = [e.type for e in client.v1.events.list({"type": "billing.meter.*"}).data]
    assert types == ["billing.meter.reactivated", "billing.meter.deactivated", "billing.meter.updated", "billing.meter.created"]


def test_a_repeated_identifier_is_rejected_and_not_counted(sandbox, client, catalog):
    customer = client.v1.customers.create({})
    first = send(client, customer.id, 7, identifier="usage-2026-01-01T00")
    assert first.identifier == "usage-2026-01-01T00"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        send(client, customer.id, 7, identifier="usage-2026-01-01T00")
    assert caught.value.user_message == "An event already exists with identifier usage-2026-01-01T00."
    assert caught.value.code == "duplicate_meter_event"  # Stripe's code for it (what callers match on)
    assert caught.value.param == "identifier"
    assert caught.value.headers["Stripe-Should-Retry"] == "false"
    start = first.timestamp // 60 * 60
    assert summary(client, catalog.meter.id, customer.id, start, start + 3600).data[0].aggregated_value == 7


def test_concurrent_events_with_one_identifier_count_once(sandbox, catalog):
    from sandbox_helpers import new_client

    client = new_client(sandbox.url)
    customer = client.v1.customers.create({})
    outcomes: list[str] = []

    def attempt() -> None:
        try:
            send(new_client(sandbox.url), customer.id, 1, identifier="same")
            outcomes.append("ok")
        except stripe.InvalidRequestError:
            outcomes.append("duplicate")

    threads = [threading.Thread(target=attempt) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["duplicate"] * 11 + ["ok"]


def test_values_must_be_whole_numbers(client, catalog, clock):
    customer = client.v1.customers.create({"test_clock": clock.id})
    for bad in ("2.5", "1e3", "ten", ""):
        with pytest.raises(stripe.InvalidRequestError) as caught:
            send(client, customer.id, bad)
        assert caught.value.param == "payload[value]"
    send(client, customer.id, 10, timestamp=clock.frozen_time)
    send(client, customer.id, -3, timestamp=clock.frozen_time)  # Stripe accepts negative whole numbers
    start = clock.frozen_time // 60 * 60
    assert summary(client, catalog.meter.id, customer.id, start, start + 60).data[0].aggregated_value == 7


def test_timestamps_must_be_within_35_days_back_and_5_minutes_ahead_of_the_customer_clock(client, catalog, clock):
    customer = client.v1.customers.create({"test_clock": clock.id})
    now = clock.frozen_time
    send(client, customer.id, 1, timestamp=now - 35 * DAY)
    send(client, customer.id, 1, timestamp=now + 300)
    with pytest.raises(stripe.InvalidRequestError) as caught:
        send(client, customer.id, 1, timestamp=now - 35 * DAY - 1)
    assert (caught.value.param, caught.value.code) == ("timestamp", "timestamp_too_far_in_past")
    with pytest.raises(stripe.InvalidRequestError) as caught:
        send(client, customer.id, 1, timestamp=now + 301)
    assert (caught.value.param, caught.value.code) == ("timestamp", "timestamp_in_future")
    defaulted = send(client, customer.id, 1)
    assert defaulted.timestamp == now  # the clock's time, not the wall clock's


def test_events_need_a_known_meter_and_customer(client, catalog):
    customer = client.v1.customers.create({})
    with pytest.raises(stripe.InvalidRequestError) as caught:
        send(client, customer.id, 1, event_name="no_such_meter")
    assert caught.value.param == "event_name"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        send(client, "cus_nobody", 1)
    assert (caught.value.param, caught.value.code) == ("payload[stripe_customer_id]", "resource_missing")
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.billing.meter_events.create({"event_name": "api_calls", "payload": {"value": "1"}})
    assert caught.value.code == "parameter_missing"


def test_summaries_aggregate_per_customer_and_window(client, catalog, clock):
    alice = client.v1.customers.create({"test_clock": clock.id})
    bob = client.v1.customers.create({"test_clock": clock.id})
    hour = clock.frozen_time // 3600 * 3600 - 3 * 3600
    for offset, value in ((10, 5), (20, 6), (3600 + 5, 7), (7200 + 1, 8)):
        send(client, alice.id, value, timestamp=hour + offset)
    send(client, bob.id, 100, timestamp=hour + 30)
    total = summary(client, catalog.meter.id, alice.id, hour, hour + 3 * 3600)
    assert [(s.start_time, s.end_time, s.aggregated_value) for s in total.data] == [(hour, hour + 3 * 3600, 26)]
    assert total.data[0].meter == catalog.meter.id and total.data[0].id.startswith("mtrusg_")
    hourly = summary(client, catalog.meter.id, alice.id, hour, hour + 3 * 3600, value_grouping_window="hour")
    assert [s.aggregated_value for s in hourly.data] == [11, 7, 8]
    paged = summary(client, catalog.meter.id, alice.id, hour, hour + 3 * 3600, value_grouping_window="hour", limit=2)
    assert paged.has_more
    rest = summary(client, catalog.meter.id, alice.id, hour, hour + 3 * 3600, value_grouping_window="hour", starting_after=paged.data[-1].id)
    assert [s.aggregated_value for s in rest.data] == [8]
    assert summary(client, catalog.meter.id, bob.id, hour, hour + 3 * 3600).data[0].aggregated_value == 100
    with pytest.raises(stripe.InvalidRequestError) as caught:
        summary(client, catalog.meter.id, alice.id, hour + 1, hour + 3600)
    assert caught.value.param == "start_time"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        summary(client, catalog.meter.id, alice.id, hour + 60, hour + 3600, value_grouping_window="hour")
    assert caught.value.param == "start_time"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.billing.meters.event_summaries.list(catalog.meter.id, {"customer": alice.id, "start_time": hour})  # type: ignore[typeddict-item]
    assert (caught.value.code, caught.value.param) == ("parameter_missing", "end_time")


@pytest.mark.parametrize(("formula", "expected"), [("count", 3), ("last", 2), ("sum", 15)])
def test_aggregation_formulas(client, clock, formula, expected):
    client.v1.billing.meters.create({"display_name": formula, "event_name": f"m_{formula}", "default_aggregation": {"formula": formula}})
    meter = client.v1.billing.meters.list().data[0]
    customer = client.v1.customers.create({"test_clock": clock.id})
    start = clock.frozen_time // 60 * 60 - 600
    for offset, value in ((1, 4), (3, 2), (2, 9)):
        send(client, customer.id, value, event_name=f"m_{formula}", timestamp=start + offset)
    assert summary(client, meter.id, customer.id, start, start + 600).data[0].aggregated_value == expected


def test_pre_aggregated_meters_keep_the_last_event_of_each_window(client, clock):
    meter = client.v1.billing.meters.create(
        {"display_name": "Seats-hours", "event_name": "pre", "default_aggregation": {"formula": "sum"}, "event_time_window": "hour"}
    )
    customer = client.v1.customers.create({"test_clock": clock.id})
    hour = clock.frozen_time // 3600 * 3600 - 7200
    for offset, value in ((5, 10), (50, 12), (3605, 3)):
        send(client, customer.id, value, event_name="pre", timestamp=hour + offset)
    assert summary(client, meter.id, customer.id, hour, hour + 7200).data[0].aggregated_value == 15


def test_duplicate_identifier_answer_on_the_wire(sandbox, client, catalog):
    customer = client.v1.customers.create({})
    body = f"event_name=api_calls&payload[stripe_customer_id]={customer.id}&payload[value]=1&identifier=wire".encode()
    headers = {"Authorization": "Bearer sk_test_x", "Content-Type": "application/x-www-form-urlencoded"}
    assert http(sandbox.url + "/v1/billing/meter_events", "POST", body, headers)[0] == 200
    status, response_headers, _ = http(sandbox.url + "/v1/billing/meter_events", "POST", body, headers)
    assert status == 400 and response_headers["Stripe-Should-Retry"] == "false"


def test_usage_sent_in_the_grace_hour_for_the_ended_period_is_billed_at_finalization(client, catalog, clock):
    """100 units before the boundary; 50 more sent 10 minutes after it, stamped 2 minutes
    before it: the renewal finalized an hour after the boundary bills 150."""
    from sandbox_helpers import advance

    customer = client.v1.customers.create(
        {"test_clock": clock.id, "payment_method": "pm_card_visa", "invoice_settings": {"default_payment_method": "pm_card_visa"}}
    )
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.usage.id}]})
    boundary = subscription["items"].data[0].current_period_end
    send = lambda value, stamp: client.v1.billing.meter_events.create(  # noqa: E731
        {"event_name": "api_calls", "payload": {"stripe_customer_id": customer.id, "value": str(value)}, "timestamp": stamp}
    )
    send(100, clock.frozen_time + 60)
    advance(client, clock, boundary + 600)
    draft = client.v1.invoices.list({"subscription": subscription.id}).data[0]
    assert (draft.status, draft.lines.data[0].quantity) == ("draft", 100)
    send(50, boundary - 120)
    send(7, boundary + 60)  # the new period's usage stays for the next invoice
    advance(client, clock, boundary + 3_600 + 60)
    final = client.v1.invoices.retrieve(draft.id)
    assert final.status == "paid"
    assert (final.lines.data[0].quantity, final.amount_paid) == (150, 75)
    assert final.lines.data[0].description.startswith("150 × Pro")


def test_a_meter_event_adjustment_cancels_an_event_within_24_hours(client, catalog, clock):
    from sandbox_helpers import advance, stripe_example_objects
    from test_sandbox_object_shapes import check_parsed

    customer = client.v1.customers.create({"test_clock": clock.id})
    summary = lambda: client.v1.billing.meters.event_summaries.list(  # noqa: E731
        catalog.meter.id, {"customer": customer.id, "start_time": clock.frozen_time // 60 * 60, "end_time": (clock.frozen_time + 3 * 86_400) // 60 * 60}
    ).data[0].aggregated_value
    for identifier, value in (("right", 5), ("wrong", 500)):
        client.v1.billing.meter_events.create(
            {"event_name": "api_calls", "payload": {"stripe_customer_id": customer.id, "value": str(value)}, "identifier": identifier}
        )
    adjustment = client.v1.billing.meter_event_adjustments.create({"event_name": "api_calls", "type": "cancel", "cancel": {"identifier": "wrong"}})
    check_parsed(adjustment, stripe.billing.MeterEventAdjustment, stripe_example_objects())
    assert (adjustment.type, adjustment.cancel.identifier, adjustment.status) == ("cancel", "wrong", "pending")
    assert summary() == 5
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.billing.meter_event_adjustments.create({"event_name": "api_calls", "type": "cancel", "cancel": {"identifier": "wrong"}})
    assert "already canceled" in caught.value.user_message
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.billing.meter_event_adjustments.create({"event_name": "api_calls", "type": "cancel", "cancel": {"identifier": "never"}})
    assert caught.value.code == "resource_missing"
    # The identifier stays used: resending the canceled event is still a duplicate.
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.billing.meter_events.create({"event_name": "api_calls", "payload": {"stripe_customer_id": customer.id, "value": "1"}, "identifier": "wrong"})
    advance(client, clock, clock.frozen_time + 86_400 + 60)
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.billing.meter_event_adjustments.create({"event_name": "api_calls", "type": "cancel", "cancel": {"identifier": "right"}})
    assert "24 hours" in caught.value.user_message


def test_a_value_of_more_than_15_digits_is_refused(sandbox, client, catalog):
    customer = client.v1.customers.create({})
    send(client, customer.id, 999_999_999_999_999)
    with pytest.raises(stripe.InvalidRequestError) as caught:
        send(client, customer.id, 1_000_000_000_000_000)
    assert caught.value.code == "meter_event_value_too_many_digits"
    assert "at most 15 digits" in caught.value.user_message

"""Quantities cannot overflow anything (Trust #4): a documented per-event maximum, refused
per event with REJECT_REASON_INVALID_QUANTITY; batch and delta sums provably within
bigint; period totals in NUMERIC; reports split into meter events Stripe accepts.

The attacks are the issue's own, through the real usage server, by the org's owner."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
import stripe
from requests import Session

from fixtures_usage import Stream, event, usage_org
from nobill.stripe.gateway import StripeGateway
from nobill.stripe.meter_events import MeterEvents
from nobill.usage import aggregation, periods, reporting
from nobill.v1 import usage_pb2
from support import Client

LIMIT = 10**12  # the documented per-event maximum (usage.proto, docs/USAGE.md)
INT64_MAX = 2**63 - 1
INVALID = usage_pb2.REJECT_REASON_INVALID_QUANTITY


def _stripe(url: str) -> stripe.StripeClient:
    session = Session()
    session.trust_env = False
    return stripe.StripeClient("sk_test_nobill_usage", base_addresses={"api": url, "meter_events": url},
                               http_client=stripe.RequestsClient(session=session), max_network_retries=0)


@pytest.fixture
def billed(channel, usage_channel, superuser, meter_sandbox):  # noqa: ANN001, ANN201
    """An Enterprise org (metered) with a Stripe customer in the sandbox: (org_id, usage client, customer, meters)."""
    url, settings = meter_sandbox
    org_id, owner = usage_org(channel, superuser)
    customer = _stripe(url).v1.customers.create({"name": org_id}).id
    superuser.execute("UPDATE stripe_customers SET stripe_customer_id = %s WHERE org_id = %s", (customer, org_id))
    return org_id, Client(usage_channel, owner.token), customer, MeterEvents(StripeGateway.from_settings(settings))


def _summary(client: Client, org_id: str) -> list[tuple[str, int, int, int]]:
    found = client.usage.GetUsageSummary(usage_pb2.GetUsageSummaryRequest(org_id=org_id))
    return [(t.metric, t.quantity, t.event_count, t.pending_quantity) for t in found.totals]


def _still_aggregates_and_reports(database, superuser, org_id: str, customer: str, meters: MeterEvents, expected: int) -> None:  # noqa: ANN001
    aggregation.aggregate_all(database=database, org_id=org_id)
    totals = superuser.execute("SELECT metric, quantity FROM usage_totals WHERE org_id = %s", (org_id,)).fetchall()
    assert [(metric, int(quantity)) for metric, quantity in totals] == [("api_requests", expected)]
    assert reporting.report_org(database=database, meters=meters, org_id=org_id) == 1
    reported = superuser.execute(
        "SELECT reported_quantity FROM usage_totals WHERE org_id = %s", (org_id,)).fetchone()[0]
    assert int(reported) == expected


def test_four_events_of_2_62_in_one_record_usage_are_each_refused(billed, database, superuser) -> None:
    org_id, client, customer, meters = billed
    events = [event(f"huge-{i}", quantity=2**62) for i in range(4)] + [event("fine", quantity=3)]

    response = client.usage.RecordUsage(usage_pb2.RecordUsageRequest(org_id=org_id, events=events))

    assert [(r.index, r.reason) for r in response.rejected] == [(i, INVALID) for i in range(4)]
    assert (response.accepted, response.duplicates) == (1, 0)
    assert _summary(client, org_id) == [("api_requests", 3, 1, 3)]
    _still_aggregates_and_reports(database, superuser, org_id, customer, meters, 3)


def test_four_events_of_2_62_in_one_stream_batch_are_each_refused(billed, usage_channel, database, superuser) -> None:
    org_id, client, customer, meters = billed
    stream = Stream(usage_channel, client.token)

    ack = stream.send(org_id, [event(f"huge-{i}", quantity=2**62) for i in range(4)] + [event("fine", quantity=3)])
    stream.close()

    assert ack.status_code == grpc.StatusCode.OK.value[0], ack.status_message
    assert [(r.index, r.reason) for r in ack.rejected] == [(i, INVALID) for i in range(4)]
    assert ack.accepted == 1
    assert _summary(client, org_id) == [("api_requests", 3, 1, 3)]
    _still_aggregates_and_reports(database, superuser, org_id, customer, meters, 3)


def test_two_events_of_int64_max_in_separate_batches_are_each_refused(billed, usage_channel, database, superuser) -> None:
    org_id, client, customer, meters = billed
    first = client.usage.RecordUsage(usage_pb2.RecordUsageRequest(org_id=org_id, events=[event("max-1", quantity=INT64_MAX)]))
    stream = Stream(usage_channel, client.token)
    second = stream.send(org_id, [event("max-2", quantity=INT64_MAX), event("fine", quantity=2)])
    stream.close()

    assert [(r.index, r.reason) for r in first.rejected] == [(0, INVALID)]
    assert [(r.index, r.reason) for r in second.rejected] == [(0, INVALID)]
    assert _summary(client, org_id) == [("api_requests", 2, 1, 2)]
    _still_aggregates_and_reports(database, superuser, org_id, customer, meters, 2)


def test_the_maximum_is_accepted_and_one_more_is_refused(billed) -> None:
    org_id, client, _, _ = billed
    events = [event("at-limit", quantity=LIMIT), event("over", quantity=LIMIT + 1), event("min", quantity=1)]

    response = client.usage.RecordUsage(usage_pb2.RecordUsageRequest(org_id=org_id, events=events))

    assert [(r.index, r.reason) for r in response.rejected] == [(1, INVALID)]
    assert _summary(client, org_id) == [("api_requests", LIMIT + 1, 2, LIMIT + 1)]


def test_totals_of_many_maximal_events_stay_exact_and_past_int64_still_aggregate(
    billed, usage_channel, database, superuser
) -> None:
    """Full batches of maximal events: each batch's delta (10,000 x 10^12) fits bigint, the
    period total is exact. A total pushed past the int64 range (by a period of ~9.2 million
    maximal events) still aggregates; the summary shows it saturated at int64's maximum."""
    org_id, client, _, _ = billed
    stream = Stream(usage_channel, client.token)
    acks = [stream.send(org_id, [event(f"b{batch}-{i}", quantity=LIMIT) for i in range(10_000)]) for batch in range(3)]
    stream.close()
    assert [a.accepted for a in acks] == [10_000] * 3

    before = _summary(client, org_id)  # deltas not aggregated yet
    aggregation.aggregate_all(database=database, org_id=org_id)
    after = _summary(client, org_id)

    assert before == after == [("api_requests", 3 * 10**16, 30_000, 3 * 10**16)]

    # As if ~9.2 million maximal events had been aggregated this period already.
    superuser.execute(
        "UPDATE usage_totals SET quantity = %s, event_count = 9223372 WHERE org_id = %s", (INT64_MAX - 10**16 + 7, org_id)
    )
    ack = Stream(usage_channel, client.token)
    last = ack.send(org_id, [event(f"last-{i}", quantity=LIMIT) for i in range(10_000)])
    ack.close()
    assert last.accepted == 10_000
    pending = _summary(client, org_id)  # the summary adds a delta to the total: past int64 already
    aggregation.aggregate_all(database=database, org_id=org_id)

    stored = superuser.execute("SELECT quantity, event_count FROM usage_totals WHERE org_id = %s", (org_id,)).fetchone()
    assert (int(stored[0]), stored[1]) == (INT64_MAX + 7, 9223372 + 10_000)
    assert pending == _summary(client, org_id) == [("api_requests", INT64_MAX, 9223372 + 10_000, INT64_MAX)]


def test_a_delta_larger_than_one_meter_event_is_reported_in_several(billed, database, superuser) -> None:
    """Stripe takes at most 15 digits per meter event value: 2 x 10^15 goes in three
    events (each with its own deterministic identifier), and Stripe's total is exact."""
    org_id, client, customer, meters = billed
    for batch in range(2):
        response = client.usage.RecordUsage(usage_pb2.RecordUsageRequest(
            org_id=org_id, events=[event(f"r{batch}-{i}", metric="background_jobs", quantity=LIMIT) for i in range(1_000)]))
        assert response.accepted == 1_000
    aggregation.aggregate_all(database=database, org_id=org_id)

    confirmed = 0
    for _ in range(10):
        sent = reporting.report_org(database=database, meters=meters, org_id=org_id)
        if not sent:
            break
        confirmed += sent

    reports = superuser.execute(
        "SELECT quantity, identifier, state FROM usage_reports WHERE org_id = %s ORDER BY created_at, report_id", (org_id,)
    ).fetchall()
    assert confirmed == 3
    assert sorted(q for q, _, _ in reports) == [2, 999_999_999_999_999, 999_999_999_999_999]
    assert {state for _, _, state in reports} == {"sent"}
    assert len({identifier for _, identifier, _ in reports}) == 3
    assert _summary(client, org_id) == [("background_jobs", 2 * 10**15, 2_000, 0)]
    total = client.usage.GetUsageSummary(usage_pb2.GetUsageSummaryRequest(org_id=org_id)).totals[0]
    first, last = periods.report_window(
        total.period_start.ToDatetime(tzinfo=dt.timezone.utc), total.period_end.ToDatetime(tzinfo=dt.timezone.utc)
    )
    assert meters.summary(event_name="background_jobs", stripe_customer_id=customer, start=first, end=last) == 2 * 10**15

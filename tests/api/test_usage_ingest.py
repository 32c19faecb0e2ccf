"""RecordUsage and StreamUsage through the real usage server: exact deduplication, per-event
rejects, requests wrong as a whole, plan gating, authorization per batch."""

from __future__ import annotations

import datetime as dt
import uuid

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status

from fixtures_api import EXPECTED_PERMISSIONS, ROLES, failure, join
from fixtures_usage import Stream, event, stamp, usage_org
from nobill.usage import periods
from nobill.v1 import usage_pb2
from support import Client, new_service, new_user

UTC = dt.timezone.utc


def _usage(usage_channel: grpc.Channel, caller: Client) -> Client:
    return Client(usage_channel, caller.token)


def _stored(superuser, org_id: str) -> tuple[int, int]:
    count, total = superuser.execute(
        "SELECT count(*), coalesce(sum(quantity), 0) FROM usage_events WHERE org_id = %s", (org_id,)
    ).fetchone()
    return int(count), int(total)


def test_record_usage_stores_a_batch_and_acknowledges_it(channel, usage_channel, superuser) -> None:
    org_id, owner = usage_org(channel, superuser)
    events = [event(quantity=q, metric=m) for q, m in ((3, "api_requests"), (2, "background_jobs"), (1, "reports_generated"))]

    response = _usage(usage_channel, owner).usage.RecordUsage(usage_pb2.RecordUsageRequest(org_id=org_id, events=events))

    assert (response.accepted, response.duplicates, list(response.rejected)) == (3, 0, [])
    assert _stored(superuser, org_id) == (3, 6)


def test_duplicates_within_and_across_batches_count_once_whatever_the_timestamp(channel, usage_channel, superuser) -> None:
    org_id, owner = usage_org(channel, superuser)
    client = _usage(usage_channel, owner)
    now = dt.datetime.now(UTC)

    first = client.usage.RecordUsage(
        usage_pb2.RecordUsageRequest(org_id=org_id, events=[event("k1", quantity=5), event("k1", quantity=5), event("k2")])
    )
    # The same keys again, with other timestamps and quantities: still duplicates.
    again = client.usage.RecordUsage(
        usage_pb2.RecordUsageRequest(
            org_id=org_id,
            events=[event("k1", quantity=7, timestamp=stamp(now - dt.timedelta(minutes=10))), event("k2", timestamp=stamp(now))],
        )
    )

    assert (first.accepted, first.duplicates) == (2, 1)
    assert (again.accepted, again.duplicates) == (0, 2)
    assert _stored(superuser, org_id) == (2, 6)


def test_each_bad_event_is_rejected_with_its_reason_and_the_rest_is_stored(channel, usage_channel, superuser) -> None:
    org_id, owner = usage_org(channel, superuser)
    now = dt.datetime.now(UTC)
    closed = periods.open_since(now) - dt.timedelta(minutes=1)
    events = [
        event("ok-1"),
        event(""),
        event("x" * 129),
        event("bad-metric", metric="api_calls"),
        event("zero", quantity=0),
        event("negative", quantity=-4),
        event("future", timestamp=stamp(now + dt.timedelta(minutes=6))),
        event("old", timestamp=stamp(now - dt.timedelta(days=36))),
        event("props", properties="p" * 2049),
        event("ok-2", timestamp=stamp(now + dt.timedelta(minutes=4)), properties='{"region": "eu"}'),
        event("k" * 128),
        event("nul\x00key"),
    ]
    expected_closed = []
    if closed > now - dt.timedelta(days=35):
        events.append(event("closed", timestamp=stamp(closed)))
        expected_closed = [(12, usage_pb2.REJECT_REASON_PERIOD_CLOSED)]

    response = _usage(usage_channel, owner).usage.RecordUsage(usage_pb2.RecordUsageRequest(org_id=org_id, events=events))

    assert [(r.index, r.reason) for r in response.rejected] == [
        (1, usage_pb2.REJECT_REASON_MISSING_IDEMPOTENCY_KEY),
        (2, usage_pb2.REJECT_REASON_IDEMPOTENCY_KEY_TOO_LONG),
        (3, usage_pb2.REJECT_REASON_UNKNOWN_METRIC),
        (4, usage_pb2.REJECT_REASON_INVALID_QUANTITY),
        (5, usage_pb2.REJECT_REASON_INVALID_QUANTITY),
        (6, usage_pb2.REJECT_REASON_TIMESTAMP_IN_FUTURE),
        (7, usage_pb2.REJECT_REASON_TIMESTAMP_TOO_OLD),
        (8, usage_pb2.REJECT_REASON_PROPERTIES_TOO_LONG),
        (11, usage_pb2.REJECT_REASON_INVALID_CHARACTER),
        *expected_closed,
    ]
    assert (response.accepted, response.duplicates) == (3, 0)
    stored = superuser.execute(
        "SELECT idempotency_key, properties FROM usage_events WHERE org_id = %s ORDER BY 1", (org_id,)
    ).fetchall()
    assert stored == [("k" * 128, None), ("ok-1", None), ("ok-2", '{"region": "eu"}')]


def _bad_request_fields(error: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(error)
    assert status is not None and status.code == code_pb2.INVALID_ARGUMENT
    fields = []
    for detail in status.details:  # beside BadRequest: ErrorInfo (every error carries one)
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            fields.extend(violation.field for violation in bad_request.field_violations)
    assert fields, "INVALID_ARGUMENT without BadRequest field violations"
    return fields


@pytest.mark.parametrize(
    ("org_id", "count", "field"),
    [("", 1, "org_id"), ("bogus", 1, "org_id"), (None, 0, "events"), (None, 10_001, "events")],
)
def test_a_request_wrong_as_a_whole_is_invalid_argument_with_field_violations(
    channel, usage_channel, superuser, org_id, count: int, field: str
) -> None:
    real_org, owner = usage_org(channel, superuser)
    events = [event(f"k{i}") for i in range(count)]

    error = failure(
        lambda: _usage(usage_channel, owner).usage.RecordUsage(
            usage_pb2.RecordUsageRequest(org_id=real_org if org_id is None else org_id, events=events)
        )
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _bad_request_fields(error) == [field]
    assert _stored(superuser, real_org) == (0, 0)


def test_ten_thousand_events_is_the_largest_batch(channel, usage_channel, superuser) -> None:
    org_id, owner = usage_org(channel, superuser)
    events = [event(f"big-{i}") for i in range(10_000)]

    response = _usage(usage_channel, owner).usage.RecordUsage(usage_pb2.RecordUsageRequest(org_id=org_id, events=events))

    assert response.accepted == 10_000
    assert _stored(superuser, org_id) == (10_000, 10_000)


# --- plans ----------------------------------------------------------------------------


def test_starter_rejects_usage_naming_the_plan(channel, usage_channel, superuser) -> None:
    org_id, owner = usage_org(channel, superuser, plan="starter")
    client = _usage(usage_channel, owner)

    error = failure(lambda: client.usage.RecordUsage(usage_pb2.RecordUsageRequest(org_id=org_id, events=[event()])))
    stream = Stream(usage_channel, owner.token)
    ack = stream.send(org_id, [event()])
    stream.close()

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "Starter" in error.details()
    assert ack.status_code == code_pb2.FAILED_PRECONDITION and "Starter" in ack.status_message
    assert _stored(superuser, org_id) == (0, 0)


@pytest.mark.parametrize(("plan", "billed"), [("trial", False), ("pro", False), ("enterprise", True)])
def test_pro_and_trials_record_and_enterprise_records_and_bills(channel, usage_channel, superuser, plan, billed) -> None:
    org_id, owner = usage_org(channel, superuser, plan=plan)
    client = _usage(usage_channel, owner)

    response = client.usage.RecordUsage(usage_pb2.RecordUsageRequest(org_id=org_id, events=[event(quantity=4)]))
    summary = client.usage.GetUsageSummary(usage_pb2.GetUsageSummaryRequest(org_id=org_id))

    assert response.accepted == 1
    assert summary.billed is billed
    assert [(t.metric, t.quantity, t.event_count, t.pending_quantity) for t in summary.totals] == [
        ("api_requests", 4, 1, 4 if billed else 0)
    ]


# --- who may send ---------------------------------------------------------------------


def _record(client: Client, org_id: str) -> grpc.StatusCode:
    try:
        client.usage.RecordUsage(usage_pb2.RecordUsageRequest(org_id=org_id, events=[event()]))
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def _summary(client: Client, org_id: str) -> grpc.StatusCode:
    try:
        client.usage.GetUsageSummary(usage_pb2.GetUsageSummaryRequest(org_id=org_id))
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def _stream(client: Client, org_id: str, usage_channel: grpc.Channel) -> grpc.StatusCode:
    """A refused batch is answered in its ack (the stream stays open)."""
    stream = Stream(usage_channel, client.token)
    try:
        return grpc.StatusCode(next(c for c in grpc.StatusCode if c.value[0] == stream.send(org_id, [event()]).status_code))
    finally:
        stream.close()


# The usage RPCs' role matrix (tests/api/test_role_matrix_coverage.py reads it): the
# permission each needs, and how to call it.
USAGE_RPCS = {
    "RecordUsage": ("usage:write", lambda client, org_id, usage_channel: _record(client, org_id)),
    "StreamUsage": ("usage:write", _stream),
    "GetUsageSummary": ("usage:read", lambda client, org_id, usage_channel: _summary(client, org_id)),
}


@pytest.mark.parametrize("role", list(ROLES))
@pytest.mark.parametrize("rpc", list(USAGE_RPCS))
def test_each_usage_rpc_answers_exactly_the_roles_holding_its_permission(
    channel, usage_channel, superuser, rpc: str, role: str
) -> None:
    permission, call = USAGE_RPCS[rpc]
    org_id, owner = usage_org(channel, superuser)
    caller = owner if role == "owner" else join(channel, owner, org_id, ROLES[role])[0]
    expected = grpc.StatusCode.OK if permission in EXPECTED_PERMISSIONS[role] else grpc.StatusCode.PERMISSION_DENIED
    assert call(_usage(usage_channel, caller), org_id, usage_channel) == expected


@pytest.mark.parametrize("role", list(ROLES))
def test_usage_write_follows_the_role(channel, usage_channel, superuser, role: str) -> None:
    org_id, owner = usage_org(channel, superuser)
    caller = owner if role == "owner" else join(channel, owner, org_id, ROLES[role])[0]
    client = _usage(usage_channel, caller)
    request = usage_pb2.RecordUsageRequest(org_id=org_id, events=[event()])

    if role == "billing_manager":
        assert failure(lambda: client.usage.RecordUsage(request)).code() == grpc.StatusCode.PERMISSION_DENIED
        assert client.usage.GetUsageSummary(usage_pb2.GetUsageSummaryRequest(org_id=org_id)).billed
    else:
        assert client.usage.RecordUsage(request).accepted == 1


def test_a_service_needs_the_scope_and_the_org(channel, usage_channel, superuser) -> None:
    org_id, _ = usage_org(channel, superuser)
    request = usage_pb2.RecordUsageRequest(org_id=org_id, events=[event()])
    scoped = _usage(usage_channel, new_service(channel, scopes=("usage:write",), orgs=(org_id,)))
    unscoped = _usage(usage_channel, new_service(channel, scopes=("usage:read",), orgs=(org_id,)))
    elsewhere = _usage(usage_channel, new_service(channel, scopes=("usage:write",), orgs=("org_" + "1" * 26,)))

    assert scoped.usage.RecordUsage(request).accepted == 1
    assert failure(lambda: unscoped.usage.RecordUsage(request)).code() == grpc.StatusCode.PERMISSION_DENIED
    assert failure(lambda: elsewhere.usage.RecordUsage(request)).code() == grpc.StatusCode.NOT_FOUND


def test_a_stranger_cannot_read_or_write_an_orgs_usage(channel, usage_channel, superuser) -> None:
    org_id, _ = usage_org(channel, superuser)
    stranger = _usage(usage_channel, new_user(channel))

    write = failure(lambda: stranger.usage.RecordUsage(usage_pb2.RecordUsageRequest(org_id=org_id, events=[event()])))
    read = failure(lambda: stranger.usage.GetUsageSummary(usage_pb2.GetUsageSummaryRequest(org_id=org_id)))

    assert write.code() == read.code() == grpc.StatusCode.NOT_FOUND


# --- streams --------------------------------------------------------------------------


def test_a_stream_acknowledges_each_batch_after_it_is_stored(channel, usage_channel, superuser) -> None:
    org_id, owner = usage_org(channel, superuser)
    stream = Stream(usage_channel, owner.token)

    acks = [stream.send(org_id, [event(f"s{batch}-{i}") for i in range(100)]) for batch in range(3)]
    stored_before_close = _stored(superuser, org_id)
    stream.close()

    assert [(a.batch_id, a.accepted, a.duplicates, a.status_code) for a in acks] == [(1, 100, 0, 0), (2, 100, 0, 0), (3, 100, 0, 0)]
    assert stored_before_close == (300, 300)


def test_duplicates_across_streams_and_after_reconnect_count_once(channel, usage_channel, superuser) -> None:
    org_id, owner = usage_org(channel, superuser)
    service = new_service(channel, scopes=("usage:write",), orgs=(org_id,))
    keys = [f"dup-{uuid.uuid4().hex}" for _ in range(50)]

    first = Stream(usage_channel, owner.token)
    a = first.send(org_id, [event(key) for key in keys[:30]])
    first.call.cancel()  # the connection drops after the ack
    second = Stream(usage_channel, service.token)  # another caller, another stream
    b = second.send(org_id, [event(key) for key in keys], batch_id=1)
    c = second.send(org_id, [event(key) for key in keys])
    second.close()

    assert (a.accepted, b.accepted, b.duplicates, c.accepted, c.duplicates) == (30, 20, 30, 0, 50)
    assert _stored(superuser, org_id) == (50, 50)


def test_a_batch_for_a_foreign_org_is_refused_in_its_ack_and_the_stream_goes_on(channel, usage_channel, superuser) -> None:
    org_id, owner = usage_org(channel, superuser)
    foreign_id, _ = usage_org(channel, superuser)
    stream = Stream(usage_channel, owner.token)

    refused = stream.send(foreign_id, [event()])
    invalid = stream.send("bogus", [event()])
    empty = stream.send(org_id, [])
    accepted = stream.send(org_id, [event()])
    stream.close()

    assert (refused.status_code, refused.accepted) == (code_pb2.NOT_FOUND, 0)
    assert invalid.status_code == code_pb2.INVALID_ARGUMENT
    assert empty.status_code == code_pb2.INVALID_ARGUMENT
    assert (accepted.status_code, accepted.accepted) == (code_pb2.OK, 1)
    assert _stored(superuser, foreign_id) == (0, 0)


def test_a_stream_without_a_token_is_refused_before_any_message(usage_channel) -> None:
    import queue

    from nobill.v1 import usage_pb2_grpc

    never: queue.Queue = queue.Queue()  # the client sends nothing at all
    call = usage_pb2_grpc.UsageServiceStub(usage_channel).StreamUsage(iter(never.get, None), timeout=10)

    error = failure(lambda: next(iter(call)))
    never.put(None)

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


def test_keys_and_properties_with_copy_special_characters_are_stored_as_sent(channel, usage_channel, superuser) -> None:
    org_id, owner = usage_org(channel, superuser)
    keys = ["tab\tkey", "back\\slash", "new\nline", r"\N", "plain"]
    events = [event(key, properties=f"p-{key}") for key in keys]

    response = _usage(usage_channel, owner).usage.RecordUsage(usage_pb2.RecordUsageRequest(org_id=org_id, events=events))
    again = _usage(usage_channel, owner).usage.RecordUsage(usage_pb2.RecordUsageRequest(org_id=org_id, events=events))

    assert (response.accepted, again.duplicates) == (5, 5)
    stored = dict(superuser.execute("SELECT idempotency_key, properties FROM usage_events WHERE org_id = %s", (org_id,)).fetchall())
    assert stored == {key: f"p-{key}" for key in keys}


def test_the_summary_reads_a_range_of_periods_and_one_metric(channel, usage_channel, superuser) -> None:
    org_id, owner = usage_org(channel, superuser)
    client = _usage(usage_channel, owner)
    client.usage.RecordUsage(usage_pb2.RecordUsageRequest(org_id=org_id, events=[
        event(metric="api_requests", quantity=2), event(metric="background_jobs", quantity=5)]))
    now = dt.datetime.now(UTC)

    one = client.usage.GetUsageSummary(usage_pb2.GetUsageSummaryRequest(org_id=org_id, metric="background_jobs"))
    ranged = client.usage.GetUsageSummary(usage_pb2.GetUsageSummaryRequest(
        org_id=org_id, start_time=stamp(now - dt.timedelta(days=62)), end_time=stamp(now + dt.timedelta(minutes=1))))
    empty = client.usage.GetUsageSummary(usage_pb2.GetUsageSummaryRequest(
        org_id=org_id, start_time=stamp(now - dt.timedelta(days=90)), end_time=stamp(now - dt.timedelta(days=70))))
    backwards = failure(lambda: client.usage.GetUsageSummary(usage_pb2.GetUsageSummaryRequest(
        org_id=org_id, start_time=stamp(now), end_time=stamp(now - dt.timedelta(days=1)))))
    unknown = failure(lambda: client.usage.GetUsageSummary(usage_pb2.GetUsageSummaryRequest(org_id=org_id, metric="api_calls")))

    assert [(t.metric, t.quantity) for t in one.totals] == [("background_jobs", 5)]
    assert one.totals[0].period_start.ToDatetime(tzinfo=UTC) == periods.period_start(now)
    assert sorted((t.metric, t.quantity) for t in ranged.totals) == [("api_requests", 2), ("background_jobs", 5)]
    assert list(empty.totals) == []
    assert backwards.code() == unknown.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _bad_request_fields(unknown) == ["metric"]


def test_enterprise_without_metered_prices_records_but_has_nothing_pending(channel, usage_channel, superuser) -> None:
    org_id, owner = usage_org(channel, superuser)
    superuser.execute("UPDATE subscriptions SET metered = false WHERE org_id = %s", (org_id,))
    client = _usage(usage_channel, owner)

    client.usage.RecordUsage(usage_pb2.RecordUsageRequest(org_id=org_id, events=[event(quantity=3)]))
    summary = client.usage.GetUsageSummary(usage_pb2.GetUsageSummaryRequest(org_id=org_id))

    assert not summary.billed
    assert [(t.quantity, t.pending_quantity) for t in summary.totals] == [(3, 0)]


def test_an_explicit_epoch_timestamp_is_too_old_not_now(channel, usage_channel, superuser) -> None:
    """Presence decides "unset": 1970-01-01T00:00:00Z sent on purpose is treated like one
    second later (far more than 35 days old), not read as the time of receipt."""
    from google.protobuf.timestamp_pb2 import Timestamp

    org_id, owner = usage_org(channel, superuser)
    events = [
        event("epoch", timestamp=Timestamp(seconds=0, nanos=0)),
        event("epoch-plus-one", timestamp=Timestamp(seconds=1)),
        event("unset"),
    ]

    response = _usage(usage_channel, owner).usage.RecordUsage(usage_pb2.RecordUsageRequest(org_id=org_id, events=events))
    stream = Stream(usage_channel, owner.token)
    ack = stream.send(org_id, [event("stream-epoch", timestamp=Timestamp()), event("stream-unset")])
    stream.close()

    too_old = usage_pb2.REJECT_REASON_TIMESTAMP_TOO_OLD
    assert [(r.index, r.reason) for r in response.rejected] == [(0, too_old), (1, too_old)]
    assert [(r.index, r.reason) for r in ack.rejected] == [(0, too_old)]
    assert (response.accepted, ack.accepted) == (1, 1)
    stored = superuser.execute("SELECT idempotency_key FROM usage_events WHERE org_id = %s ORDER BY 1", (org_id,)).fetchall()
    assert stored == [("stream-unset",), ("unset",)]

"""The usage server never starves: idle streams hold no thread, streams are bounded per
caller and in total, idle streams are closed."""

from __future__ import annotations

import queue
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fixtures_api import failure
from fixtures_usage import Stream, event, usage_org
from nobill.v1 import tenancy_pb2, usage_pb2, usage_pb2_grpc
from support import Client, bearer, new_service


def _idle_stream(usage_channel: grpc.Channel, token: str) -> tuple[grpc.Future, queue.Queue]:
    """A stream that is open and authenticated but sends nothing."""
    requests: queue.Queue = queue.Queue()
    call = usage_pb2_grpc.UsageServiceStub(usage_channel).StreamUsage(
        iter(requests.get, None), metadata=bearer(token), timeout=120
    )
    return call, requests


def test_forty_idle_streams_leave_unary_calls_answering(channel, usage_channel, superuser, settings) -> None:
    org_id, owner = usage_org(channel, superuser)
    count = 40
    streams = [_idle_stream(usage_channel, owner.token) for _ in range(count)]
    try:
        time.sleep(0.5)  # every stream is open on the server (more than the 16 test threads)
        started = time.perf_counter()
        organization = owner.tenancy.GetOrganization(tenancy_pb2.GetOrganizationRequest(org_id=org_id), timeout=5)
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        usage = Client(usage_channel, owner.token)
        recorded = usage.usage.RecordUsage(usage_pb2.RecordUsageRequest(org_id=org_id, events=[event()]), timeout=5)
        summary = usage.usage.GetUsageSummary(usage_pb2.GetUsageSummaryRequest(org_id=org_id), timeout=5)
        elapsed = time.perf_counter() - started
        # And a 41st stream still gets its batch through.
        stream = Stream(usage_channel, owner.token)
        ack = stream.send(org_id, [event()])
        stream.close()
    finally:
        for call, requests in streams:
            requests.put(None)
            call.cancel()

    assert organization.organization.id == org_id
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert recorded.accepted == 1 and summary.totals[0].quantity == 1
    assert ack.accepted == 1
    assert elapsed < 5


@pytest.fixture
def small_usage_server(settings, database):
    from nobill.api.usage_server import start_usage_server

    running = start_usage_server(
        settings.replace(usage_max_streams=3, usage_max_streams_per_caller=2, usage_stream_idle_seconds=1), database
    )
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield running, channel
    running.stop(grace=1)


def test_streams_beyond_the_per_caller_and_total_limits_are_resource_exhausted(channel, superuser, small_usage_server) -> None:
    running, usage_channel = small_usage_server
    org_id, owner = usage_org(channel, superuser)
    other = new_service(channel, scopes=("usage:write",), orgs=(org_id,))
    third = new_service(channel, scopes=("usage:write",), orgs=(org_id,))
    mine = [Stream(usage_channel, owner.token) for _ in range(2)]
    for stream in mine:
        assert stream.send(org_id, [event()]).accepted == 1

    per_caller = Stream(usage_channel, owner.token)
    per_caller_error = failure(lambda: per_caller.send(org_id, [event()]))
    theirs = Stream(usage_channel, other.token)
    assert theirs.send(org_id, [event()]).accepted == 1
    total = Stream(usage_channel, third.token)
    total_error = failure(lambda: total.send(org_id, [event()]))
    for stream in (*mine, theirs):
        stream.close()

    assert per_caller_error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "per caller" in per_caller_error.details()
    assert total_error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert running.limits.open_streams == 0


def test_an_idle_stream_is_closed_and_its_slot_freed(channel, superuser, small_usage_server) -> None:
    running, usage_channel = small_usage_server
    org_id, owner = usage_org(channel, superuser)
    call, requests = _idle_stream(usage_channel, owner.token)

    responses = list(call)  # ends when the server closes the idle stream
    requests.put(None)

    assert responses == [] and call.code() == grpc.StatusCode.OK
    assert running.limits.open_streams == 0


def test_when_writes_fall_behind_senders_slow_down_and_nothing_is_lost(settings, database, channel, superuser) -> None:
    """One database thread for eight busy streams: batches queue behind it (flow control
    holds the senders back), every batch is acknowledged, every event stored once."""
    from nobill.api.usage_server import start_usage_server
    from nobill.client import UsageRecorder

    org_id, owner = usage_org(channel, superuser)
    running = start_usage_server(settings.replace(usage_db_threads=1), database)
    try:
        recorders = [
            UsageRecorder(f"127.0.0.1:{running.port}", owner.token, batch_size=500, max_in_flight=4) for _ in range(8)
        ]
        for index, recorder in enumerate(recorders):
            recorder.record_many(org_id, "api_requests", [f"bp-{index}-{i}" for i in range(2500)])
        for recorder in recorders:
            assert recorder.close(timeout=60)
    finally:
        running.stop(grace=1)

    assert sum(r.stats.accepted for r in recorders) == 20_000
    assert sum(r.stats.batches_refused for r in recorders) == 0
    count = superuser.execute("SELECT count(*) FROM usage_events WHERE org_id = %s", (org_id,)).fetchone()
    assert count == (20_000,)

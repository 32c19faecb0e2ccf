"""The client library against the real servers: the batching recorder delivers every
event exactly once (duplicates, reconnects, refusals), flushes on close; typed stubs
send the token; the package imports nothing from the server."""

from __future__ import annotations

import ast
import random
import socket
import sys
import threading
import time
from pathlib import Path

import grpc

from fixtures_usage import usage_org
from nobill.client import NobillClient, UsageRecorder
from nobill.v1 import tenancy_pb2, usage_pb2
from support import mint

ROOT = Path(__file__).resolve().parents[2]


def _stored(superuser, org_id: str) -> tuple[int, int]:
    count, total = superuser.execute(
        "SELECT count(*), coalesce(sum(quantity), 0) FROM usage_events WHERE org_id = %s", (org_id,)
    ).fetchone()
    return int(count), int(total)


def test_the_recorder_delivers_every_event_once_with_duplicate_keys(channel, usage_server, superuser) -> None:
    orgs = [usage_org(channel, superuser) for _ in range(2)]
    token = mint("recorder", service=True, scopes=("usage:write",), orgs=tuple(org for org, _ in orgs))
    chooser = random.Random(7)
    keys: dict[str, list[str]] = {org: [] for org, _ in orgs}

    with UsageRecorder(f"127.0.0.1:{usage_server.port}", token, batch_size=300) as recorder:
        for i in range(3000):
            org_id = orgs[i % 2][0]
            resent = keys[org_id] and chooser.random() < 0.05
            key = chooser.choice(keys[org_id]) if resent else f"ev-{i}"
            if not resent:
                keys[org_id].append(key)
            recorder.record(org_id, "api_requests", 2, idempotency_key=key)
    unique = sum(len(k) for k in keys.values())

    assert recorder.stats.accepted == unique
    assert recorder.stats.accepted + recorder.stats.duplicates == 3000
    for org_id, _ in orgs:
        assert _stored(superuser, org_id) == (len(keys[org_id]), 2 * len(keys[org_id]))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unacknowledged_batches_are_resent_after_the_server_comes_back(settings, database, channel, superuser) -> None:
    from nobill.api.usage_server import start_usage_server

    org_id, owner = usage_org(channel, superuser)
    server_settings = settings.replace(usage_grpc_addr=f"127.0.0.1:{_free_port()}")
    server = start_usage_server(server_settings, database)
    first_ack = threading.Event()
    recorder = UsageRecorder(
        server_settings.usage_grpc_addr, owner.token, batch_size=200, max_in_flight=8,
        on_ack=lambda request, response, seconds: first_ack.set(),
    )

    def send() -> None:
        for i in range(6000):
            recorder.record(org_id, "background_jobs", 1, idempotency_key=f"r-{i}")
            if i % 500 == 499:
                time.sleep(0.02)

    sender = threading.Thread(target=send)
    sender.start()
    assert first_ack.wait(timeout=10)
    server.stop(grace=0)  # the connection drops with batches in flight
    sender.join()
    time.sleep(0.5)
    server = start_usage_server(server_settings, database)
    try:
        assert recorder.flush(timeout=30)
        recorder.close()
    finally:
        server.stop(grace=1)

    assert _stored(superuser, org_id) == (6000, 6000)
    # A batch committed whose ack was lost is resent and comes back as duplicates.
    assert recorder.stats.accepted + recorder.stats.duplicates == 6000
    assert recorder.stats.streams >= 2


def test_a_refused_batch_is_reported_not_retried(channel, usage_server, superuser) -> None:
    org_id, owner = usage_org(channel, superuser)
    foreign_id, _ = usage_org(channel, superuser)

    with UsageRecorder(f"127.0.0.1:{usage_server.port}", owner.token) as recorder:
        recorder.record(foreign_id, "api_requests", 1)
        recorder.record(org_id, "api_requests", 1)
        assert recorder.flush(timeout=10)

    assert recorder.stats.batches_refused == 1 and recorder.stats.accepted == 1
    assert recorder.stats.refusals[0][:2] == (foreign_id, grpc.StatusCode.NOT_FOUND.value[0])
    assert _stored(superuser, foreign_id) == (0, 0)


def test_close_flushes_a_partial_batch(channel, usage_server, superuser) -> None:
    org_id, owner = usage_org(channel, superuser)
    recorder = UsageRecorder(f"127.0.0.1:{usage_server.port}", owner.token, batch_size=1000, linger=60)
    recorder.record(org_id, "reports_generated", 3)

    assert recorder.close(timeout=10)
    assert _stored(superuser, org_id) == (1, 3)


def test_typed_stubs_send_the_token_to_both_servers(channel, server, usage_server, superuser) -> None:
    org_id, owner = usage_org(channel, superuser)
    tokens = iter([owner.token] * 10)

    with NobillClient(f"127.0.0.1:{server.port}", lambda: next(tokens), usage_target=f"127.0.0.1:{usage_server.port}") as client:
        organization = client.tenancy.GetOrganization(tenancy_pb2.GetOrganizationRequest(org_id=org_id), timeout=5)
        summary = client.usage.GetUsageSummary(usage_pb2.GetUsageSummaryRequest(org_id=org_id), timeout=5)

    assert organization.organization.id == org_id and summary.billed


def test_the_client_package_imports_nothing_from_the_server() -> None:
    allowed = ("grpc", "google.protobuf", "nobill.v1", "nobill.client", "__future__")
    sources = sorted((ROOT / "client" / "nobill" / "client").glob("*.py"))
    assert len(sources) >= 3, "the client's sources moved: point this test at them"
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name.startswith("nobill") or name.split(".")[0] not in sys.stdlib_module_names:
                    assert name.startswith(allowed), f"{path.name} imports {name}"


def test_record_many_hands_over_a_batch_at_once(channel, usage_server, superuser) -> None:
    org_id, owner = usage_org(channel, superuser)

    with UsageRecorder(f"127.0.0.1:{usage_server.port}", owner.token, batch_size=700) as recorder:
        recorder.record_many(org_id, "api_requests", [f"m-{i}" for i in range(1500)], 2)
        recorder.record_many(org_id, "api_requests", [f"m-{i}" for i in range(100)], 2)  # resent

    assert (recorder.stats.accepted, recorder.stats.duplicates) == (1500, 100)
    assert _stored(superuser, org_id) == (1500, 3000)


def test_an_event_with_properties_and_no_timestamp_is_stamped_on_receipt(channel, usage_server, superuser) -> None:
    """No timestamp is sent as no timestamp (field presence), not as 1970-01-01, which the
    server refuses as too old; a timestamp given is sent as given."""
    org_id, owner = usage_org(channel, superuser)
    now = time.time()

    with UsageRecorder(f"127.0.0.1:{usage_server.port}", owner.token) as recorder:
        recorder.record(org_id, "api_requests", idempotency_key="with-props", properties='{"region": "eu"}')
        recorder.record(org_id, "api_requests", idempotency_key="stamped", timestamp=now - 60)
        recorder.record(org_id, "api_requests", idempotency_key="epoch", timestamp=0.0)

    assert (recorder.stats.accepted, recorder.stats.rejected) == (2, 1)
    stored = dict(superuser.execute(
        "SELECT idempotency_key, extract(epoch FROM occurred_at)::float FROM usage_events WHERE org_id = %s", (org_id,)
    ).fetchall())
    assert set(stored) == {"with-props", "stamped"}
    assert abs(stored["with-props"] - now) < 60 and abs(stored["stamped"] - (now - 60)) < 1

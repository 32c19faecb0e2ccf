"""The metrics endpoint: go-grpc-prometheus names for every call (refused ones too),
database pool use, job queue depth and failures, Stripe and webhook counters."""

from __future__ import annotations

import re
import time
import urllib.request
import uuid
from collections.abc import Iterator

import dramatiq
import grpc
import pytest
from dramatiq.brokers.redis import RedisBroker

from nobill import metrics
from nobill.metrics import serve_metrics
from nobill.v1 import tenancy_pb2
from support import Client, new_user


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def value(text: str, name: str, **labels: str) -> float:
    """The sample `name` whose labels include `labels` (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        sample, _, number = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="([^"]*)"', sample))
        if all(found.get(key) == wanted for key, wanted in labels.items()):
            return float(number)
    return 0.0


@pytest.fixture
def endpoint(redis_url: str) -> Iterator[tuple[int, str]]:
    namespace = f"nobill-metrics-{uuid.uuid4().hex[:8]}"
    running = serve_metrics("127.0.0.1:0", redis_url=redis_url, redis_namespace=namespace)
    yield running.port, namespace
    running.stop()


GET_ORG = {"grpc_type": "unary", "grpc_service": "nobill.v1.TenancyService", "grpc_method": "GetOrganization"}


def test_calls_are_counted_by_service_method_and_code(channel, endpoint) -> None:
    port, _ = endpoint
    owner = new_user(channel)
    org = owner.tenancy.CreateOrganization(tenancy_pb2.CreateOrganizationRequest(name="Metrics")).organization
    before = scrape(port)

    owner.tenancy.GetOrganization(tenancy_pb2.GetOrganizationRequest(org_id=org.id))
    with pytest.raises(grpc.RpcError):
        Client(channel, "bad-token").tenancy.GetOrganization(tenancy_pb2.GetOrganizationRequest(org_id=org.id))
    after = scrape(port)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("grpc_server_started_total", **GET_ORG) == 2
    assert delta("grpc_server_handled_total", **GET_ORG, grpc_code="OK") == 1
    assert delta("grpc_server_handled_total", **GET_ORG, grpc_code="UNAUTHENTICATED") == 1
    assert delta("grpc_server_handling_seconds_count", **GET_ORG) == 2
    assert value(after, "grpc_server_handling_seconds_bucket", **GET_ORG, le="+Inf") >= 2


def test_database_pool_use_is_reported(database, endpoint) -> None:
    port, _ = endpoint
    before = value(scrape(port), "nobill_db_pool_connections_in_use")
    with database.engine.connect():
        during = value(scrape(port), "nobill_db_pool_connections_in_use")
    assert during == before + 1
    assert value(scrape(port), "nobill_db_pool_connections_limit") >= 2 * database.engine.pool.size()


def test_job_queue_depth_is_read_from_redis(redis_url: str, endpoint) -> None:
    port, namespace = endpoint
    broker = RedisBroker(url=redis_url, namespace=namespace)
    try:
        broker.declare_queue("emails")
        for _ in range(3):
            broker.enqueue(dramatiq.Message(queue_name="emails", actor_name="send", args=(), kwargs={}, options={}))
        assert value(scrape(port), "nobill_jobs_queue_depth", queue="emails") == 3
        assert value(scrape(port), "nobill_jobs_dead_letters", queue="emails") == 0
    finally:
        broker.flush_all()
        broker.close()


def test_failed_jobs_are_counted(redis_url: str, endpoint) -> None:
    from nobill.jobs.runner import start_worker

    port, namespace = endpoint
    worker = start_worker(redis_url, threads=1, namespace=namespace)
    try:
        actor_name = f"explode_{uuid.uuid4().hex[:6]}"

        def explode() -> None:
            raise RuntimeError("boom")

        actor = dramatiq.actor(explode, actor_name=actor_name, queue_name="metrics_test", max_retries=0)
        worker.broker.declare_queue("metrics_test")
        worker.stop(timeout=5_000)  # restart so the worker consumes the queue declared just now
        worker = dramatiq.Worker(worker.broker, worker_threads=1, worker_timeout=100)
        worker.start()
        actor.send()
        deadline = time.monotonic() + 20
        while value(scrape(port), "nobill_jobs_failed_total", queue="metrics_test", actor=actor_name) < 1:
            assert time.monotonic() < deadline, "the failure was not counted"
            time.sleep(0.1)
        failed = value(scrape(port), "nobill_jobs_processed_total", queue="metrics_test", actor=actor_name, outcome="failed")
        assert failed == 1
    finally:
        worker.stop(timeout=5_000)
        worker.broker.flush_all()
        worker.broker.close()


def test_stripe_calls_and_webhook_events_have_counters(endpoint) -> None:
    port, _ = endpoint
    before = scrape(port)
    metrics.stripe_call("POST /v1/customers", "ok")
    metrics.webhook_event("invoice.paid", "applied")
    after = scrape(port)
    labels = {"endpoint": "POST /v1/customers", "outcome": "ok"}
    assert value(after, "nobill_stripe_requests_total", **labels) == value(before, "nobill_stripe_requests_total", **labels) + 1
    labels = {"type": "invoice.paid", "result": "applied"}
    assert (
        value(after, "nobill_stripe_webhook_events_total", **labels)
        == value(before, "nobill_stripe_webhook_events_total", **labels) + 1
    )


def test_the_pool_limit_counts_each_database_once(database, endpoint) -> None:
    from sqlalchemy import create_engine

    from nobill.db.database import Database

    port, _ = endpoint
    before = value(scrape(port), "nobill_db_pool_connections_limit")
    # Built by hand (never counted), then disposed twice: the gauge does not move.
    by_hand = Database(engine=create_engine("postgresql+psycopg://nobody@127.0.0.1:1/nothing"), app_role="nobill_app")
    by_hand.dispose()
    by_hand.dispose()
    assert value(scrape(port), "nobill_db_pool_connections_limit") == before

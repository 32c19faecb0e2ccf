"""Prometheus metrics: the one place that declares them, and the endpoint that serves them.

gRPC metrics use go-grpc-prometheus' names, so existing dashboards work unchanged. Other
domains record through the small functions at the bottom (`stripe_call`, `webhook_event`).

Multi-process aware: `nobill serve --processes N` points PROMETHEUS_MULTIPROC_DIR at a
directory before the server processes start; each writes its samples there and the parent
serves their sum. A single process serves its own registry.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# --- gRPC (go-grpc-prometheus names and labels) ------------------------------------------

_GRPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")

GRPC_STARTED = Counter("grpc_server_started_total", "Total number of RPCs started on the server.", _GRPC_LABELS)
GRPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "Total number of RPCs completed on the server, regardless of success or failure.",
    (*_GRPC_LABELS, "grpc_code"),
)
GRPC_HANDLING_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
    _GRPC_LABELS,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
GRPC_MSG_RECEIVED = Counter(
    "grpc_server_msg_received_total", "Total number of RPC stream messages received on the server.", _GRPC_LABELS
)

class MethodMetrics:
    """One RPC method's gRPC metrics, with label children bound once (not on every call).
    Used by the server interceptor; a grpc.aio server records through it the same way."""

    def __init__(self, grpc_type: str, method: str) -> None:
        service, _, name = method.lstrip("/").partition("/")
        self._labels = (grpc_type, service, name)
        self._started = GRPC_STARTED.labels(*self._labels)
        self._seconds = GRPC_HANDLING_SECONDS.labels(*self._labels)
        self._received = GRPC_MSG_RECEIVED.labels(*self._labels)
        self._handled: dict[Any, Any] = {}

    def started(self) -> None:
        self._started.inc()

    def handled(self, code: Any, seconds: float) -> None:
        """`code`: the grpc.StatusCode the call ended with."""
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = GRPC_HANDLED.labels(*self._labels, code.name)
        child.inc()
        self._seconds.observe(seconds)

    def counting(self, requests: Iterator[Any]) -> Iterator[Any]:
        for request in requests:
            self._received.inc()
            yield request


# --- database pool -------------------------------------------------------------------------

DB_POOL_IN_USE = Gauge(
    "nobill_db_pool_connections_in_use", "Database connections checked out of the pool.", multiprocess_mode="livesum"
)
DB_POOL_LIMIT = Gauge(
    "nobill_db_pool_connections_limit",
    "Most database connections the pool may open (pool size plus overflow).",
    multiprocess_mode="livesum",
)

# --- jobs ---------------------------------------------------------------------------------

JOBS_PROCESSED = Counter(
    "nobill_jobs_processed_total", "Job messages a worker finished, by outcome (ok, failed, skipped).",
    ("queue", "actor", "outcome"),
)
JOBS_FAILED = Counter("nobill_jobs_failed_total", "Job messages whose actor raised.", ("queue", "actor"))
JOBS_PARKED = Counter(
    "nobill_jobs_parked_total",
    "Jobs parked by the poison rule (failed the same way NOBILL_JOB_POISON_AFTER times; `nobill jobs replay`).",
    ("queue", "actor"),
)

# --- Stripe (recorded by nobill/stripe and the webhook ingestion) --------------------------

STRIPE_REQUESTS = Counter(
    "nobill_stripe_requests_total", "Calls to the Stripe API by endpoint and outcome.", ("endpoint", "outcome")
)
WEBHOOK_EVENTS = Counter(
    "nobill_stripe_webhook_events_total", "Stripe webhook events received, by event type and result.", ("type", "result")
)

WEBHOOK_REFUSED = Counter(
    "nobill_stripe_webhook_refused_total",
    "Stripe webhook events refused for good after the re-read, by event type and reason.", ("type", "reason"),
)


def stripe_call(endpoint: str, outcome: str) -> None:
    """Count one Stripe API call. `endpoint`: a template such as "POST /v1/customers" (never
    an id); `outcome`: "ok", or the error's kind ("card_error", "rate_limited", "unavailable")."""
    STRIPE_REQUESTS.labels(endpoint, outcome).inc()


def webhook_event(event_type: str, result: str, count: int = 1) -> None:
    """Count webhook events (one, or `count` alike). `result`: "applied", "duplicate", "ignored", "rejected", ..."""
    WEBHOOK_EVENTS.labels(event_type, result).inc(count)


def webhook_refused(event_type: str, reason: str) -> None:
    """Count one webhook event refused for good (`reason`: a stable code such as
    "object_customer_mismatch")."""
    WEBHOOK_REFUSED.labels(event_type, reason).inc()


# --- collectors read at scrape time -------------------------------------------------------


class QueueDepthCollector(Collector):
    """Messages waiting in each Dramatiq queue and in its dead-letter queue, read from Redis
    when scraped (every process that shares the namespace sees the same numbers)."""

    def __init__(self, redis_url: str, namespace: str) -> None:
        self._redis_url = redis_url
        self._namespace = namespace
        self._client: Any = None

    def _redis(self) -> Any:
        if self._client is None:
            import redis

            self._client = redis.Redis.from_url(self._redis_url, socket_timeout=2, socket_connect_timeout=2)
        return self._client

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily("nobill_jobs_queue_depth", "Messages waiting (or delayed) in a job queue.", labels=["queue"])
        dead = GaugeMetricFamily("nobill_jobs_dead_letters", "Messages in a job queue's dead-letter queue.", labels=["queue"])
        parked = GaugeMetricFamily(
            "nobill_jobs_waiting_replay", "Jobs parked by the poison rule, waiting for `nobill jobs replay`."
        )
        try:
            client = self._redis()
            prefix = f"{self._namespace}:"
            queues = set()
            for key in client.scan_iter(match=f"{prefix}*.msgs", count=500):
                name = key.decode()[len(prefix) : -len(".msgs")]
                if not name.endswith((".XQ", ".DQ")):
                    queues.add(name)
            for queue in sorted(queues):
                full = prefix + queue
                depth.add_metric([queue], client.hlen(f"{full}.msgs") + client.hlen(f"{full}.DQ.msgs"))
                dead.add_metric([queue], client.zcard(f"{full}.XQ"))
            parked.add_metric([], client.scard(f"{prefix}poison:parked"))  # nobill/jobs/poison.py
        except Exception as error:  # a scrape must not fail because Redis is away
            log.warning("cannot read job queue depth", extra={"error": str(error)})
        yield depth
        yield dead
        yield parked


# --- serving -------------------------------------------------------------------------------


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def registry_to_serve(extra: Iterable[Collector] = ()) -> CollectorRegistry:
    """The registry an endpoint serves: this process's own, or the sum of every process
    writing to PROMETHEUS_MULTIPROC_DIR."""
    path = multiprocess_dir()
    if path:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)
    else:
        registry = REGISTRY
    for collector in extra:
        registry.register(collector)
    return registry


class MetricsEndpoint:
    """A running /metrics HTTP endpoint."""

    def __init__(self, server: Any, thread: Any, port: int, registry: CollectorRegistry, extra: list[Collector]) -> None:
        self._server = server
        self._thread = thread
        self.port = port
        self._registry = registry
        self._extra = extra

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        for collector in self._extra:
            try:
                self._registry.unregister(collector)
            except KeyError:
                pass


def serve_metrics(addr: str, *, redis_url: str | None = None, redis_namespace: str = "nobill") -> MetricsEndpoint:
    """Serve /metrics on `addr` (host:port; port 0 picks one). Raises OSError if taken."""
    host, _, port = addr.rpartition(":")
    extra: list[Collector] = [QueueDepthCollector(redis_url, redis_namespace)] if redis_url else []
    registry = registry_to_serve(extra)
    server, thread = start_http_server(int(port), addr=host.strip("[]"), registry=registry)
    bound = server.server_address[1]
    log.info("serving metrics", extra={"addr": f"{host}:{bound}"})
    return MetricsEndpoint(server, thread, bound, registry, extra)


def mark_process_dead(pid: int) -> None:
    """Drop a stopped server process's live gauges from the multi-process sum."""
    path = multiprocess_dir()
    if path:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, path)

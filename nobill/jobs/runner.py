"""Runs Dramatiq actors inside this process (`nobill worker`, and `nobill dev`)."""

from __future__ import annotations

import importlib
import logging

import dramatiq

from nobill.config import Settings
from nobill.jobs.actors import ACTOR_MODULES
from nobill.jobs.broker import configure_broker
from nobill.jobs.periodic import Periodic
from nobill.shutdown import stop_requested

log = logging.getLogger(__name__)


def start_worker(
    redis_url: str, *, threads: int = 8, namespace: str = "nobill", usage_aggregate_seconds: float = 1.0
) -> dramatiq.Worker:
    """Configure the broker, register every actor and start consuming; returns the worker."""
    broker = configure_broker(redis_url, namespace=namespace)
    for module in ACTOR_MODULES:
        importlib.import_module(module)
    from nobill.usage.actors import schedule as usage_schedule

    broker.add_middleware(Periodic(usage_schedule(usage_aggregate_seconds)))
    broker.emit_after("process_boot")
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=1000)
    worker.start()
    log.info("worker started", extra={"threads": threads, "actors": sorted(broker.get_declared_actors())})
    return worker


def run_worker(settings: Settings, *, threads: int) -> None:
    """Run until SIGTERM/SIGINT, then finish the messages in hand and stop."""
    stop = stop_requested()
    worker = start_worker(
        settings.require("redis_url"), threads=threads, namespace=settings.redis_namespace,
        usage_aggregate_seconds=settings.usage_aggregate_seconds,
    )
    stop.wait()
    log.info("worker stopping")
    worker.stop(timeout=30_000)
    worker.broker.close()

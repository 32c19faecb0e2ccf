"""Runs Dramatiq actors inside this process (`nobill worker`, and `nobill dev`)."""

from __future__ import annotations

import importlib
import logging
from typing import Any

import dramatiq

from nobill.config import Settings
from nobill.jobs.modules import JOB_MODULES
from nobill.jobs.broker import configure_broker
from nobill.jobs.poison import DEFAULT_POISON_AFTER
from nobill.shutdown import stop_requested

log = logging.getLogger(__name__)


def start_worker(
    redis_url: str,
    *,
    threads: int = 8,
    namespace: str = "nobill",
    settings: Settings | None = None,
    database: Any = None,
) -> dramatiq.Worker:
    """Configure the broker, register every actor and start consuming; returns the worker.
    Actors use `settings` (and `database`, when given) for their database and Stripe."""
    from nobill.jobs import runtime

    if settings is not None:
        runtime.configure(settings, database=database)
    broker = configure_broker(
        redis_url, namespace=namespace, poison_after=settings.job_poison_after if settings is not None else DEFAULT_POISON_AFTER
    )
    for name in JOB_MODULES:
        module = importlib.import_module(name)
        # A module imported earlier in this process bound its actors to an older broker.
        for value in vars(module).values():
            if isinstance(value, dramatiq.Actor) and value.actor_name not in broker.get_declared_actors():
                value.broker = broker
                broker.declare_actor(value)
    broker.emit_after("process_boot")
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=1000)
    worker.start()
    log.info("worker started", extra={"threads": threads, "actors": sorted(broker.get_declared_actors())})
    return worker


def run_worker(settings: Settings, *, threads: int) -> None:
    """Run until SIGTERM/SIGINT, then finish the messages in hand and stop."""
    stop = stop_requested()
    if settings.audit_keys:  # actors that change an org write audit events
        from nobill.audit import keys

        keys.install(keys.from_settings(settings.audit_keys))
    worker = start_worker(
        settings.require("redis_url"), threads=threads, namespace=settings.redis_namespace, settings=settings
    )
    stop.wait()
    log.info("worker stopping")
    worker.stop(timeout=30_000)
    worker.broker.close()

"""Periodic jobs: a worker middleware that sends registered actors' messages on a fixed
interval while the worker runs. Several workers may each send them: every periodic actor
is idempotent, so a duplicate costs a little work and nothing else."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import dramatiq
from dramatiq.middleware import Middleware

log = logging.getLogger(__name__)


class Periodic(Middleware):
    def __init__(self, schedule: list[tuple[Callable[[], dramatiq.Actor], float]]) -> None:
        # Actors are looked up lazily: they are declared after the broker is configured.
        self._schedule = schedule
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.clear()
        for resolve, seconds in self._schedule:
            thread = threading.Thread(target=self._tick, args=(resolve, seconds), name="periodic", daemon=True)
            thread.start()
            self._threads.append(thread)

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    def _tick(self, resolve: Callable[[], dramatiq.Actor], seconds: float) -> None:
        while not self._stop.wait(seconds):
            try:
                resolve().send()
            except Exception:  # Redis briefly away: the next tick tries again
                log.warning("periodic job not sent", exc_info=True)

"""`nobill scheduler`: enqueues the periodic jobs (sweeps, trial expiry, reconciliation).

Several schedulers may run for availability; one leader (a Redis lock renewed while it
lives) enqueues, the others wait to take over. The jobs themselves are idempotent, so a
duplicate run during a leader change costs work, not correctness."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass

from nobill.config import Settings
from nobill.jobs.broker import configure_broker
from nobill.jobs.send import send

log = logging.getLogger("nobill.scheduler")

LEASE_SECONDS = 15


@dataclass(frozen=True)
class Periodic:
    actor_name: str
    every_seconds: float


SCHEDULE: tuple[Periodic, ...] = (
    Periodic("nobill.billing.sweep_outbox", 30),
    Periodic("nobill.billing.sweep_inbox", 30),
    Periodic("nobill.billing.expire_trials", 60),
    Periodic("nobill.billing.reconcile_seats", 3600),
    # Aggregation lag is about this interval plus the aggregation itself.
    Periodic("nobill.usage.sweep", 1),
    Periodic("nobill.usage.maintain_partitions", 3600),
    # Well inside Stripe's one-hour grace after a period ends.
    Periodic("nobill.usage.report_sweep", 30),
    Periodic("nobill.usage.reconcile_sweep", 3600),
)

# Renew only a lease we still hold; release only our own.
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


class Scheduler:
    def __init__(self, redis_url: str, *, namespace: str, schedule: tuple[Periodic, ...] = SCHEDULE) -> None:
        import redis

        self._redis = redis.Redis.from_url(redis_url)
        self._key = f"{namespace}:scheduler:leader"
        self._token = uuid.uuid4().hex
        self._schedule = schedule
        self._next_run = {job.actor_name: 0.0 for job in schedule}
        self.is_leader = False

    def _hold_lease(self) -> bool:
        ms = LEASE_SECONDS * 1000
        if self.is_leader:
            held = bool(self._redis.eval(_RENEW, 1, self._key, self._token, ms))
        else:
            held = bool(self._redis.set(self._key, self._token, nx=True, px=ms))
        if held != self.is_leader:
            log.info("scheduler leadership changed", extra={"leader": held, "token": self._token})
        self.is_leader = held
        return held

    def tick(self, now: float | None = None) -> list[str]:
        """Enqueue the jobs that are due if this process leads; returns their names."""
        now = time.monotonic() if now is None else now
        if not self._hold_lease():
            return []
        sent = []
        for job in self._schedule:
            if now >= self._next_run[job.actor_name]:
                send(job.actor_name)
                self._next_run[job.actor_name] = now + job.every_seconds
                sent.append(job.actor_name)
        return sent

    def release(self) -> None:
        self._redis.eval(_RELEASE, 1, self._key, self._token)
        self.is_leader = False

    def run(self, stop: threading.Event, *, interval: float = 1.0) -> None:
        while not stop.is_set():
            try:
                sent = self.tick()
                if sent:
                    # Every second at least one job is due: DEBUG, or INFO would be mostly this.
                    log.debug("scheduled", extra={"jobs": sent})
            except Exception:  # Redis blips must not end the scheduler
                log.exception("scheduler tick failed")
                self.is_leader = False
            stop.wait(interval)
        self.release()


def start_scheduler(settings: Settings, stop: threading.Event) -> threading.Thread:
    """Run a scheduler in a daemon thread until `stop` is set (`nobill dev`, whose worker
    has configured the broker already)."""
    scheduler = Scheduler(settings.require("redis_url"), namespace=settings.redis_namespace)
    thread = threading.Thread(target=scheduler.run, args=(stop,), name="scheduler", daemon=True)
    thread.start()
    return thread


def run_scheduler(settings: Settings) -> None:
    """`nobill scheduler`: run until SIGTERM/SIGINT."""
    from nobill.shutdown import stop_requested

    stop = stop_requested()
    configure_broker(settings.require("redis_url"), namespace=settings.redis_namespace)
    scheduler = Scheduler(settings.require("redis_url"), namespace=settings.redis_namespace)
    log.info("scheduler started", extra={"jobs": [job.actor_name for job in SCHEDULE]})
    scheduler.run(stop)
    log.info("scheduler stopped")

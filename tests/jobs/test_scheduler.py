"""`nobill scheduler`: one leader at a time enqueues the periodic jobs."""

from __future__ import annotations

import uuid

import redis

from nobill.jobs.broker import configure_broker
from nobill.jobs.scheduler import SCHEDULE, Periodic, Scheduler


def test_one_leader_enqueues_and_another_takes_over_when_it_leaves(redis_url: str) -> None:
    namespace = f"nobill-test-scheduler-{uuid.uuid4().hex[:8]}"
    configure_broker(redis_url, namespace=namespace)
    schedule = (Periodic("nobill.billing.sweep_inbox", 10),)
    first = Scheduler(redis_url, namespace=namespace, schedule=schedule)
    second = Scheduler(redis_url, namespace=namespace, schedule=schedule)
    assert first.tick(now=0) == ["nobill.billing.sweep_inbox"]
    assert second.tick(now=0) == [] and not second.is_leader
    assert first.tick(now=5) == [], "not due again yet"
    assert first.tick(now=10) == ["nobill.billing.sweep_inbox"]
    queued = redis.Redis.from_url(redis_url).llen(f"{namespace}:billing")
    assert queued == 2
    first.release()
    assert second.tick(now=11) == ["nobill.billing.sweep_inbox"] and second.is_leader
    second.release()


def test_the_schedule_covers_sweeps_trials_and_reconciliation() -> None:
    names = {job.actor_name for job in SCHEDULE}
    assert names == {
        "nobill.billing.sweep_outbox",
        "nobill.billing.sweep_inbox",
        "nobill.billing.expire_trials",
        "nobill.billing.reconcile_seats",
        "nobill.usage.sweep",
        "nobill.usage.maintain_partitions",
        "nobill.usage.report_sweep",
        "nobill.usage.reconcile_sweep",
    }

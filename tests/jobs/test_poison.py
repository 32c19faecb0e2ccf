"""The poison rule with a real Dramatiq worker and scheduler: an org whose aggregation fails
the same way every time is parked after NOBILL_JOB_POISON_AFTER failures (metric, one
ERROR line a person can act on, no further retries), and `nobill jobs replay` runs it
again once the cause is gone."""

from __future__ import annotations

import argparse
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import dramatiq
import pytest
import redis

from nobill import ids, metrics
from nobill.audit.actors import Actor, ActorType, AuditContext
from nobill.db.unit_of_work import UnitOfWork
from nobill.cli import jobs as job_commands
from nobill.jobs import poison
from nobill.tenancy import service as tenancy
from nobill.usage import ingest

AGGREGATE = "nobill.usage.aggregate"
POISON_AFTER = 3


def _org(database) -> str:  # noqa: ANN001
    with UnitOfWork(database) as uow:
        user_id = tenancy.provision_user(uow=uow, subject=f"poison-{uuid.uuid4().hex}", email=None)
        uow.commit()
    org_id = ids.new_id("org")
    with UnitOfWork(database, org_id=org_id) as uow:
        tenancy.create(uow=uow, context=AuditContext(Actor(ActorType.USER, user_id, "t"), "req"), owner_user_id=user_id, name="Poison")
        uow.commit()
    return org_id


def _record(database, org_id: str, count: int) -> None:  # noqa: ANN001
    keys = [uuid.uuid4().hex for _ in range(count)]
    with UnitOfWork(database, org_id=org_id) as uow:
        ingest.record_usage(uow=uow, org_id=org_id, events=ingest.EventColumns(
            keys, ["api_requests"] * count, [1] * count, [ingest.NOW] * count, [""] * count))
        uow.commit()


@contextmanager
def _refused_aggregation(superuser, org_id: str) -> Iterator[str]:  # noqa: ANN001
    """Every aggregation of `org_id` fails the same way (a trigger refuses its totals), as
    an org whose totals overflowed did before Trust #4. Yields the drop statement."""
    name = f"nobill_test_refuse_{uuid.uuid4().hex[:8]}"
    superuser.execute(
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF NEW.org_id = '{org_id}' THEN RAISE EXCEPTION 'totals of % refused (test)', NEW.org_id; END IF; "
        "RETURN NEW; END $$"
    )
    superuser.execute(f"CREATE TRIGGER {name} BEFORE INSERT OR UPDATE ON usage_totals FOR EACH ROW EXECUTE FUNCTION {name}()")
    drop = f"DROP TRIGGER IF EXISTS {name} ON usage_totals; DROP FUNCTION IF EXISTS {name}()"
    try:
        yield drop
    finally:
        superuser.execute(drop)


@contextmanager
def _worker(settings, database, namespace: str):  # noqa: ANN001
    """A real worker (NOBILL_JOB_POISON_AFTER=3) and a scheduler sweeping every 0.2 s, on
    their own Redis namespace; the process's job runtime and broker are put back after."""
    from nobill.jobs import runtime
    from nobill.jobs.runner import start_worker
    from nobill.jobs.scheduler import Periodic, Scheduler

    saved_state = dict(runtime._state)
    try:
        saved_broker = dramatiq.get_broker()
    except Exception:  # noqa: BLE001 - no broker yet
        saved_broker = None
    worker_settings = settings.replace(redis_namespace=namespace, job_poison_after=POISON_AFTER)
    worker = start_worker(settings.redis_url, threads=2, namespace=namespace, settings=worker_settings, database=database)
    scheduler = Scheduler(settings.redis_url, namespace=namespace, schedule=(Periodic("nobill.usage.sweep", 0.2),))
    stop = threading.Event()
    ticker = threading.Thread(target=scheduler.run, args=(stop,), kwargs={"interval": 0.2})
    ticker.start()
    try:
        yield worker_settings
    finally:
        stop.set()
        ticker.join()
        worker.stop(timeout=10_000)
        worker.broker.close()
        with runtime._lock:
            runtime._state.clear()
            runtime._state.update(saved_state)
        if saved_broker is not None:
            dramatiq.set_broker(saved_broker)


def _sample(counter, *labels: str) -> float:  # noqa: ANN001
    return counter.labels(*labels)._value.get()


def _wait(condition, seconds: float = 30) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_a_job_failing_the_same_way_is_parked_and_replayed_after_the_fix(
    settings, database, superuser, caplog, capsys
) -> None:
    org_id = _org(database)
    _record(database, org_id, 10)
    namespace = f"nobill-test-poison-{uuid.uuid4().hex[:8]}"
    key = poison.job_key(AGGREGATE, (org_id,), {})
    parked_before = _sample(metrics.JOBS_PARKED, "usage", AGGREGATE)
    failed_before = _sample(metrics.JOBS_FAILED, "usage", AGGREGATE)
    skipped_before = _sample(metrics.JOBS_PROCESSED, "usage", AGGREGATE, "skipped")
    caplog.set_level(logging.ERROR, logger="nobill.jobs.poison")

    with _refused_aggregation(superuser, org_id) as drop, _worker(settings, database, namespace) as worker_settings:
        rule = poison.rule_for(settings.redis_url, namespace=namespace)
        assert _wait(lambda: [job.key for job in rule.parked()] == [key]), "the job was never parked"
        failed_at_park = _sample(metrics.JOBS_FAILED, "usage", AGGREGATE)
        # The sweep goes on sending the job every 0.2 s: it is skipped, never run again.
        assert _wait(lambda: _sample(metrics.JOBS_PROCESSED, "usage", AGGREGATE, "skipped") >= skipped_before + 5)
        failed_later = _sample(metrics.JOBS_FAILED, "usage", AGGREGATE)
        [job] = rule.parked()
        gauges = {family.name: family.samples for family in metrics.QueueDepthCollector(settings.redis_url, namespace).collect()}
        waiting = [sample.value for sample in gauges["nobill_jobs_waiting_replay"]]

        superuser.execute(drop)  # the cause is fixed
        replay = job_commands.replay_parked(argparse.Namespace(key=[key], all=False), worker_settings)
        totals = lambda: superuser.execute(  # noqa: E731
            "SELECT quantity FROM usage_totals WHERE org_id = %s", (org_id,)).fetchall()
        assert _wait(lambda: [(int(q),) for (q,) in totals()] == [(10,)]), "the replayed job did not aggregate"
        assert rule.parked() == []

    # POISON_AFTER failures park it; a message running on the other worker thread then may fail once more.
    assert POISON_AFTER <= failed_at_park - failed_before <= POISON_AFTER + 1
    assert failed_later == failed_at_park, "a parked job ran again"
    assert (job.actor, job.arguments) == (AGGREGATE, {"args": [org_id], "kwargs": {}})
    assert POISON_AFTER <= job.count <= POISON_AFTER + 1
    assert "totals of " in job.error and "refused (test)" in job.error and job.error.startswith("sqlalchemy.exc.")
    assert _sample(metrics.JOBS_PARKED, "usage", AGGREGATE) - parked_before == 1
    assert waiting == [1]
    lines = [r for r in caplog.records if r.name == "nobill.jobs.poison" and r.levelno == logging.ERROR]
    assert len(lines) == 1
    line = lines[0]
    assert (line.actor, line.job_args, line.failures, line.job) == (AGGREGATE, [org_id], POISON_AFTER, key)
    assert f"failing {POISON_AFTER} times" in line.getMessage() and f"nobill jobs replay {key}" in line.getMessage()
    assert replay == 0 and key in capsys.readouterr().out
    assert redis.Redis.from_url(settings.redis_url).scard(f"{namespace}:poison:parked") == 0


def test_outages_and_jobs_that_never_retry_are_not_counted() -> None:
    from nobill.stripe.errors import StripeTransient

    assert poison.is_transient(StripeTransient("Stripe answered 503"))
    assert poison.is_transient(dramatiq.errors.Retry())
    assert not poison.is_transient(ValueError("numeric field overflow"))
    assert poison.signature(ValueError("bigint out of range\nDETAIL: ...")) == "builtins.ValueError: bigint out of range"
    assert poison.job_key(AGGREGATE, ["org_1"], {}) == poison.job_key(AGGREGATE, ("org_1",), {})


@pytest.mark.parametrize("argv", [["jobs", "parked"], ["jobs", "replay", "--all"], ["jobs", "replay", "k1", "k2"]])
def test_the_commands_parse(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="nobill")
    job_commands.register(parser.add_subparsers(dest="command", required=True))
    assert parser.parse_args(argv).handler in (job_commands.list_parked, job_commands.replay_parked)

"""Aggregation into totals per (org, metric, period): exactly once with concurrent
aggregators and concurrent ingestion; the Dramatiq worker's sweep does it on its own."""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
import uuid

import pytest

from nobill import ids
from nobill.audit.actors import Actor, ActorType, AuditContext
from nobill.db.unit_of_work import UnitOfWork
from nobill.tenancy import service as tenancy
from nobill.usage import aggregation, ingest, partitions, summary


def _org(database) -> str:
    with UnitOfWork(database) as uow:
        user_id = tenancy.provision_user(uow=uow, subject=f"agg-{uuid.uuid4().hex}", email=None)
        uow.commit()
    org_id = ids.new_id("org")
    with UnitOfWork(database, org_id=org_id) as uow:
        tenancy.create(uow=uow, context=AuditContext(Actor(ActorType.USER, user_id, "t"), "req"), owner_user_id=user_id, name="Agg")
        uow.commit()
    return org_id


def _record(database, org_id: str, keys: list[str], metric: str, quantity: int) -> int:
    events = ingest.EventColumns(keys, [metric] * len(keys), [quantity] * len(keys), [ingest.NOW] * len(keys), [""] * len(keys))
    with UnitOfWork(database, org_id=org_id) as uow:
        result = ingest.record_usage(uow=uow, org_id=org_id, events=events)
        uow.commit()
    return result.accepted * quantity


def _totals(database, org_id: str) -> dict[str, int]:
    with UnitOfWork(database, org_id=org_id) as uow:
        found = summary.get(uow=uow, org_id=org_id)
    return {total.metric: total.quantity for total in found.totals}


def _aggregated(superuser, org_id: str) -> dict[str, int]:
    rows = superuser.execute("SELECT metric, quantity FROM usage_totals WHERE org_id = %s", (org_id,)).fetchall()
    return dict(rows)


def test_concurrent_aggregators_and_ingestion_count_every_event_once(database, superuser) -> None:
    orgs = [_org(database) for _ in range(3)]
    expected: dict[tuple[str, str], int] = {}
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    def ingest_loop(seed: int) -> None:
        chooser = random.Random(seed)
        keys_seen: list[str] = []
        try:
            for _ in range(25):
                org_id = chooser.choice(orgs)
                metric = chooser.choice(("api_requests", "background_jobs"))
                fresh = [uuid.uuid4().hex for _ in range(chooser.randint(1, 40))]
                resent = chooser.sample(keys_seen, min(len(keys_seen), 5))  # already counted somewhere
                keys_seen.extend(fresh)
                added = _record(database, org_id, fresh + resent, metric, 3)
                with lock:
                    expected[(org_id, metric)] = expected.get((org_id, metric), 0) + added
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    def aggregate_loop() -> None:
        try:
            while not stop.is_set():
                for org_id in aggregation.orgs_with_deltas(database=database):
                    aggregation.aggregate_all(database=database, org_id=org_id)
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    ingesters = [threading.Thread(target=ingest_loop, args=(seed,)) for seed in range(4)]
    aggregators = [threading.Thread(target=aggregate_loop) for _ in range(4)]
    for thread in (*ingesters, *aggregators):
        thread.start()
    for thread in ingesters:
        thread.join()
    stop.set()
    for thread in aggregators:
        thread.join()
    for org_id in orgs:  # whatever the aggregators had not reached yet
        aggregation.aggregate_all(database=database, org_id=org_id)

    assert errors == []
    for org_id in orgs:
        want = {metric: quantity for (org, metric), quantity in expected.items() if org == org_id and quantity}
        assert _aggregated(superuser, org_id) == want
        assert _totals(database, org_id) == want
    left = superuser.execute("SELECT count(*) FROM usage_deltas WHERE org_id = ANY(%s)", (orgs,)).fetchone()
    assert left == (0,)


def test_the_summary_counts_what_is_not_aggregated_yet(database) -> None:
    org_id = _org(database)
    _record(database, org_id, ["a", "b"], "reports_generated", 2)

    before = _totals(database, org_id)
    aggregation.aggregate_all(database=database, org_id=org_id)

    assert before == _totals(database, org_id) == {"reports_generated": 4}


def test_the_worker_aggregates_on_its_own(settings, database, superuser) -> None:
    from nobill.jobs.scheduler import Periodic

    from usage_workers import isolated_worker

    org_id = _org(database)
    _record(database, org_id, [f"w{i}" for i in range(20)], "api_requests", 5)
    with isolated_worker(settings, database, (Periodic("nobill.usage.sweep", 0.2),)):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _aggregated(superuser, org_id) != {"api_requests": 100}:
            time.sleep(0.1)

    assert _aggregated(superuser, org_id) == {"api_requests": 100}


def test_partitions_are_created_ahead_and_dropped_past_retention(database, superuser) -> None:
    now = time.time()
    current = partitions.window_of(now)
    with UnitOfWork(database) as uow:
        uow.execute(partitions.text("SELECT nobill_usage_ensure_partition(:w)"), {"w": current - 5})
        uow.commit()
    with UnitOfWork(database) as uow:
        dropped = partitions.maintain(uow=uow, now_epoch=now)
        uow.commit()

    names = {
        name for (name,) in superuser.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'usage_events'::regclass"
        ).fetchall()
    }
    assert f"usage_events_w{current - 5}" in dropped
    assert {f"usage_events_w{current - 1}", f"usage_events_w{current}", f"usage_events_w{current + 1}"} <= names
    assert f"usage_events_w{current - 5}" not in names


@pytest.mark.parametrize("window_offset", [-1])
def test_a_key_stored_in_the_previous_window_is_still_a_duplicate(database, superuser, window_offset: int) -> None:
    org_id = _org(database)
    current = partitions.window_of(time.time())
    # A key that arrived in the previous 35-day window (as if received weeks ago).
    with UnitOfWork(database, org_id=org_id) as uow:
        uow.execute(
            partitions.text(
                "INSERT INTO usage_events (org_id, idempotency_key, dedupe_window, metric, quantity, occurred_at, received_at) "
                "VALUES (:org, 'old-key', :w, 'api_requests', 1, now(), now())"
            ),
            {"org": org_id, "w": current + window_offset},
        )
        uow.commit()

    assert _record(database, org_id, ["old-key", "new-key"], "api_requests", 1) == 1


def _batch(keys: list[str], quantity: int = 1) -> ingest.EventColumns:
    return ingest.EventColumns(keys, ["api_requests"] * len(keys), [quantity] * len(keys), [ingest.NOW] * len(keys), [""] * len(keys))


def _race(database, superuser, org_id: str, first, second, *, waits_on: str) -> ingest.BatchResult:  # noqa: ANN001
    """Record `first` (a callable given the unit of work) and leave its transaction open; run
    `second` in another transaction until PostgreSQL shows it waiting (`waits_on`, a condition
    on pg_stat_activity), then commit the first. Returns the second's result."""
    answers: dict[str, ingest.BatchResult] = {}

    def run_second() -> None:
        with UnitOfWork(database, org_id=org_id) as uow:
            answers["second"] = second(uow)
            uow.commit()

    with UnitOfWork(database, org_id=org_id) as uow:
        first(uow)
        racer = threading.Thread(target=run_second)
        racer.start()
        deadline = time.monotonic() + 10
        while not superuser.execute(
            f"SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND {waits_on}"
        ).fetchone()[0]:
            assert time.monotonic() < deadline, f"the second batch never waited ({waits_on})"
            time.sleep(0.02)
        uow.commit()
    racer.join(10)
    return answers["second"]


def test_a_batch_racing_an_uncommitted_batch_with_the_same_key_counts_it_once(database, superuser) -> None:
    org_id = _org(database)

    # The second's insert of "shared" waits for the first's transaction and, once it
    # commits, skips the row (ON CONFLICT).
    second = _race(
        database, superuser, org_id,
        lambda uow: ingest.record_usage(uow=uow, org_id=org_id, events=_batch(["shared", "first-only"])),
        lambda uow: ingest.record_usage(uow=uow, org_id=org_id, events=_batch(["shared", "second-only"], quantity=5)),
        waits_on="wait_event_type = 'Lock'",
    )

    assert (second.accepted, second.duplicates) == (1, 1)
    stored = superuser.execute(
        "SELECT idempotency_key, quantity FROM usage_events WHERE org_id = %s ORDER BY 1", (org_id,)
    ).fetchall()
    assert stored == [("first-only", 1), ("second-only", 5), ("shared", 1)]
    deltas = superuser.execute("SELECT sum(quantity) FROM usage_deltas WHERE org_id = %s", (org_id,)).fetchone()[0]
    totals = superuser.execute("SELECT coalesce(sum(quantity), 0) FROM usage_totals WHERE org_id = %s", (org_id,)).fetchone()[0]
    assert deltas + totals == 7


def test_batches_racing_across_a_window_boundary_count_a_key_once(database, superuser) -> None:
    org_id = _org(database)
    boundary = partitions.window_of(time.time()) * partitions.WINDOW_DAYS * 86400  # the current window's start
    before = dt.datetime.fromtimestamp(boundary - 5, dt.timezone.utc)
    after = dt.datetime.fromtimestamp(boundary + 5, dt.timezone.utc)

    # The first stores "shared" in the old window; the second, in the new window, takes turns.
    second = _race(
        database, superuser, org_id,
        lambda uow: ingest.record_usage(uow=uow, org_id=org_id, events=_batch(["shared"]), now=before),
        lambda uow: ingest.record_usage(uow=uow, org_id=org_id, events=_batch(["shared", "later"]), now=after),
        waits_on="wait_event = 'advisory'",
    )

    assert (second.accepted, second.duplicates) == (1, 1)
    stored = superuser.execute(
        "SELECT idempotency_key, dedupe_window FROM usage_events WHERE org_id = %s ORDER BY 1", (org_id,)
    ).fetchall()
    window = partitions.window_of(boundary)
    assert stored == [("later", window), ("shared", window - 1)]


def test_only_batches_near_a_window_boundary_take_turns() -> None:
    boundary = 20_000 * partitions.WINDOW_DAYS * 86400
    guard = partitions.TURNOVER_GUARD_SECONDS
    assert partitions.near_turnover(boundary - guard + 1) and partitions.near_turnover(boundary + guard - 1)
    assert not partitions.near_turnover(boundary - guard - 1) and not partitions.near_turnover(boundary + guard + 1)

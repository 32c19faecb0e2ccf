#!/usr/bin/env python3
"""PostgreSQL's own CPU per usage event: the ingest path against a plain COPY.

    python bench/usage_pg_cost.py [--rounds 8] [--batches 500] [--batch-size 1000]

Where bench/usage_ingest.py measures the whole machine, this isolates PostgreSQL: one
process records batches straight through `nobill.usage.ingest.record_usage` in a unit of
work (staging COPY, the deduplicating INSERT under row-level security, deltas, commit;
no gRPC), round after round as the table grows, and then COPYs the same number of rows
into an indexed table without row-level security. Each round prints the CPU seconds the
database's backends spent per event (user + system, read from /proc through psutil).

Their quotient is the ingest/COPY ratio PostgreSQL's work alone allows per core. In
bench/usage_ingest.py the ingest path gets both cores but shares them with the server and
the load generator (their CPU per event is in its output), while the plain COPY baseline
runs on one connection: its ratio is at most 2 x COPY cost / (this ingest cost + the
server's and the clients' cost per event).

Uses PostgreSQL on 127.0.0.1:5432 (or NOBILL_BENCH_DATABASE_URL); creates and drops a
scratch database. Run it on a quiet machine."""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import time
import uuid
from pathlib import Path

import psutil
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from auth_overhead import admin_url  # noqa: E402

METRICS = ("api_requests", "background_jobs", "reports_generated")


def _backend_cpu(database_name: str) -> float:
    """CPU seconds so far of the backends connected to `database_name`."""
    total = 0.0
    for process in psutil.process_iter(["name", "cmdline"]):
        if not (process.info["name"] or "").startswith("postgres"):
            continue
        if database_name not in " ".join(process.info["cmdline"] or []):
            continue
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def _orgs(database, count: int) -> list[str]:  # noqa: ANN001
    from nobill import ids
    from nobill.audit.actors import Actor, ActorType, AuditContext
    from nobill.db.unit_of_work import UnitOfWork
    from nobill.tenancy import service as tenancy

    orgs = []
    for index in range(count):
        with UnitOfWork(database) as uow:
            user_id = tenancy.provision_user(uow=uow, subject=f"pg-cost-{index}", email=None)
            uow.commit()
        org_id = ids.new_id("org")
        with UnitOfWork(database, org_id=org_id) as uow:
            context = AuditContext(Actor(ActorType.USER, user_id, "bench"), "bench")
            tenancy.create(uow=uow, context=context, owner_user_id=user_id, name=f"Cost {index}")
            uow.commit()
        orgs.append(org_id)
    return orgs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--batches", type=int, default=500, help="batches a round (default 500)")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--orgs", type=int, default=50)
    args = parser.parse_args()

    from nobill.audit import keys
    from nobill.config import Settings
    from nobill.db.database import connect
    from nobill.db.migrate import upgrade
    from nobill.db.unit_of_work import UnitOfWork
    from nobill.usage import ingest

    admin = admin_url()
    name = f"nobill_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    database_url = admin.rsplit("/", 1)[0] + f"/{name}"
    database = None
    try:
        print(f"[setup] database {name}: migrating, creating {args.orgs} orgs", flush=True)
        settings = Settings.from_env(
            {"NOBILL_DATABASE_URL": database_url, "NOBILL_AUDIT_KEY": "bench:audit-key-that-is-long-enough-for-hmac-0000"}
        )
        keys.install(keys.from_settings(settings.audit_keys))  # creating an org writes an audit event
        upgrade(settings.database_url)
        database = connect(settings.database_url, pool_size=1)
        orgs = _orgs(database, args.orgs)
        chooser = random.Random(7)
        counter = 0
        stored = 0
        ingest_cpu = ingest_events = 0.0
        print(f"[run] {args.rounds} rounds of {args.batches} batches of {args.batch_size} events", flush=True)
        for round_number in range(1, args.rounds + 1):
            before, started, events = _backend_cpu(name), time.perf_counter(), 0
            for _ in range(args.batches):
                keys = []
                for _ in range(args.batch_size):
                    counter += 1
                    # Keys spread over each org's key space, as many senders' keys would be.
                    keys.append(f"{chooser.randrange(64)}-{counter}")
                org_id = chooser.choice(orgs)
                batch = ingest.EventColumns(
                    keys, [chooser.choice(METRICS)] * len(keys), [1] * len(keys), [ingest.NOW] * len(keys), [""] * len(keys)
                )
                with UnitOfWork(database, org_id=org_id) as uow:
                    stored += ingest.record_usage(uow=uow, org_id=org_id, events=batch).accepted
                    uow.commit()
                events += len(keys)
            spent = _backend_cpu(name) - before
            ingest_cpu += spent
            ingest_events += events
            print(f"[ingest] round {round_number}: {stored:,} rows stored, {events / (time.perf_counter() - started):,.0f} "
                  f"events/s on one connection, PostgreSQL {spent / events * 1e6:.2f} us/event", flush=True)

        # The plain COPY of the same rows, read out first (untimed), in rounds of the same size.
        with psycopg.connect(database_url, autocommit=True) as db:
            db.execute(
                "CREATE TABLE bench_copy (org_id text NOT NULL, idempotency_key text NOT NULL, metric text NOT NULL, "
                "quantity bigint NOT NULL, occurred_at timestamptz NOT NULL, received_at timestamptz NOT NULL, "
                "properties text, PRIMARY KEY (org_id, idempotency_key))"
            )
            data = bytearray()
            with db.cursor().copy(
                "COPY (SELECT org_id, idempotency_key, metric, quantity, occurred_at, received_at, properties "
                "FROM usage_events) TO STDOUT"
            ) as copy:
                for chunk in copy:
                    data += chunk
        lines = bytes(data).splitlines(keepends=True)
        per_round = args.batches * args.batch_size
        copy_cpu = copied = 0.0
        with psycopg.connect(database_url, autocommit=True) as db:
            for round_number, start in enumerate(range(0, len(lines), per_round), 1):
                rows = lines[start:start + per_round]
                before = _backend_cpu(name)
                started = time.perf_counter()
                # One COPY statement a round, as bench/usage_ingest.py's baseline is one statement.
                with db.cursor().copy("COPY bench_copy FROM STDIN") as copy:
                    for offset in range(0, len(rows), args.batch_size):
                        copy.write(b"".join(rows[offset:offset + args.batch_size]))
                spent = _backend_cpu(name) - before
                copy_cpu += spent
                copied += len(rows)
                print(f"[copy] round {round_number}: {int(copied):,} rows, {len(rows) / (time.perf_counter() - started):,.0f} "
                      f"rows/s, PostgreSQL {spent / len(rows) * 1e6:.2f} us/row", flush=True)
    finally:
        if database is not None:
            database.dispose()
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    ingest_cost = ingest_cpu / ingest_events * 1e6
    copy_cost = copy_cpu / copied * 1e6
    print(
        f"\nPostgreSQL CPU per event, all rounds: ingest {ingest_cost:.2f} us, plain COPY {copy_cost:.2f} us; "
        f"per core, PostgreSQL's work alone allows an ingest/COPY ratio of {copy_cost / ingest_cost:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

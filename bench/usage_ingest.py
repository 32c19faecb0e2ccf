#!/usr/bin/env python3
"""Usage ingestion throughput: N concurrent StreamUsage streams from the client library
(nobill.client.UsageRecorder), batches of 500-1,000 events, 50 orgs, 5% duplicate keys,
against `nobill serve`, `nobill worker` and `nobill scheduler` on real PostgreSQL and Redis.

    python bench/usage_ingest.py [--seconds 60] [--streams 8] [--client-processes 4]

Prints durable deduplicated events/s (from the acks, checked against the rows stored),
p50/p99 ack latency, the server's peak RSS, aggregation lag, unary GetOrganization p99
during the load, and, in the same run, the rate of a plain COPY of the same rows into an
indexed table, with the ratio. Targets (issue #8): >= 100,000 events/s, ratio >= 0.6,
p99 ack < 200 ms, RSS < 1 GiB, aggregation lag < 10 s, unary p99 < 50 ms.

Uses PostgreSQL on 127.0.0.1:5432 (or NOBILL_BENCH_DATABASE_URL) and Redis on
127.0.0.1:6379 (or NOBILL_BENCH_REDIS_URL); creates and drops a scratch database."""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import grpc
import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-that-is-long-enough-for-hs256-000000"
METRICS = ("api_requests", "background_jobs", "reports_generated")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port}")


# --- load generator (one process holds several recorders, one stream each) ----------


def _client_process(args: tuple) -> dict:
    target, token, orgs, streams, seconds, seed, duplicate_rate, in_flight = args
    from nobill.client import UsageRecorder

    latencies: list[float] = []
    lock = threading.Lock()

    def on_ack(request, response, elapsed: float) -> None:  # noqa: ANN001
        with lock:
            latencies.append(elapsed)

    recorders = [
        UsageRecorder(target, token, batch_size=1000, linger=0.02, max_in_flight=in_flight, max_buffered=4000, on_ack=on_ack)
        for _ in range(streams)
    ]
    chooser = random.Random(seed)
    deadline = time.perf_counter() + seconds
    sent = 0

    def produce(index: int, recorder) -> None:  # noqa: ANN001
        nonlocal sent
        local = random.Random(seed * 1000 + index)
        recent_by_org: dict[str, list[str]] = {org: [] for org in orgs}  # keys belong to one org
        counter = 0
        prefix = f"{seed}-{index}-"
        while time.perf_counter() < deadline:
            org_id = local.choice(orgs)
            metric = local.choice(METRICS)
            size = local.randint(500, 1000)  # one batch's worth for one org
            recent = recent_by_org[org_id]
            keys = []
            for _ in range(size):
                if recent and local.random() < duplicate_rate:
                    keys.append(local.choice(recent))
                else:
                    counter += 1
                    key = prefix + str(counter)
                    keys.append(key)
                    if len(recent) < 2000:
                        recent.append(key)
                    else:
                        recent[counter % 2000] = key
            recorder.record_many(org_id, metric, keys, 1)
            with lock:
                sent += size

    threads = [threading.Thread(target=produce, args=(i, r)) for i, r in enumerate(recorders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for recorder in recorders:
        recorder.close(timeout=60)
    del chooser
    return {
        "cpu_s": time.process_time(),
        "sent": sent,
        "accepted": sum(r.stats.accepted for r in recorders),
        "duplicates": sum(r.stats.duplicates for r in recorders),
        "refused": sum(r.stats.batches_refused for r in recorders),
        "latencies": latencies,
    }


# --- observers -----------------------------------------------------------------------


class Sampler(threading.Thread):
    """Every `interval` s: server RSS, aggregation lag, and a few unary calls."""

    def __init__(self, server_pid: int, admin_db: str, main_target: str, token: str, org_id: str) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.rss: list[int] = []
        self.lag: list[float] = []
        self.unary: list[float] = []
        self._process = psutil.Process(server_pid)
        self._db = admin_db
        self._target = main_target
        self._token = token
        self._org_id = org_id

    def run(self) -> None:
        from nobill.v1 import tenancy_pb2, tenancy_pb2_grpc

        metadata = (("authorization", f"Bearer {self._token}"),)
        with grpc.insecure_channel(self._target) as channel, psycopg.connect(self._db, autocommit=True) as db:
            stub = tenancy_pb2_grpc.TenancyServiceStub(channel)
            request = tenancy_pb2.GetOrganizationRequest(org_id=self._org_id)
            next_sample = 0.0
            while not self.stop.is_set():
                started = time.perf_counter()
                stub.GetOrganization(request, metadata=metadata, timeout=10)
                self.unary.append(time.perf_counter() - started)
                if time.monotonic() >= next_sample:
                    next_sample = time.monotonic() + 1.0
                    self.rss.append(self._process.memory_info().rss)
                    (lag,) = db.execute(
                        "SELECT coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0) FROM usage_deltas"
                    ).fetchone()
                    self.lag.append(float(lag))
                self.stop.wait(0.05)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else float("nan")


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def _postgres_processes() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name"]) if (p.info["name"] or "").startswith("postgres")]


def plain_copy_rate(database_url: str, rows: int, connections: int = 2) -> tuple[float, int]:
    """Rows/s of COPY of the stored events into an indexed table (same primary key),
    over `connections` connections in parallel; the rows are read out first (untimed)."""
    with psycopg.connect(database_url, autocommit=True) as db:
        db.execute(
            "CREATE TABLE bench_copy (org_id text NOT NULL, idempotency_key text NOT NULL, metric text NOT NULL, "
            "quantity bigint NOT NULL, occurred_at timestamptz NOT NULL, received_at timestamptz NOT NULL, "
            "properties text, PRIMARY KEY (org_id, idempotency_key))"
        )
        chunks = [io.BytesIO() for _ in range(connections)]
        with db.cursor().copy(
            "COPY (SELECT org_id, idempotency_key, metric, quantity, occurred_at, received_at, properties "
            f"FROM usage_events LIMIT {rows}) TO STDOUT"
        ) as copy:
            index = 0
            for data in copy:
                chunks[index % connections].write(data)
                index += 1
    # Whole lines per chunk: COPY TO yields one row per chunk of data.
    payloads = [chunk.getvalue() for chunk in chunks]
    count = sum(payload.count(b"\n") for payload in payloads)

    def load(payload: bytes) -> None:
        with psycopg.connect(database_url, autocommit=True) as db, db.cursor().copy("COPY bench_copy FROM STDIN") as copy:
            view = memoryview(payload)
            for start in range(0, len(view), 1 << 20):
                copy.write(view[start:start + (1 << 20)])

    threads = [threading.Thread(target=load, args=(payload,)) for payload in payloads]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return count / elapsed, count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="measured seconds of load (default 60)")
    parser.add_argument("--streams", type=int, default=8, help="concurrent StreamUsage streams in total (default 8)")
    parser.add_argument("--client-processes", type=int, default=4, help="load-generator processes (default 4)")
    parser.add_argument("--orgs", type=int, default=50, help="organizations (default 50)")
    parser.add_argument("--duplicates", type=float, default=0.05, help="share of resent keys (default 0.05)")
    parser.add_argument("--in-flight", type=int, default=1, help="unacknowledged batches per stream (default 1)")
    parser.add_argument("--db-threads", type=int, default=4, help="NOBILL_USAGE_DB_THREADS of the server (default 4)")
    parser.add_argument(
        "--copy-rows", type=int, default=None,
        help="rows for the plain COPY baseline (default: every stored row, the same rows the run stored)",
    )
    parser.add_argument(
        "--copy-connections", type=int, default=1,
        help="connections the plain COPY baseline loads over in parallel (default 1: one plain COPY statement)",
    )
    args = parser.parse_args()

    from nobill.auth.tokens import mint_token
    from nobill.config import Settings
    from nobill.db.migrate import upgrade
    from nobill.v1 import tenancy_pb2, tenancy_pb2_grpc

    admin = os.environ.get("NOBILL_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    redis_url = os.environ.get("NOBILL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/3")
    name = f"nobill_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    database_url = urlunsplit(urlsplit(admin)._replace(path=f"/{name}"))
    main_port, usage_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "NOBILL_DATABASE_URL": database_url,
        "NOBILL_REDIS_URL": redis_url,
        "NOBILL_REDIS_NAMESPACE": f"nobill-bench-{uuid.uuid4().hex[:8]}",
        "NOBILL_JWT_SECRET": SECRET,
        "NOBILL_AUDIT_KEY": "bench:audit-key-that-is-long-enough-for-hmac-0000",
        # The bench creates its 50 orgs as one user; the per-user daily limit is not what it measures.
        "NOBILL_RATE_LIMIT_ORGS_PER_DAY": "0",
        "NOBILL_GRPC_ADDR": f"127.0.0.1:{main_port}",
        "NOBILL_USAGE_GRPC_ADDR": f"127.0.0.1:{usage_port}",
        "NOBILL_USAGE_DB_THREADS": str(args.db_threads),
        "NOBILL_LOG_LEVEL": "WARNING",
    }
    processes: list[subprocess.Popen] = []
    # Billing's worker creates each new org's Stripe customer: give it a sandbox to talk to.
    from nobill.sandbox.server import start_sandbox

    sandbox = start_sandbox(host="127.0.0.1", port=0, state_file=None, autosave_interval=None)
    env.update({"STRIPE_API_KEY": "sk_test_nobill_bench", "NOBILL_STRIPE_API_BASE": sandbox.url})
    try:
        print(f"[setup] database {name}: migrating", flush=True)
        upgrade(Settings.from_env({"NOBILL_DATABASE_URL": database_url}).database_url)
        server = subprocess.Popen([sys.executable, "-m", "nobill.cli", "serve"], env=env, cwd=ROOT)
        processes.append(server)
        processes.append(subprocess.Popen([sys.executable, "-m", "nobill.cli", "worker", "--threads", "2"], env=env, cwd=ROOT))
        # The scheduler sends the aggregation sweep every second.
        processes.append(subprocess.Popen([sys.executable, "-m", "nobill.cli", "scheduler"], env=env, cwd=ROOT))
        _wait_for_port(main_port)
        _wait_for_port(usage_port)

        owner = mint_token(secret=SECRET, issuer="nobill", audience="nobill", subject="bench-owner",
                           email="bench@example.com", ttl_seconds=3600)
        print(f"[setup] creating {args.orgs} Enterprise orgs", flush=True)
        orgs = []
        with grpc.insecure_channel(f"127.0.0.1:{main_port}") as channel:
            stub = tenancy_pb2_grpc.TenancyServiceStub(channel)
            for i in range(args.orgs):
                orgs.append(stub.CreateOrganization(
                    tenancy_pb2.CreateOrganizationRequest(name=f"Bench {i}"), metadata=(("authorization", f"Bearer {owner}"),)
                ).organization.id)
        with psycopg.connect(database_url, autocommit=True) as db:
            # Stands in for the Stripe subscription snapshot: every org on Enterprise.
            db.execute("UPDATE subscriptions SET plan = 'enterprise', status = 'active'")
        service = mint_token(secret=SECRET, issuer="nobill", audience="nobill", subject="bench-ingest",
                             service=True, scopes=["usage:write"], orgs=["*"], ttl_seconds=3600)

        sampler = Sampler(server.pid, database_url, f"127.0.0.1:{main_port}", owner, orgs[0])
        sampler.start()
        per_process = [args.streams // args.client_processes + (1 if i < args.streams % args.client_processes else 0)
                       for i in range(args.client_processes)]
        print(f"[run] {args.streams} streams in {args.client_processes} processes for {args.seconds:.0f}s ...", flush=True)
        watched = {"server": [psutil.Process(server.pid)], "worker": [psutil.Process(processes[1].pid)]}
        cpu_before = {label: _cpu_seconds(group) for label, group in watched.items()}
        postgres_before = _cpu_seconds(_postgres_processes())
        with multiprocessing.get_context("spawn").Pool(args.client_processes) as pool:
            started = time.perf_counter()
            pending = pool.map_async(_client_process, [
                (f"127.0.0.1:{usage_port}", service, orgs, n, args.seconds, seed, args.duplicates, args.in_flight)
                for seed, n in enumerate(per_process) if n
            ])
            while not pending.ready():
                pending.wait(10)
                if not pending.ready():
                    print(f"[run] {time.perf_counter() - started:.0f}s elapsed", flush=True)
            results = pending.get()
            elapsed = time.perf_counter() - started
        cpu = {label: round(_cpu_seconds(group) - cpu_before[label], 1) for label, group in watched.items()}
        # Backends that ended during the run are missed: a lower bound.
        cpu["postgres"] = round(_cpu_seconds(_postgres_processes()) - postgres_before, 1)
        cpu["clients"] = round(sum(r["cpu_s"] for r in results), 1)
        drained_at = time.perf_counter()
        with psycopg.connect(database_url, autocommit=True) as db:
            while db.execute("SELECT count(*) FROM usage_deltas").fetchone()[0] and time.perf_counter() - drained_at < 60:
                time.sleep(0.1)
            drain = time.perf_counter() - drained_at
            stored, total = db.execute("SELECT count(*), coalesce(sum(quantity), 0) FROM usage_events").fetchone()
            aggregated = db.execute("SELECT coalesce(sum(quantity), 0) FROM usage_totals").fetchone()[0]
        sampler.stop.set()
        sampler.join()

        accepted = sum(r["accepted"] for r in results)
        sent = sum(r["sent"] for r in results)
        latencies = [l for r in results for l in r["latencies"]]
        copy_rows = stored if args.copy_rows is None else min(stored, args.copy_rows)
        print(f"[copy] plain COPY of {copy_rows:,} stored rows into an indexed table ...", flush=True)
        copy_rate, copied = plain_copy_rate(database_url, copy_rows, args.copy_connections)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        sandbox.stop()

    rate = accepted / elapsed
    figures = {
        "events_sent": sent,
        "events_accepted": accepted,
        "duplicates_acked": sum(r["duplicates"] for r in results),
        "batches_refused": sum(r["refused"] for r in results),
        "rows_stored": stored,
        "aggregated_total": int(aggregated),
        "seconds": round(elapsed, 1),
        "events_per_s": round(rate),
        "ack_p50_ms": round(_percentile(latencies, 0.50) * 1e3, 1),
        "ack_p99_ms": round(_percentile(latencies, 0.99) * 1e3, 1),
        "server_rss_peak_mib": round(max(sampler.rss) / 2**20) if sampler.rss else None,
        "aggregation_lag_max_s": round(max(sampler.lag), 2) if sampler.lag else None,
        "aggregation_lag_median_s": round(statistics.median(sampler.lag), 2) if sampler.lag else None,
        "aggregation_drain_after_load_s": round(drain, 2),
        "unary_get_organization_p50_ms": round(_percentile(sampler.unary, 0.50) * 1e3, 1),
        "unary_get_organization_p99_ms": round(_percentile(sampler.unary, 0.99) * 1e3, 1),
        "unary_calls": len(sampler.unary),
        "plain_copy_rows": copied,
        "plain_copy_rows_per_s": round(copy_rate),
        "plain_copy_connections": args.copy_connections,
        "ratio": round(rate / copy_rate, 2),
        "cpu_seconds_during_load": cpu,
    }
    print(json.dumps(figures, indent=2))
    print(
        f"\n{figures['events_per_s']:,} durable deduplicated events/s (target >= 100,000); "
        f"ack p50 {figures['ack_p50_ms']} ms, p99 {figures['ack_p99_ms']} ms (target < 200); "
        f"server RSS peak {figures['server_rss_peak_mib']} MiB (target < 1024); "
        f"aggregation lag max {figures['aggregation_lag_max_s']} s (target < 10); "
        f"GetOrganization p99 {figures['unary_get_organization_p99_ms']} ms (target < 50); "
        f"plain COPY {figures['plain_copy_rows_per_s']:,} rows/s, ratio {figures['ratio']} (target >= 0.6)"
    )
    if stored != accepted:
        print(f"WARNING: {stored} rows stored but {accepted} acknowledged as accepted", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

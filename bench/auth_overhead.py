#!/usr/bin/env python3
"""GetOrganization throughput and latency with full authentication + permission check,
against the same server with authentication off.

    python bench/auth_overhead.py [--seconds 20] [--clients 16]

Uses PostgreSQL on 127.0.0.1:5432 (or NOBILL_BENCH_DATABASE_URL, or an embedded one),
creates a scratch database, runs each server in its own process and the clients in
separate processes, and prints RPS, p50 and p99 for both and the ratio.
Target (issue #2): authenticated RPS >= 0.7x unauthenticated, p99 < 20 ms."""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import psycopg

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-that-is-long-enough-for-hs256-000000"


def admin_url() -> str:
    if os.environ.get("NOBILL_BENCH_DATABASE_URL"):
        return os.environ["NOBILL_BENCH_DATABASE_URL"]
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
        return "postgresql://postgres@127.0.0.1:5432/postgres"
    except OSError:
        from nobill.embedded import start_postgres

        handle, url = start_postgres(Path("/tmp/nobill-bench-embedded"))
        admin_url.handle = handle  # keep it alive
        return url


def bench_redis_url() -> str | None:
    """Redis for the per-principal limits: NOBILL_BENCH_REDIS_URL, or the local one if it listens."""
    if os.environ.get("NOBILL_BENCH_REDIS_URL"):
        return os.environ["NOBILL_BENCH_REDIS_URL"]
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
        return "redis://127.0.0.1:6379/0"
    except OSError:
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_servers(database_url: str, *, auth: bool, processes: int) -> tuple[list[subprocess.Popen], int]:
    """`processes` server processes sharing one port (SO_REUSEPORT), as `nobill serve --processes` runs."""
    port = _free_port()
    env = {
        **os.environ,
        "NOBILL_DATABASE_URL": database_url,
        "NOBILL_JWT_SECRET": SECRET,
        "NOBILL_AUDIT_KEY": "bench:audit-key-that-is-long-enough-for-hmac-0000",
        "NOBILL_GRPC_ADDR": f"127.0.0.1:{port}",
        "NOBILL_GRPC_THREADS": "16",
        "NOBILL_DB_POOL_SIZE": "16",
        # The per-principal limits run (their cost is measured) but never refuse: every
        # bench client calls as the same principal.
        "NOBILL_RATE_LIMIT_CALLS_PER_SECOND": "1000000",
        "NOBILL_RATE_LIMIT_CONCURRENT_CALLS": "1000",
        "NOBILL_REDIS_NAMESPACE": f"nobill-bench-{uuid.uuid4().hex[:8]}",
    }
    redis_url = bench_redis_url()
    if redis_url:
        env["NOBILL_REDIS_URL"] = redis_url
    args = [sys.executable, str(ROOT / "bench" / "serve_for_bench.py")] + ([] if auth else ["--no-auth"])
    servers = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    for server in servers:
        assert int(server.stdout.readline()) == port
    return servers, port


async def _client_loop(port: int, token: str, org_id: str, seconds: float, clients: int) -> list[float]:
    from nobill.v1 import tenancy_pb2, tenancy_pb2_grpc

    latencies: list[float] = []
    request = tenancy_pb2.GetOrganizationRequest(org_id=org_id)
    metadata = (("authorization", f"Bearer {token}"),)
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        # One connection per client, as separate services would have; the kernel spreads
        # connections over the server processes.
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
        ) as channel:
            stub = tenancy_pb2_grpc.TenancyServiceStub(channel)
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                await stub.GetOrganization(request, metadata=metadata, timeout=10)
                latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


def _client_process(args: tuple) -> list[float]:
    return asyncio.run(_client_loop(*args))


def measure(port: int, token: str, org_id: str, *, seconds: float, clients: int, processes: int) -> dict:
    # Warm up connections, caches and prepared statements.
    asyncio.run(_client_loop(port, token, org_id, 1.0, 4))
    per_process = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        started = time.perf_counter()
        results = pool.map(_client_process, [(port, token, org_id, seconds, n) for n in per_process])
        elapsed = time.perf_counter() - started
    latencies = sorted(l for chunk in results for l in chunk)
    count = len(latencies)
    return {
        "requests": count,
        "rps": round(count / seconds, 1),
        "p50_ms": round(latencies[count // 2] * 1e3, 2),
        "p90_ms": round(latencies[int(count * 0.90)] * 1e3, 2),
        "p99_ms": round(latencies[int(count * 0.99)] * 1e3, 2),
        "max_ms": round(latencies[-1] * 1e3, 2),
        "wall_s": round(elapsed, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per server (default 20)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--client-processes", type=int, default=2, help="processes the clients are spread over")
    parser.add_argument(
        "--server-processes", type=int, default=os.cpu_count() or 1,
        help="server processes sharing the port, like `nobill serve --processes N` (default: one per core)",
    )
    args = parser.parse_args()

    from nobill.auth.tokens import mint_token
    from nobill.config import Settings
    from nobill.db.migrate import upgrade
    from nobill.v1 import tenancy_pb2, tenancy_pb2_grpc

    admin = admin_url()
    name = f"nobill_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    from urllib.parse import urlsplit, urlunsplit

    database_url = urlunsplit(urlsplit(admin)._replace(path=f"/{name}"))
    results: dict = {}
    try:
        print(f"[setup] database {name}: migrating", flush=True)
        upgrade(Settings.from_env({"NOBILL_DATABASE_URL": database_url}).database_url)
        token = mint_token(secret=SECRET, issuer="nobill", audience="nobill", subject="bench-owner",
                           email="bench@example.com", ttl_seconds=3600)
        for label, auth in (("authenticated", True), ("unauthenticated", False)):
            servers, port = start_servers(database_url, auth=auth, processes=args.server_processes)
            try:
                if label == "authenticated":
                    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                        stub = tenancy_pb2_grpc.TenancyServiceStub(channel)
                        org = stub.CreateOrganization(
                            tenancy_pb2.CreateOrganizationRequest(name="Bench"),
                            metadata=(("authorization", f"Bearer {token}"),),
                        ).organization
                print(f"[run] {label}: {args.clients} clients for {args.seconds:.0f}s against "
                      f"{args.server_processes} server process(es) ...", flush=True)
                results[label] = measure(port, token, org.id, seconds=args.seconds, clients=args.clients,
                                         processes=args.client_processes)
                print(f"[run] {label}: {json.dumps(results[label])}", flush=True)
            finally:
                for server in servers:
                    server.terminate()
                for server in servers:
                    server.wait(10)
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    ratio = results["authenticated"]["rps"] / results["unauthenticated"]["rps"]
    print()
    print(f"{'':<16}{'RPS':>10}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for label, r in results.items():
        print(f"{label:<16}{r['rps']:>10}{r['p50_ms']:>10}{r['p90_ms']:>10}{r['p99_ms']:>10}{r['max_ms']:>10}")
    print(f"ratio authenticated/unauthenticated RPS: {ratio:.2f} (target >= 0.85)")
    print(f"authenticated p99: {results['authenticated']['p99_ms']} ms (target < 20 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

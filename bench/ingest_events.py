#!/usr/bin/env python3
"""IngestStripeEvent in the core alone (no sidecar): distinct signed events with 20 %
redeliveries, sent over gRPC by concurrent clients as a sidecar would forward them.

    python bench/ingest_events.py [--events 10000] [--duplicates 0.2] [--clients 32] [--processes 2]

Prints accepted events/s and latency percentiles, and checks every distinct event was
stored exactly once. Uses PostgreSQL on 127.0.0.1:5432 (or NOBILL_BENCH_DATABASE_URL)
and Redis on 127.0.0.1:6379 (or NOBILL_BENCH_REDIS_URL); a scratch database and Redis
namespace. The full sidecar → core → applied benchmark measures the whole path."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from auth_overhead import SECRET, _free_port, admin_url  # noqa: E402

WEBHOOK_SECRET = "whsec_bench_secret"


def _events(count: int, duplicates: float) -> list[bytes]:
    distinct = [
        json.dumps({
            "id": f"evt_bench_{uuid.uuid4().hex}", "object": "event", "api_version": "2026-10-28.endive",
            "created": int(time.time()), "livemode": False, "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            # A type the core stores and does not apply: this measures ingestion alone.
            "type": "customer.updated",
            "data": {"object": {"id": f"cus_bench_{i}", "object": "customer", "metadata": {}}},
        }).encode()
        for i in range(int(count * (1 - duplicates)))
    ]
    bodies = distinct + random.choices(distinct, k=count - len(distinct))
    random.shuffle(bodies)
    return bodies


async def _send(port: int, token: str, bodies: list[bytes], clients: int) -> tuple[float, list[float]]:
    from nobill.stripe.webhooks import sign
    from nobill.v1 import billing_pb2, billing_pb2_grpc

    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []
    metadata = (("authorization", f"Bearer {token}"),)

    async def client() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = billing_pb2_grpc.BillingServiceStub(channel)
            while not queue.empty():
                body = queue.get_nowait()
                started = time.perf_counter()
                await stub.IngestStripeEvent(
                    billing_pb2.IngestStripeEventRequest(payload=body, signature_header=sign(body, WEBHOOK_SECRET)),
                    metadata=metadata, timeout=30,
                )
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - started, latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--duplicates", type=float, default=0.2)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--processes", type=int, default=2, help="server processes (SO_REUSEPORT)")
    args = parser.parse_args()

    from nobill.auth.tokens import mint_token
    from nobill.config import Settings
    from nobill.db.migrate import upgrade

    admin = admin_url()
    name = f"nobill_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    database_url = admin.rsplit("/", 1)[0] + f"/{name}"
    servers: list[subprocess.Popen] = []
    try:
        upgrade(Settings.from_env({"NOBILL_DATABASE_URL": database_url}).database_url)
        port = _free_port()
        env = {
            **os.environ,
            "NOBILL_DATABASE_URL": database_url,
            "NOBILL_REDIS_URL": os.environ.get("NOBILL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
            "NOBILL_REDIS_NAMESPACE": name,
            "NOBILL_JWT_SECRET": SECRET,
            "NOBILL_AUDIT_KEY": "bench:audit-key-that-is-long-enough-for-hmac-0000",
            "NOBILL_GRPC_ADDR": f"127.0.0.1:{port}",
            "NOBILL_USAGE_GRPC_ADDR": f"127.0.0.1:{_free_port()}",
            "NOBILL_STRIPE_WEBHOOK_SECRETS": WEBHOOK_SECRET,
            "NOBILL_LOG_LEVEL": "WARNING",
        }
        servers = [subprocess.Popen([sys.executable, "-m", "nobill.cli", "serve", "--processes", str(args.processes)], env=env)]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        time.sleep(1)
        token = mint_token(secret=SECRET, issuer="nobill", audience="nobill", subject="bench-sidecar",
                           service=True, scopes=["webhooks:ingest"], orgs=[])
        bodies = _events(args.events, args.duplicates)
        seconds, latencies = asyncio.run(_send(port, token, bodies, args.clients))
        latencies.sort()
        with psycopg.connect(database_url) as connection:
            # Every stored id is claimed once in stripe_event_ids (these customers are no org's).
            stored = connection.execute("SELECT count(*) FROM stripe_event_ids").fetchone()[0]
        distinct = len(set(bodies))
        print(f"events sent:     {len(bodies)} ({distinct} distinct, {len(bodies) - distinct} redeliveries)")
        print(f"accepted/s:      {len(bodies) / seconds:,.0f}  ({seconds:.1f} s, {args.clients} clients, {args.processes} server processes)")
        print(f"latency ms:      p50 {latencies[len(latencies) // 2] * 1e3:.1f}  p90 {latencies[int(len(latencies) * 0.9)] * 1e3:.1f}  "
              f"p99 {latencies[int(len(latencies) * 0.99)] * 1e3:.1f}  max {latencies[-1] * 1e3:.1f}")
        print(f"stored:          {stored} (expected {distinct}: {'ok' if stored == distinct else 'MISMATCH'})")
        return 0 if stored == distinct else 1
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=30)
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Stripe webhooks end to end: sidecar -> core -> applied.

    python bench/webhook_pipeline.py [--events 10000] [--duplicates 0.2] [--orgs 50]
                                     [--senders 64] [--server-processes 1] [--worker-threads 8]

Starts the Stripe sandbox, `nobill serve`, `nobill worker` and `nobill webhooks` as their
own processes on a scratch database, creates --orgs organizations (their Stripe customers
made by the worker) each with a Pro subscription on the sandbox, then plays Stripe:
--events distinct events, signed as Stripe signs them, plus --duplicates x events
redeliveries, shuffled, POSTed to the sidecar by --senders concurrent connections.
Event mix: 60 % customer.subscription.updated, 10 % invoice.paid (both applied by
re-reading the object from Stripe), 30 % customer.updated (stored and ignored).

Prints deliveries accepted per second at the sidecar and, for every applied event, the lag
from its first 200 to `applied_at`; checks every distinct event was stored once and none
was parked. PostgreSQL on 127.0.0.1:5432 (or NOBILL_BENCH_DATABASE_URL), Redis on
127.0.0.1:6379 (or NOBILL_BENCH_REDIS_URL). Run it on a quiet machine."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
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

WEBHOOK_SECRET = "whsec_bench_pipeline_secret"
STRIPE_KEY = "sk_test_bench_pipeline"
AUDIT_KEY = "bench:audit-key-that-is-long-enough-for-hmac-0000"


def _progress(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def _wait(predicate, what: str, timeout: float = 120.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def _http_ready(port: int) -> bool:
    import http.client

    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        connection.request("GET", "/healthz")
        return connection.getresponse().status in (200, 404)
    except OSError:
        return False


def _event(event_type: str, obj: dict) -> dict:
    return {
        "id": f"evt_bench_{uuid.uuid4().hex}", "object": "event", "api_version": "2026-10-28.endive",
        "created": int(time.time()), "livemode": False, "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None}, "type": event_type, "data": {"object": obj},
    }


def _make_events(subscriptions: list[dict], invoices: list[dict], customers: list[dict], count: int) -> list[dict]:
    events = []
    for index in range(count):
        roll = index % 10
        if roll < 6:
            events.append(_event("customer.subscription.updated", random.choice(subscriptions)))
        elif roll < 7 and invoices:
            events.append(_event("invoice.paid", random.choice(invoices)))
        else:
            events.append(_event("customer.updated", random.choice(customers)))
    return events


async def _deliver(url: str, deliveries: list[tuple[str, bytes]], senders: int) -> tuple[float, dict[str, float], dict[int, int]]:
    """POST every delivery; returns the wall time, each event's first-accept time, status counts."""
    import aiohttp

    from nobill.stripe.webhooks import sign

    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    for delivery in deliveries:
        queue.put_nowait(delivery)
    accepted_at: dict[str, float] = {}
    statuses: dict[int, int] = {}

    async def sender(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            event_id, body = queue.get_nowait()
            while True:
                headers = {"Stripe-Signature": sign(body, WEBHOOK_SECRET), "Content-Type": "application/json"}
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                    if response.status == 200:
                        accepted_at.setdefault(event_id, time.time())
                        break
                await asyncio.sleep(0.5)  # as Stripe would, later

    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=senders)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(sender(session) for _ in range(senders)))
    return time.perf_counter() - started, accepted_at, statuses


def _percentile(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, int(len(values) * fraction))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000, help="distinct events")
    parser.add_argument("--duplicates", type=float, default=0.2, help="redeliveries, as a share of --events")
    parser.add_argument("--orgs", type=int, default=50)
    parser.add_argument("--senders", type=int, default=64, help="concurrent HTTP connections playing Stripe")
    parser.add_argument("--server-processes", type=int, default=1)
    parser.add_argument("--worker-threads", type=int, default=8)
    args = parser.parse_args()

    import stripe

    from nobill.config import Settings
    from nobill.db.migrate import upgrade
    from nobill.auth.tokens import mint_token
    from nobill.v1 import tenancy_pb2, tenancy_pb2_grpc

    admin = admin_url()
    name = f"nobill_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    database_url = admin.rsplit("/", 1)[0] + f"/{name}"
    processes: list[subprocess.Popen] = []
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"{name}.log", "w")
    try:
        _progress(f"database {name}: migrating")
        upgrade(Settings.from_env({"NOBILL_DATABASE_URL": database_url}).database_url)
        sandbox_port, grpc_port, webhooks_port = _free_port(), _free_port(), _free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("NOBILL_", "STRIPE_"))},
            "NOBILL_DATABASE_URL": database_url,
            "NOBILL_REDIS_URL": os.environ.get("NOBILL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
            "NOBILL_REDIS_NAMESPACE": name,
            "NOBILL_JWT_SECRET": SECRET,
            "NOBILL_AUDIT_KEY": AUDIT_KEY,
            "NOBILL_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
            "NOBILL_USAGE_GRPC_ADDR": f"127.0.0.1:{_free_port()}",
            "NOBILL_WEBHOOKS_ADDR": f"127.0.0.1:{webhooks_port}",
            "NOBILL_STRIPE_WEBHOOK_SECRETS": WEBHOOK_SECRET,
            "STRIPE_API_KEY": STRIPE_KEY,
            "NOBILL_STRIPE_API_BASE": f"http://127.0.0.1:{sandbox_port}",
            "NOBILL_LOG_LEVEL": "WARNING",
        }

        roles: dict[str, subprocess.Popen] = {}

        def start(*command: str) -> subprocess.Popen:
            process = subprocess.Popen([sys.executable, "-m", "nobill.cli", *command], env=env, stdout=log, stderr=log)
            processes.append(process)
            roles[command[0]] = process
            return process

        def cpu_seconds() -> dict[str, float]:
            """CPU time so far of each role's process tree (serve --processes N has children)."""
            import psutil

            spent = {}
            for role, process in roles.items():
                tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
                spent[role] = sum(p.cpu_times().user + p.cpu_times().system for p in tree)
            own = psutil.Process().cpu_times()
            spent["bench (playing Stripe)"] = own.user + own.system
            # The servers every role talks to share the two cores: count them too (all of
            # this machine's PostgreSQL and Redis processes, so other load on them counts).
            for label, names in (("postgres*", ("postgres",)), ("redis*", ("redis-server", "redis"))):
                spent[label] = 0.0
                for server in psutil.process_iter(["name"]):
                    try:
                        if (server.info["name"] or "").startswith(names):
                            times = server.cpu_times()
                            spent[label] += times.user + times.system
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        continue
            return spent

        _progress("starting the sandbox, the server, the worker and the sidecar")
        start("sandbox", "--port", str(sandbox_port), "--log-level", "WARNING")
        _wait(lambda: _http_ready(sandbox_port), "the sandbox")
        subprocess.run([sys.executable, "-m", "nobill.cli", "stripe", "sync"], env=env, check=True, stdout=log, stderr=log)
        start("serve", "--processes", str(args.server_processes))
        start("worker", "--threads", str(args.worker_threads))
        start("webhooks")
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
        _wait(lambda: _http_ready(webhooks_port), "the sidecar")

        _progress(f"creating {args.orgs} organizations and their Stripe customers")
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            tenancy = tenancy_pb2_grpc.TenancyServiceStub(channel)
            for index in range(args.orgs):
                # One owner per org: a user may create only so many orgs a day (NOBILL_RATE_LIMIT_ORGS_PER_DAY).
                token = mint_token(secret=SECRET, issuer="nobill", audience="nobill", subject=f"bench-owner-{index}",
                                   email=f"owner-{index}@bench.test")
                tenancy.CreateOrganization(tenancy_pb2.CreateOrganizationRequest(name=f"Bench {index}"),
                                           metadata=(("authorization", f"Bearer {token}"),))

        def customers() -> list[str]:
            with psycopg.connect(database_url) as connection:
                return [row[0] for row in connection.execute(
                    "SELECT stripe_customer_id FROM stripe_customers WHERE stripe_customer_id IS NOT NULL")]

        _wait(lambda: len(customers()) == args.orgs, "the worker to create every Stripe customer")
        client = stripe.StripeClient(STRIPE_KEY, base_addresses={"api": env["NOBILL_STRIPE_API_BASE"]})
        prices = {price.lookup_key: price.id for price in client.v1.prices.list(
            {"lookup_keys": ["nobill_pro_base_monthly", "nobill_pro_seat_monthly"]}).data}
        # As a Pro checkout makes it (base + one seat for the owner), so applying the events
        # finds no drift to correct: the bench measures the pipeline, not drift correction.
        items = [{"price": prices["nobill_pro_base_monthly"], "quantity": 1},
                 {"price": prices["nobill_pro_seat_monthly"], "quantity": 1}]
        subscriptions, invoices, customer_objects = [], [], []
        for customer in customers():
            subscription = client.v1.subscriptions.create(
                {"customer": customer, "items": items, "trial_period_days": 14}
            )
            subscriptions.append(json.loads(subscription.last_response.body))
            if subscription.latest_invoice:
                invoice = client.v1.invoices.retrieve(subscription.latest_invoice)
                invoices.append(json.loads(invoice.last_response.body))
            customer_objects.append(json.loads(client.v1.customers.retrieve(customer).last_response.body))

        events = _make_events(subscriptions, invoices, customer_objects, args.events)
        bodies = [(event["id"], json.dumps(event).encode()) for event in events]
        deliveries = bodies + random.choices(bodies, k=int(len(bodies) * args.duplicates))
        random.shuffle(deliveries)
        _progress(f"delivering {len(deliveries)} webhooks ({len(bodies)} distinct) with {args.senders} senders")
        cpu_before = cpu_seconds()
        seconds, accepted_at, statuses = asyncio.run(
            _deliver(f"http://127.0.0.1:{webhooks_port}/stripe/webhooks", deliveries, args.senders)
        )
        delivered_at = time.time()
        # (A PostgreSQL backend that ended in between takes its CPU time with it: never below 0.)
        cpu_used = {role: max(0.0, spent - cpu_before[role]) for role, spent in cpu_seconds().items()}

        def pending() -> int:
            with psycopg.connect(database_url) as connection:
                return connection.execute("SELECT count(*) FROM stripe_events WHERE state = 'pending'").fetchone()[0]

        _progress("waiting until every event is applied")
        _wait(lambda: pending() == 0, "every event to be applied", timeout=600)
        drained_after = time.time() - delivered_at
        with psycopg.connect(database_url) as connection:
            rows = connection.execute("SELECT event_id, state, extract(epoch FROM applied_at) FROM stripe_events").fetchall()
            # The events one unit of work applies share its applied_at: one (org, applied_at)
            # is one round of Stripe re-reads for that org.
            rounds = connection.execute(
                "SELECT count(DISTINCT (org_id, applied_at)) FROM stripe_events WHERE state = 'applied'"
            ).fetchone()[0]
        states: dict[str, int] = {}
        for _, state, _ in rows:
            states[state] = states.get(state, 0) + 1
        lags = sorted(float(applied) - accepted_at[event_id] for event_id, state, applied in rows if state == "applied")

        print()
        print(f"deliveries:        {len(deliveries)} ({len(bodies)} distinct, {len(deliveries) - len(bodies)} redeliveries); "
              f"HTTP statuses {dict(sorted(statuses.items()))}")
        print(f"accepted/s:        {len(deliveries) / seconds:,.0f} at the sidecar ({seconds:.1f} s; "
              f"{args.senders} senders, {args.server_processes} server process(es), worker {args.worker_threads} threads)")
        if lags:
            print(f"apply lag s:       p50 {_percentile(lags, 0.5):.2f}  p90 {_percentile(lags, 0.9):.2f}  "
                  f"p99 {_percentile(lags, 0.99):.2f}  max {lags[-1]:.2f}  ({len(lags)} applied events)")
        if rounds:
            print(f"apply rounds:      {rounds} (an org's pending events applied together; {len(lags) / rounds:.1f} events each)")
        print("CPU s while delivering: " + ", ".join(f"{role} {spent:.1f}" for role, spent in cpu_used.items()))
        print(f"all applied:       {drained_after:.1f} s after the last delivery was accepted")
        print(f"stored:            {len(rows)} (expected {len(bodies)}); states {states}")
        ok = len(rows) == len(bodies) and states.get("parked", 0) == 0 and states.get("pending", 0) == 0
        print(f"result:            {'ok' if ok else 'MISMATCH'}  (target: >= 1,000 accepted/s, every event applied within 10 s)")
        return 0 if ok else 1
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())

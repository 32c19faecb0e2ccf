"""Throughput of the Stripe sandbox: customers created per second through the real
stripe-python client, from several threads in several client processes, for a few seconds.

    .venv/bin/python bench/sandbox_throughput.py [--processes 2] [--threads 4] [--seconds 5]

The sandbox runs in its own process (`python -m nobill.sandbox --port 0`), as in real
use. stripe-python costs several times more CPU per call than the sandbox does to
serve it, so on a small machine the clients saturate the CPUs first; the script also
prints the sandbox's own CPU time per request (from /proc, on Linux) and the request
rate one CPU of sandbox would sustain. The run is bounded: clients stop at the deadline
and every child process is terminated on the way out.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import subprocess
import sys
import threading
import time

import requests
import stripe


def start_sandbox_process() -> tuple[subprocess.Popen[str], str]:
    child = subprocess.Popen(
        [sys.executable, "-m", "nobill.sandbox", "--port", "0", "--log-level", "WARNING"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert child.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = child.stdout.readline()
        if "listening on" in line:
            return child, line.rsplit(" ", 1)[1].strip()
        if child.poll() is not None:
            break
    child.kill()
    raise SystemExit("the sandbox did not start")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, from /proc (None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def make_client(url: str) -> stripe.StripeClient:
    # NOTE: requests re-reads proxy settings from the environment on every call unless
    # the session ignores them, which makes the client itself markedly slower.
    session = requests.Session()
    session.trust_env = False
    return stripe.StripeClient(
        "sk_test_bench",
        base_addresses={"api": url, "meter_events": url},
        max_network_retries=0,
        http_client=stripe.RequestsClient(session=session),
    )


def client_process(url: str, threads: int, start_at: float, seconds: float) -> tuple[int, int]:
    """One client process: `threads` threads creating customers until the deadline."""
    client = make_client(url)
    client.v1.customers.create({"email": "warmup@example.com"})
    counts = [0] * threads
    failures = [0] * threads
    time.sleep(max(0.0, start_at - time.time()))
    deadline = time.monotonic() + seconds

    def work(index: int) -> None:
        while time.monotonic() < deadline:
            try:
                client.v1.customers.create({"email": f"bench-{index}@example.com", "metadata": {"n": str(counts[index])}})
                counts[index] += 1
            except stripe.StripeError:
                failures[index] += 1

    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=seconds + 30)
    return sum(counts), sum(failures)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2, help="client processes (default: 2)")
    parser.add_argument("--threads", type=int, default=4, help="threads per client process (default: 4)")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    sandbox, url = start_sandbox_process()
    try:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=args.processes, mp_context=context) as pool:
            start_at = time.time() + 3.0  # let every client process import and warm up first
            futures = [pool.submit(client_process, url, args.threads, start_at, args.seconds) for _ in range(args.processes)]
            time.sleep(max(0.0, start_at - time.time()))
            cpu_before = cpu_seconds(sandbox.pid)
            results = [future.result(timeout=args.seconds + 60) for future in futures]
            cpu_after = cpu_seconds(sandbox.pid)
    finally:
        sandbox.terminate()
        try:
            sandbox.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sandbox.kill()
    done = sum(count for count, _ in results)
    failed = sum(failures for _, failures in results)
    print(
        f"sandbox throughput: {done / args.seconds:,.0f} requests/s "
        f"({done} customers.create in {args.seconds:.0f} s; {args.processes} client processes x {args.threads} threads; "
        f"{failed} failures; {os.cpu_count()} CPUs shared by clients and sandbox)"
    )
    if cpu_before is not None and cpu_after is not None and done:
        per_request = (cpu_after - cpu_before) / done
        print(
            f"sandbox CPU per request: {per_request * 1000:.2f} ms, i.e. about "
            f"{1 / per_request:,.0f} requests/s per CPU of sandbox"
        )
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

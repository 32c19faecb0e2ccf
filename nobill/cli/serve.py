"""`nobill serve`: the gRPC server, alone or as N processes sharing one port."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys

from nobill import startup
from nobill.cli.arguments import positive
from nobill.config import Settings, parse_address
from nobill.errors import ConfigError
from nobill.shutdown import stop_requested

log = logging.getLogger("nobill.cli")


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    addr_source = "NOBILL_GRPC_ADDR"
    if args.addr:
        settings = settings.replace(grpc_addr=parse_address("--addr", args.addr))
        addr_source = "--addr"
    if args.usage_addr:
        settings = settings.replace(usage_grpc_addr=parse_address("--usage-addr", args.usage_addr))
    processes = positive("--processes", args.processes) if args.processes is not None else settings.grpc_processes
    if processes > 1:
        return _serve_processes(settings, processes, addr_source)
    from nobill.api.server import build_server, serve_until
    from nobill.api.usage_server import start_usage_server
    from nobill.db.migrate import require_latest_schema

    stop = stop_requested()
    require_latest_schema(settings.require("database_url"))
    with startup.start(settings, jwt_keys=True, audit_keys="required", metrics=True, database=True) as runtime:
        running = build_server(settings, runtime.database, reuse_port=args.reuse_port, addr_source=addr_source)
        usage = start_usage_server(settings, runtime.database, reuse_port=args.reuse_port)
        log.info(
            "serving",
            extra={"addr": settings.grpc_addr, "port": running.port, "usage_port": usage.port, "pid": os.getpid()},
        )
        serve_until(stop, running)
        usage.stop(grace=5)
    return 0


def _serve_processes(settings: Settings, processes: int, addr_source: str) -> int:
    """Run `processes` single-process servers sharing one port through SO_REUSEPORT, so
    every core serves calls; forward SIGTERM/SIGINT and wait for all to drain."""
    import tempfile

    from nobill.api.server import bind_problem
    from nobill.db.migrate import require_latest_schema

    if settings.grpc_addr.endswith(":0"):
        raise ConfigError(addr_source, "several processes need a fixed port, not 0")
    if settings.usage_grpc_addr.endswith(":0"):
        raise ConfigError("NOBILL_USAGE_GRPC_ADDR", "several processes need a fixed port, not 0")
    # The children share the port with each other only; refuse a port someone else holds.
    for address, source in ((settings.grpc_addr, addr_source), (settings.usage_grpc_addr, "NOBILL_USAGE_GRPC_ADDR")):
        problem = bind_problem(address)
        if problem:
            raise ConfigError(source, f"cannot listen on {address}: {problem}")
    require_latest_schema(settings.require("database_url"))
    env = {
        **os.environ,
        "NOBILL_GRPC_ADDR": settings.grpc_addr,
        "NOBILL_USAGE_GRPC_ADDR": settings.usage_grpc_addr,
        "NOBILL_GRPC_PROCESSES": "1",
    }
    metrics_dir = None
    if settings.metrics_addr:
        # Each child writes its samples here; this process serves their sum.
        metrics_dir = tempfile.mkdtemp(prefix="nobill-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        env["NOBILL_METRICS_ADDR"] = ""
    children: list[subprocess.Popen] = []

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    # The children start the same way on their own; this process only serves the metrics sum.
    runtime = startup.start(settings, audit_keys="off", metrics=True)
    children.extend(
        subprocess.Popen([sys.executable, "-m", "nobill.cli", "serve", "--reuse-port"], env=env) for _ in range(processes)
    )
    log.info("serving", extra={"addr": settings.grpc_addr, "processes": processes, "pids": [c.pid for c in children]})
    codes = []
    for child in children:
        codes.append(child.wait())
        if metrics_dir:
            from nobill.metrics import mark_process_dead

            mark_process_dead(child.pid)
    runtime.close()
    if metrics_dir:
        import shutil

        shutil.rmtree(metrics_dir, ignore_errors=True)
    return max(codes, key=abs)


def register(commands: argparse._SubParsersAction) -> None:
    """Add `nobill serve` to the `nobill` command."""
    serve = commands.add_parser("serve", help="run the gRPC server", description="Run the gRPC server.")
    serve.add_argument("--addr", help="host:port to listen on (default: NOBILL_GRPC_ADDR)")
    serve.add_argument("--usage-addr", help="host:port of the usage server (default: NOBILL_USAGE_GRPC_ADDR)")
    serve.add_argument(
        "--processes", type=int, help="server processes sharing the port (default: NOBILL_GRPC_PROCESSES)"
    )
    # Set by `serve --processes N` on its children only: they share the port with each other.
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(handler=_serve)

"""`nobill dev`: the whole platform in one process on embedded defaults (nobill/dev.py)."""

from __future__ import annotations

import argparse

from nobill.config import Settings, parse_address


def _dev(args: argparse.Namespace, settings: Settings) -> int:
    from nobill.dev import run_dev

    data_dir_source = "NOBILL_DATA_DIR"
    if args.data_dir:
        settings = settings.replace(data_dir=args.data_dir)
        data_dir_source = "--data-dir"
    addr_source = "NOBILL_GRPC_ADDR"
    if args.addr:
        settings = settings.replace(grpc_addr=parse_address("--addr", args.addr))
        addr_source = "--addr"
    run_dev(settings, ready_file=args.ready_file, addr_source=addr_source, data_dir_source=data_dir_source)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add `nobill dev` to the `nobill` command."""
    dev = commands.add_parser(
        "dev",
        help="run everything on embedded defaults",
        description="Start embedded PostgreSQL and Redis (unless NOBILL_DATABASE_URL / NOBILL_REDIS_URL are set), "
        "the Stripe sandbox (unless STRIPE_API_KEY is set; it keeps its port in the data dir), migrations, "
        "the catalog sync, then the gRPC and usage servers, the worker, the scheduler and the Stripe webhook "
        "sidecar (NOBILL_WEBHOOKS_ADDR). Print the addresses and a development token and write them to "
        "<data dir>/dev.json; write the settings other commands need to act on it to <data dir>/dev.env. "
        "Ctrl-C (SIGINT) or SIGTERM stops it: new work is refused, work in hand drains, the embedded "
        "servers stop last.",
    )
    dev.add_argument("--data-dir", help="where to keep all state (default: NOBILL_DATA_DIR or .nobill)")
    dev.add_argument("--addr", help="gRPC host:port (default: NOBILL_GRPC_ADDR)")
    dev.add_argument("--ready-file", help=argparse.SUPPRESS)
    dev.set_defaults(handler=_dev)

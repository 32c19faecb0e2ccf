#!/usr/bin/env python3
"""A NOBill gRPC server for benchmarks, with authentication on or (baseline) off.

Not a product entry point: `--no-auth` exists only here."""

from __future__ import annotations

import argparse
import sys

from nobill.api.server import build_server, serve_until
from nobill.config import Settings
from nobill.db.database import connect
from nobill.logs import configure_logging
from nobill.shutdown import stop_requested


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-auth", action="store_true", help="skip token verification and permission checks")
    args = parser.parse_args()
    stop = stop_requested()
    settings = Settings.from_env()
    configure_logging("WARNING", "json")
    database = connect(settings.require("database_url"), app_role=settings.db_app_role, pool_size=settings.db_pool_size)
    # Several of these share one port, as `nobill serve --processes N` children do.
    running = build_server(settings, database, authentication=not args.no_auth, reuse_port=True)
    print(running.port, flush=True)
    serve_until(stop, running, grace=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

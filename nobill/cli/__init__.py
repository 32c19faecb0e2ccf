"""The `nobill` command: one module per command group, each adding its commands with
`register(commands)`; handlers take (args, settings) and return the exit code.

Exit codes: 2 a configuration error (a setting or flag to fix), 3 a dependency that is
unavailable (retry later), 1 a refused operation."""

from __future__ import annotations

import argparse
import sys

from nobill.cli import audit, dev, jobs, migrate, sandbox, serve, stripe, token, webhooks
from nobill.config import Settings
from nobill.errors import ConfigError, DomainError, Unavailable
from nobill.logs import configure_logging

# In the order `nobill --help` lists them.
COMMAND_GROUPS = (serve, jobs, stripe, migrate, token, audit, dev, webhooks, sandbox)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nobill",
        description="NOBill: multi-tenant, Stripe-backed billing platform service. "
        "Settings come from NOBILL_* environment variables (see README).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        # Until a command's own start-up (nobill.startup) replaces it: errors in flags and
        # settings are still logged in the configured format.
        configure_logging(settings.log_level, settings.log_format)
        return args.handler(args, settings)
    except ConfigError as error:
        print(f"nobill: configuration error: {error.setting}: {error.problem}", file=sys.stderr)
        return 2
    except Unavailable as error:
        print(f"nobill: {error.message}", file=sys.stderr)
        return 3
    except DomainError as error:
        print(f"nobill: {error.message}", file=sys.stderr)
        return 1

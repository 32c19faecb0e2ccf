"""`nobill sandbox`: the Stripe sandbox, when its distribution (nobill-sandbox) is installed
(sandbox/pyproject.toml; see nobill.startup)."""

from __future__ import annotations

import argparse

from nobill import startup
from nobill.config import Settings
from nobill.errors import ConfigError


def _sandbox(args: argparse.Namespace, settings: Settings) -> int:
    from nobill.sandbox import cli as sandbox_cli

    return sandbox_cli.run(args)


def _sandbox_missing(args: argparse.Namespace, settings: Settings) -> int:
    raise ConfigError("nobill sandbox", startup.SANDBOX_MISSING)


def register(commands: argparse._SubParsersAction) -> None:
    """Add `nobill sandbox` to the `nobill` command."""
    sandbox = commands.add_parser(
        "sandbox",
        help="run the Stripe sandbox",
        description="A stateful, Stripe-compatible HTTP server for offline development and tests.",
    )
    if startup.sandbox_installed():
        from nobill.sandbox import cli as sandbox_cli

        sandbox_cli.add_arguments(sandbox)
        sandbox.set_defaults(handler=_sandbox)
    else:
        sandbox.set_defaults(handler=_sandbox_missing)

"""`nobill webhooks`: the Stripe webhook sidecar."""

from __future__ import annotations

import argparse

from nobill import startup
from nobill.config import Settings, parse_address
from nobill.shutdown import stop_requested


def _webhooks(args: argparse.Namespace, settings: Settings) -> int:
    from nobill.webhooks.runner import run_webhooks

    addr_source = "NOBILL_WEBHOOKS_ADDR"
    if args.addr:
        settings = settings.replace(webhooks_addr=parse_address("--addr", args.addr))
        addr_source = "--addr"
    if args.core:
        settings = settings.replace(core_addr=parse_address("--core", args.core))
    stop = stop_requested()
    with startup.start(settings, audit_keys="off"):
        run_webhooks(settings, stop, addr_source=addr_source)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add `nobill webhooks` to the `nobill` command."""
    webhooks = commands.add_parser(
        "webhooks",
        help="run the Stripe webhook sidecar",
        description="Accept Stripe webhooks on POST /stripe/webhooks and forward each (raw body and "
        "Stripe-Signature) to BillingService.IngestStripeEvent; answer 2xx only once the core has stored it. "
        "GET /healthz answers 200 while serving.",
    )
    webhooks.add_argument("--addr", help="host:port to listen on (default: NOBILL_WEBHOOKS_ADDR)")
    webhooks.add_argument("--core", help="the core's gRPC address (default: NOBILL_CORE_ADDR, else NOBILL_GRPC_ADDR)")
    webhooks.set_defaults(handler=_webhooks)

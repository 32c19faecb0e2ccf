"""The StripeClient, built from settings."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from nobill.config import Settings
from nobill.stripe.errors import StripeNotConfigured

# Fail fast: an RPC waiting on Stripe holds a server thread; actors retry on their own.
REQUEST_TIMEOUT_SECONDS = 15.0


def make_client(settings: Settings) -> Any:
    """A `stripe.StripeClient` for STRIPE_API_KEY, pointed at NOBILL_STRIPE_API_BASE when set
    (the sandbox); no retries inside the library (callers decide how to retry)."""
    import requests
    import stripe

    if not settings.stripe_api_key:
        raise StripeNotConfigured("STRIPE_API_KEY is not set")
    base_addresses: dict[str, str] = {}
    if settings.stripe_api_base:
        base_addresses = {"api": settings.stripe_api_base, "meter_events": settings.stripe_api_base}
    session = requests.Session()
    if settings.stripe_api_base and urlsplit(settings.stripe_api_base).hostname in ("127.0.0.1", "localhost", "::1"):
        # A proxy configured in the environment must never see loopback traffic (the sandbox).
        session.trust_env = False
    return stripe.StripeClient(
        settings.stripe_api_key,
        base_addresses=base_addresses,  # type: ignore[arg-type]
        max_network_retries=0,
        http_client=stripe.RequestsClient(timeout=REQUEST_TIMEOUT_SECONDS, session=session),
    )

"""The Stripe sandbox over HTTP with the catalog (meters) synced, for the reporting tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def meter_sandbox(settings) -> Iterator[tuple[str, object]]:  # noqa: ANN001
    """(sandbox URL, settings pointing at it) with NOBill's meters and prices created."""
    from nobill.billing.catalog_sync import sync
    from nobill.sandbox.server import start_sandbox
    from nobill.stripe.gateway import StripeGateway

    with start_sandbox(host="127.0.0.1", port=0, state_file=None, autosave_interval=None) as handle:
        stripe_settings = settings.replace(
            stripe_api_key="sk_test_nobill_usage", stripe_api_base=handle.url,
            stripe_breaker_failures=1000,  # these tests inject faults on purpose; keep the breaker out of the way
        )
        sync(StripeGateway.from_settings(stripe_settings))
        yield handle.url, stripe_settings

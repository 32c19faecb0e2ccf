"""Billing's running world: the Stripe sandbox over HTTP, the catalog synced to it, a
sandbox webhook endpoint delivering to IngestStripeEvent, and a NOBill server and real
Dramatiq worker configured for Stripe (test clocks on); one world per test module."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import grpc
import pytest

from billing_helpers import BillingWorld, WebhookReceiver, stripe_client


@pytest.fixture(scope="module")
def sandbox() -> Iterator[str]:
    from nobill.sandbox.server import start_sandbox
    from nobill.sandbox.settings import SandboxSettings

    settings = SandboxSettings(webhook_retry_schedule=(0.1, 0.3, 1.0, 2.0, 4.0), webhook_timeout=10.0, tick_interval=0.5)
    with start_sandbox(host="127.0.0.1", port=0, state_file=None, settings=settings, autosave_interval=None) as handle:
        yield handle.url


@pytest.fixture(scope="module")
def billing(sandbox: str, settings, database) -> Iterator[BillingWorld]:  # noqa: ANN001
    from nobill.api.server import build_server
    from nobill.billing.catalog_sync import sync
    from nobill.jobs.runner import start_worker
    from nobill.stripe.gateway import StripeGateway

    client = stripe_client(sandbox)
    receiver = WebhookReceiver()
    endpoint = client.v1.webhook_endpoints.create({"url": receiver.url, "enabled_events": ["*"]})
    billing_settings = settings.replace(
        # Its own queues: this module's worker must not run jobs of other test modules' orgs.
        redis_namespace=f"{settings.redis_namespace}-billing-{uuid.uuid4().hex[:6]}",
        stripe_api_key="sk_test_nobill_tests",
        stripe_api_base=sandbox,
        # A retired secret first: rotation means any configured secret may match.
        stripe_webhook_secrets=("whsec_retired_secret_for_rotation", endpoint.secret),
        stripe_test_clocks=True,
        stripe_breaker_failures=3,
        stripe_breaker_cooldown_seconds=2,
        stripe_event_attempts=3,
        seat_sync_delay_seconds=1,
    )
    running = build_server(billing_settings, database)
    worker = start_worker(
        billing_settings.redis_url, threads=4, namespace=billing_settings.redis_namespace,
        settings=billing_settings, database=database,
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    grpc.channel_ready_future(channel).result(timeout=10)
    world = BillingWorld(
        sandbox, channel, database, billing_settings, client, endpoint.secret,
        started_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1),
    )
    receiver.target = (channel, world.ingest_token())
    sync(StripeGateway.from_settings(billing_settings))
    yield world
    receiver.stop()
    channel.close()
    worker.stop(timeout=10_000)
    running.stop(grace=1)

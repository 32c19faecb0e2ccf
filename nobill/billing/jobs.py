"""Billing's jobs (Dramatiq actors): thin wrappers around the domain functions. Imported only by
the worker (nobill/jobs/modules.py); everything else enqueues by name (nobill/jobs/send.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import dramatiq

from nobill.billing import inbox, inbox_apply, outbox, seats, trials
from nobill.jobs import runtime

QUEUE = "billing"
# Dramatiq's Retries middleware backs off exponentially with jitter between these bounds.
RETRY: dict[str, Any] = {"max_retries": 25, "min_backoff": 500, "max_backoff": 120_000}


@dramatiq.actor(actor_name=outbox.RUN_ACTOR, queue_name=QUEUE, **RETRY)
def run_outbox_row(org_id: str, outbox_id: str) -> None:
    """Run one Stripe outbox row; a transient Stripe failure raises, so Dramatiq retries."""
    outbox.run(database=runtime.database(), gateway=runtime.stripe_gateway(), org_id=org_id, outbox_id=outbox_id)


@dramatiq.actor(actor_name=inbox.APPLY_ACTOR, queue_name=QUEUE, **RETRY)
def apply_stripe_events(event_ids: list[str]) -> None:
    """Apply stored webhook events (a stored batch, or a sweep's or replay's ids), per org;
    unknown customers and transient failures retry the message."""
    settings = runtime.settings()
    inbox_apply.apply_events(
        database=runtime.database(),
        gateway=runtime.stripe_gateway(),
        event_ids=event_ids,
        max_attempts=settings.stripe_event_attempts,
        seat_sync_delay=settings.seat_sync_delay_seconds,
    )


@dramatiq.actor(actor_name=inbox.LEGACY_APPLY_ACTOR, queue_name=QUEUE, **RETRY)
def apply_stripe_event(event_id: str) -> None:
    """One event id: messages a core from before batching enqueued, applied the same way."""
    apply_stripe_events(event_ids=[event_id])


@dramatiq.actor(actor_name="nobill.billing.sweep_outbox", queue_name=QUEUE, max_retries=0)
def sweep_outbox() -> None:
    outbox.sweep(database=runtime.database())


@dramatiq.actor(actor_name="nobill.billing.sweep_inbox", queue_name=QUEUE, max_retries=0)
def sweep_inbox() -> None:
    retention = dt.timedelta(days=runtime.settings().stripe_unrouted_retention_days)
    inbox.sweep(database=runtime.database(), unrouted_retention=retention)


@dramatiq.actor(actor_name="nobill.billing.expire_trials", queue_name=QUEUE, max_retries=0)
def expire_trials() -> None:
    trials.expire_due(database=runtime.database(), gateway=runtime.stripe_gateway())


@dramatiq.actor(actor_name="nobill.billing.reconcile_seats", queue_name=QUEUE, max_retries=0, time_limit=30 * 60_000)
def reconcile_seats() -> None:
    seats.reconcile(database=runtime.database(), gateway=runtime.stripe_gateway())

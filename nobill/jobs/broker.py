"""The Dramatiq broker (Redis). Actors are thin: they call domain services."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, Retries, ShutdownNotifications, TimeLimit


def configure_broker(redis_url: str, *, namespace: str = "nobill") -> RedisBroker:
    """Create the broker and make it the one actors declared afterwards bind to."""
    broker = RedisBroker(
        url=redis_url,
        # NOTE: tests and developers share one Redis; a namespace keeps their queues apart.
        namespace=namespace,
        middleware=[
            AgeLimit(),
            TimeLimit(time_limit=5 * 60_000),
            ShutdownNotifications(),
            Callbacks(),
            Pipelines(),
            # NOTE: actors are idempotent, so retrying with backoff is always safe.
            Retries(max_retries=20, min_backoff=1_000, max_backoff=5 * 60_000),
        ],
    )
    dramatiq.set_broker(broker)
    return broker

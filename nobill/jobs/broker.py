"""The Dramatiq broker (Redis). Actors are thin: they call domain services."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AgeLimit, Callbacks, Middleware, Pipelines, Retries, ShutdownNotifications, TimeLimit

from nobill import metrics


class JobMetrics(Middleware):
    """Counts finished job messages by outcome, and failures, for the metrics endpoint."""

    def after_process_message(self, broker, message, *, result=None, exception=None):  # noqa: ANN001, ANN201
        outcome = "ok" if exception is None else "failed"
        metrics.JOBS_PROCESSED.labels(message.queue_name, message.actor_name, outcome).inc()
        if exception is not None:
            metrics.JOBS_FAILED.labels(message.queue_name, message.actor_name).inc()

    def after_skip_message(self, broker, message):  # noqa: ANN001, ANN201
        metrics.JOBS_PROCESSED.labels(message.queue_name, message.actor_name, "skipped").inc()


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
            JobMetrics(),
        ],
    )
    dramatiq.set_broker(broker)
    return broker

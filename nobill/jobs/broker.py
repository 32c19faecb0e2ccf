"""The Dramatiq broker (Redis). Actors are thin: they call domain services."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AgeLimit, Callbacks, Middleware, Pipelines, ShutdownNotifications, TimeLimit

from nobill import metrics
from nobill.jobs.poison import DEFAULT_POISON_AFTER, PoisonAwareRetries, rule_for


class JobMetrics(Middleware):
    """Counts finished job messages by outcome, and failures, for the metrics endpoint."""

    def after_process_message(self, broker, message, *, result=None, exception=None):  # noqa: ANN001, ANN201
        outcome = "ok" if exception is None else "failed"
        metrics.JOBS_PROCESSED.labels(message.queue_name, message.actor_name, outcome).inc()
        if exception is not None:
            metrics.JOBS_FAILED.labels(message.queue_name, message.actor_name).inc()

    def after_skip_message(self, broker, message):  # noqa: ANN001, ANN201
        metrics.JOBS_PROCESSED.labels(message.queue_name, message.actor_name, "skipped").inc()


def configure_broker(redis_url: str, *, namespace: str = "nobill", poison_after: int = DEFAULT_POISON_AFTER) -> RedisBroker:
    """Create the broker and make it the one actors declared afterwards bind to. A job
    that fails the same way `poison_after` times is parked (nobill/jobs/poison.py)."""
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
            # NOTE: actors are idempotent, so retrying with backoff is always safe; a job
            # that cannot succeed is parked instead of retried forever (the poison rule).
            PoisonAwareRetries(
                rule=rule_for(redis_url, namespace=namespace, threshold=poison_after),
                max_retries=20, min_backoff=1_000, max_backoff=5 * 60_000,
            ),
            JobMetrics(),
        ],
    )
    dramatiq.set_broker(broker)
    return broker

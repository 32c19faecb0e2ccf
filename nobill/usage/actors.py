"""Usage actors: a sweep finds orgs with deltas waiting and sends one aggregation per org;
aggregation is exactly once whatever the number of workers (see aggregation.py)."""

from __future__ import annotations

import logging
import time

import dramatiq

from nobill.db.unit_of_work import UnitOfWork
from nobill.jobs.resources import database
from nobill.usage import aggregation, partitions

log = logging.getLogger(__name__)

QUEUE = "usage"


@dramatiq.actor(queue_name=QUEUE, max_retries=50, min_backoff=500, max_backoff=30_000)
def aggregate_usage(org_id: str) -> None:
    """Roll the org's waiting deltas into its totals."""
    taken = aggregation.aggregate_all(database=database(), org_id=org_id)
    if taken:
        log.debug("usage aggregated", extra={"org_id": org_id, "deltas": taken})


@dramatiq.actor(queue_name=QUEUE, max_retries=0, time_limit=60_000)
def sweep_usage() -> None:
    """Send an aggregation for every org with deltas waiting."""
    for org_id in aggregation.orgs_with_deltas(database=database()):
        aggregate_usage.send(org_id)


@dramatiq.actor(queue_name=QUEUE, max_retries=3, time_limit=5 * 60_000)
def maintain_usage_partitions() -> None:
    """Create the next dedupe windows ahead of time; drop those past retention."""
    with UnitOfWork(database()) as uow:
        partitions.maintain(uow=uow, now_epoch=time.time())
        uow.commit()


def schedule(aggregate_seconds: float) -> list:
    """Periodic messages of the usage domain (see nobill/jobs/periodic.py)."""
    return [(lambda: sweep_usage, aggregate_seconds), (lambda: maintain_usage_partitions, 3600.0)]

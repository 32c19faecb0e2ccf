"""Usage jobs (Dramatiq actors): a sweep (every second, nobill/jobs/scheduler.py) finds orgs with deltas
waiting and sends one aggregation per org; aggregation is exactly once whatever the
number of workers (see aggregation.py)."""

from __future__ import annotations

import logging
import time

import dramatiq

from nobill.db.unit_of_work import UnitOfWork
from nobill.jobs import runtime
from nobill.jobs.send import send
from nobill.usage import aggregation, partitions

log = logging.getLogger(__name__)

QUEUE = "usage"
AGGREGATE = "nobill.usage.aggregate"
SWEEP = "nobill.usage.sweep"
MAINTAIN_PARTITIONS = "nobill.usage.maintain_partitions"


@dramatiq.actor(actor_name=AGGREGATE, queue_name=QUEUE, max_retries=50, min_backoff=500, max_backoff=30_000)
def aggregate_usage(org_id: str) -> None:
    """Roll the org's waiting deltas into its totals."""
    taken = aggregation.aggregate_all(database=runtime.database(), org_id=org_id)
    if taken:
        log.debug("usage aggregated", extra={"org_id": org_id, "deltas": taken})


@dramatiq.actor(actor_name=SWEEP, queue_name=QUEUE, max_retries=0, time_limit=60_000)
def sweep_usage() -> None:
    """Send an aggregation for every org with deltas waiting."""
    for org_id in aggregation.orgs_with_deltas(database=runtime.database()):
        send(AGGREGATE, org_id, queue_name=QUEUE)


@dramatiq.actor(actor_name=MAINTAIN_PARTITIONS, queue_name=QUEUE, max_retries=3, time_limit=5 * 60_000)
def maintain_partitions() -> None:
    """Create the next dedupe windows ahead of time; drop those past retention."""
    with UnitOfWork(runtime.database()) as uow:
        partitions.maintain(uow=uow, now_epoch=time.time())
        uow.commit()


REPORT = "nobill.usage.report"
REPORT_SWEEP = "nobill.usage.report_sweep"
RECONCILE = "nobill.usage.reconcile"
RECONCILE_SWEEP = "nobill.usage.reconcile_sweep"
_meters: list = []


def _meter_events():  # noqa: ANN202
    from nobill.stripe.meter_events import MeterEvents

    if not _meters:
        _meters.append(MeterEvents(runtime.stripe_gateway()))
    return _meters[0]


# Transient Stripe failures (429, 5xx, outage) raise: Dramatiq retries with exponential
# backoff and jitter, and the same identifiers are resent.
@dramatiq.actor(actor_name=REPORT, queue_name=QUEUE, max_retries=30, min_backoff=1_000, max_backoff=300_000)
def report_usage(org_id: str) -> None:
    """Send the org's unreported usage deltas to Stripe meters."""
    from nobill.usage import reporting

    reporting.report_org(database=runtime.database(), meters=_meter_events(), org_id=org_id)


@dramatiq.actor(actor_name=REPORT_SWEEP, queue_name=QUEUE, max_retries=0, time_limit=60_000)
def sweep_reports() -> None:
    """Send a reporting run for every org with unreported usage (one message per org)."""
    from nobill.usage import reporting

    for org_id in reporting.orgs_to_report(database=runtime.database()):
        send(REPORT, org_id, queue_name=QUEUE)


@dramatiq.actor(actor_name=RECONCILE, queue_name=QUEUE, max_retries=10, min_backoff=5_000, max_backoff=600_000)
def reconcile_usage(org_id: str) -> None:
    """Compare the org's reported totals with Stripe's meter summaries (drift: log + audit)."""
    from nobill.usage import reporting

    reporting.reconcile_org(database=runtime.database(), meters=_meter_events(), org_id=org_id)


@dramatiq.actor(actor_name=RECONCILE_SWEEP, queue_name=QUEUE, max_retries=0, time_limit=60_000)
def sweep_reconciliations() -> None:
    from nobill.usage import reporting

    for org_id in reporting.orgs_to_reconcile(database=runtime.database()):
        send(RECONCILE, org_id, queue_name=QUEUE)

"""Reporting usage to Stripe Billing Meters, exactly once.

For an org billed for usage (Enterprise with metered prices and a Stripe customer), each
report carries the not-yet-reported delta of one total (org, metric, period), up to what
one meter event can carry (MAX_VALUE, Stripe's 15 digits; the rest goes in the next
reports, each with its own identifier):

1. In one transaction: a `pending` report row with a deterministic identifier
   (`nobill-<org>-<metric>-<period>-<n>`) and a timestamp inside the period. At most one
   pending report per org and metric (a partial unique index): one call in flight per
   Stripe customer and meter.
2. Claim it (a short lease), call Stripe with that identifier (also the Idempotency-Key).
3. In one transaction: the report `sent`, its quantity added to the total's
   `reported_quantity`.

A crash between 2 and 3 leaves the report pending; the next run resends the same
identifier, which Stripe dedupes. A report still pending after Stripe's 24-hour
identifier window is reconciled against the meter's event summaries before anything is
sent again. Stripe calls grow with orgs × metrics per run, never with events."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import cast

from sqlalchemy import and_, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import CursorResult

from nobill.audit import service as audit
from nobill.audit.actors import Actor, ActorType, AuditContext
from nobill.billing import accounts
from nobill.billing.plans import PlanCode, SubscriptionStatus
from nobill.db.database import Database
from nobill.db.unit_of_work import UnitOfWork
from nobill.stripe.errors import StripePermanent
from nobill.stripe.meter_events import MAX_VALUE, MeterEvents, Sent
from nobill.usage import periods
from nobill.usage.tables import usage_reconciliations, usage_reports, usage_totals

log = logging.getLogger(__name__)

IDENTIFIER_WINDOW = dt.timedelta(hours=24)
# Resend a pending report only before this age; older ones are reconciled first.
RESEND_BEFORE = IDENTIFIER_WINDOW - dt.timedelta(hours=1)
LEASE = dt.timedelta(seconds=60)
FAILED_PAUSE = dt.timedelta(hours=1)
# Rounds of one reporting run: each sends at most one meter event per metric.
MAX_ROUNDS = 10
_BIGINT = 2**63 - 1
SYSTEM = AuditContext(Actor(ActorType.SYSTEM, "usage-reporting", "Usage reporting"), "usage-reporting")


@dataclass(frozen=True)
class Report:
    report_id: str
    metric: str
    period_start: dt.datetime
    period_end: dt.datetime
    quantity: int
    identifier: str
    stripe_customer_id: str
    event_timestamp: dt.datetime
    created_at: dt.datetime


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def bills_usage(account: accounts.BillingAccount) -> bool:
    """Usage is charged: Enterprise, not trialing or canceled, with metered prices on the subscription."""
    return (
        account.plan is PlanCode.ENTERPRISE
        and account.status not in (SubscriptionStatus.TRIALING, SubscriptionStatus.CANCELED)
        and account.metered
    )


def billed_customer(*, uow: UnitOfWork, org_id: str) -> str | None:
    """The org's Stripe customer id if its usage is billed; None otherwise (or while the
    customer is still being created)."""
    account = accounts.get(uow=uow, org_id=org_id)
    return account.stripe_customer_id if bills_usage(account) else None


def event_timestamp(period_start: dt.datetime, period_end: dt.datetime, now: dt.datetime) -> dt.datetime:
    """A moment inside the period's whole minutes (what a meter summary can cover exactly):
    now while the period lasts, else its last such second."""
    first, last = periods.report_window(period_start, period_end)
    return min(max(now.replace(microsecond=0), first), last - dt.timedelta(seconds=1))


def _report_of(row) -> Report:  # noqa: ANN001
    return Report(row.report_id, row.metric, row.period_start, row.period_end, row.quantity, row.identifier,
                  row.stripe_customer_id, row.event_timestamp, row.created_at)


def plan_reports(*, uow: UnitOfWork, org_id: str, now: dt.datetime) -> None:
    """Create a pending report for each metric whose totals have unreported usage and
    that has no pending report yet (oldest period first)."""
    customer = billed_customer(uow=uow, org_id=org_id)
    if customer is None:
        return
    # Locking the totals first serializes planners of one org; what they see next is current.
    rows = uow.execute(
        select(usage_totals.c.metric, usage_totals.c.period_start, usage_totals.c.period_end, usage_totals.c.quantity,
               usage_totals.c.reported_quantity)
        .where(usage_totals.c.org_id == org_id, usage_totals.c.quantity > usage_totals.c.reported_quantity)
        .order_by(usage_totals.c.period_start, usage_totals.c.metric)
        .with_for_update()
    ).all()
    pending = set(
        uow.execute(select(usage_reports.c.metric).where(usage_reports.c.org_id == org_id, usage_reports.c.state == "pending")).scalars()
    )
    # A report Stripe refused for good (deleted customer, archived meter) is not retried
    # on every run: the metric waits FAILED_PAUSE, then a new report tries again.
    pending |= set(
        uow.execute(
            select(usage_reports.c.metric).where(
                usage_reports.c.org_id == org_id, usage_reports.c.state == "failed",
                usage_reports.c.created_at > now - FAILED_PAUSE,
            )
        ).scalars()
    )
    for row in rows:
        if row.metric in pending:
            continue
        pending.add(row.metric)
        sequence = uow.execute(
            select(func.count()).select_from(usage_reports).where(
                usage_reports.c.org_id == org_id, usage_reports.c.metric == row.metric,
                usage_reports.c.period_start == row.period_start,
            )
        ).scalar_one() + 1
        period = row.period_start.strftime("%Y%m%d")
        uow.execute(
            pg_insert(usage_reports).values(
                org_id=org_id,
                report_id=f"{row.metric}:{period}:{sequence}",
                metric=row.metric,
                period_start=row.period_start,
                period_end=row.period_end,
                # One meter event carries at most MAX_VALUE: a larger delta goes out as
                # several reports, one after another, each with its own identifier.
                quantity=min(int(row.quantity - row.reported_quantity), MAX_VALUE),
                identifier=f"nobill-{org_id}-{row.metric}-{period}-{sequence}",
                stripe_customer_id=customer,
                event_timestamp=event_timestamp(row.period_start, row.period_end, now),
                state="pending",
                created_at=now,
            ).on_conflict_do_nothing(index_elements=["org_id", "metric"], index_where=text("state = 'pending'"))
        )


def _claim(*, uow: UnitOfWork, org_id: str, now: dt.datetime) -> list[Report]:
    """Pending reports nobody else is sending right now, leased to this run."""
    rows = uow.execute(
        update(usage_reports)
        .where(
            usage_reports.c.org_id == org_id,
            usage_reports.c.state == "pending",
            (usage_reports.c.claimed_until.is_(None)) | (usage_reports.c.claimed_until < now),
        )
        .values(claimed_until=now + LEASE, attempts=usage_reports.c.attempts + 1)
        .returning(*usage_reports.c)
    ).all()
    return [_report_of(row) for row in rows]


def _mark_sent(*, uow: UnitOfWork, org_id: str, report: Report, now: dt.datetime) -> None:
    done = cast(CursorResult, uow.execute(
        update(usage_reports)
        .where(usage_reports.c.org_id == org_id, usage_reports.c.report_id == report.report_id, usage_reports.c.state == "pending")
        .values(state="sent", sent_at=now, claimed_until=None, last_error=None)
    )).rowcount
    if done:  # never count a report twice, even if two runs raced to confirm it
        uow.execute(
            update(usage_totals)
            .where(and_(usage_totals.c.org_id == org_id, usage_totals.c.metric == report.metric,
                        usage_totals.c.period_start == report.period_start))
            .values(reported_quantity=usage_totals.c.reported_quantity + report.quantity)
        )


def _release(*, uow: UnitOfWork, org_id: str, report: Report, error: str, state: str = "pending") -> None:
    uow.execute(
        update(usage_reports)
        .where(usage_reports.c.org_id == org_id, usage_reports.c.report_id == report.report_id, usage_reports.c.state == "pending")
        .values(state=state, claimed_until=None, last_error=error[:500])
    )


def report_org(*, database: Database, meters: MeterEvents, org_id: str, now: dt.datetime | None = None) -> int:
    """One reporting run for the org; returns how many reports were confirmed. Raises
    StripeTransient after trying every report if any failed transiently (retry later).
    A delta larger than one meter event can carry goes out in several rounds of one run
    (at most MAX_ROUNDS; the next run goes on)."""
    confirmed = 0
    for _ in range(MAX_ROUNDS):
        sent, full = _report_round(database=database, meters=meters, org_id=org_id, now=now)
        confirmed += sent
        if not full:
            return confirmed
    return confirmed


def _report_round(*, database: Database, meters: MeterEvents, org_id: str, now: dt.datetime | None) -> tuple[int, bool]:
    """Plan, claim and send the org's reports once: (confirmed, whether a confirmed report
    was a full meter event, i.e. more of its delta may be waiting)."""
    now = now or _now()
    with UnitOfWork(database, org_id=org_id) as uow:
        plan_reports(uow=uow, org_id=org_id, now=now)
        claimed = _claim(uow=uow, org_id=org_id, now=now)
        uow.commit()
    confirmed = 0
    full = False
    transient: Exception | None = None
    for report in claimed:
        try:
            if now - report.created_at >= RESEND_BEFORE:
                outcome = _reconcile_stale(database=database, meters=meters, org_id=org_id, report=report, now=now)
                confirmed += outcome
                continue
            result = meters.send(
                event_name=report.metric, identifier=report.identifier, stripe_customer_id=report.stripe_customer_id,
                value=report.quantity, timestamp=report.event_timestamp,
            )
        except StripePermanent as failure:
            log.error("usage report refused by Stripe", extra={"org_id": org_id, "report": report.report_id, "error": failure.message})
            with UnitOfWork(database, org_id=org_id) as uow:
                _release(uow=uow, org_id=org_id, report=report, error=failure.message, state="failed")
                audit.record(uow=uow, context=SYSTEM, action="usage.report_failed", target_type="usage_report",
                             target_id=report.report_id, after={"error": failure.message, "quantity": report.quantity})
                uow.commit()
            continue
        except Exception as failure:  # noqa: BLE001 - transient (429, 5xx, outage): the same identifier later
            transient = failure
            with UnitOfWork(database, org_id=org_id) as uow:
                _release(uow=uow, org_id=org_id, report=report, error=str(failure))
                uow.commit()
            continue
        with UnitOfWork(database, org_id=org_id) as uow:
            _mark_sent(uow=uow, org_id=org_id, report=report, now=_now())
            uow.commit()
        confirmed += 1
        full = full or report.quantity == MAX_VALUE
        log.info("usage reported", extra={"org_id": org_id, "metric": report.metric, "quantity": report.quantity,
                                          "identifier": report.identifier, "outcome": result.value})
    if transient is not None:
        raise transient
    return confirmed, full


def _reconcile_stale(*, database: Database, meters: MeterEvents, org_id: str, report: Report, now: dt.datetime) -> int:
    """A report unconfirmed past Stripe's identifier window: did it land? Compare the
    meter's summary for the period with what we know was sent."""
    start = report.period_start
    first, last = periods.report_window(start, report.period_end)
    stripe_total = meters.summary(event_name=report.metric, stripe_customer_id=report.stripe_customer_id, start=first, end=last)
    with UnitOfWork(database, org_id=org_id) as uow:
        reported = int(uow.execute(  # NUMERIC
            select(usage_totals.c.reported_quantity).where(
                usage_totals.c.org_id == org_id, usage_totals.c.metric == report.metric, usage_totals.c.period_start == start
            )
        ).scalar_one())
        if stripe_total == reported + report.quantity:
            _mark_sent(uow=uow, org_id=org_id, report=report, now=now)  # it landed; the answer was lost
            uow.commit()
            return 1
        if stripe_total == reported:
            # It never landed: a new report (new identifier) carries the delta.
            _release(uow=uow, org_id=org_id, report=report, error="not in Stripe after 24 h; superseded", state="superseded")
            uow.commit()
            return 0
        _release(uow=uow, org_id=org_id, report=report, error=f"Stripe shows {stripe_total}, expected {reported} or "
                 f"{reported + report.quantity}; needs a person", state="failed")
        audit.record(uow=uow, context=SYSTEM, action="usage.drift_detected", target_type="usage_report",
                     target_id=report.report_id, after={"stripe": stripe_total, "reported": reported, "pending": report.quantity})
        uow.commit()
        log.error("usage drift on a stale report", extra={"org_id": org_id, "report": report.report_id})
        return 0


# --- reconciliation ------------------------------------------------------------------


@dataclass(frozen=True)
class Reconciliation:
    checked_at: dt.datetime
    in_sync: bool
    drift_quantity: int


def reconcile_org(*, database: Database, meters: MeterEvents, org_id: str, now: dt.datetime | None = None) -> Reconciliation | None:
    """Compare every reported total of the current and previous period with Stripe's meter
    summary; store the result, log and audit any drift. None when the org is not billed."""
    now = now or _now()
    # The current and the previous period (whatever their length): ended less than a month ago.
    since = periods.add_months(now, -1)
    with UnitOfWork(database, org_id=org_id) as uow:
        customer = billed_customer(uow=uow, org_id=org_id)
        totals = uow.execute(
            select(usage_totals.c.metric, usage_totals.c.period_start, usage_totals.c.period_end,
                   usage_totals.c.reported_quantity)
            .where(usage_totals.c.org_id == org_id, usage_totals.c.period_end > since)
        ).all()
    if customer is None:
        return None
    drift = 0
    differences = []
    for total in totals:
        first, last = periods.report_window(total.period_start, total.period_end)
        stripe_total = meters.summary(event_name=total.metric, stripe_customer_id=customer, start=first, end=last)
        reported = int(total.reported_quantity)  # NUMERIC
        if stripe_total != reported:
            drift += reported - stripe_total
            differences.append({"metric": total.metric, "period_start": total.period_start.isoformat(),
                                "reported": reported, "stripe": stripe_total})
    result = Reconciliation(now, not differences, drift)
    with UnitOfWork(database, org_id=org_id) as uow:
        # The stored drift is a bigint: saturated, never an overflow (the audit has it exact).
        values = {"checked_at": now, "in_sync": result.in_sync, "drift_quantity": max(min(drift, _BIGINT), -_BIGINT)}
        uow.execute(
            text(
                "INSERT INTO usage_reconciliations (org_id, checked_at, in_sync, drift_quantity) "
                "VALUES (:org_id, :checked_at, :in_sync, :drift_quantity) ON CONFLICT (org_id) DO UPDATE SET "
                "checked_at = excluded.checked_at, in_sync = excluded.in_sync, drift_quantity = excluded.drift_quantity"
            ),
            {"org_id": org_id, **values},
        )
        if differences:
            audit.record(uow=uow, context=SYSTEM, action="usage.drift_detected", target_type="organization",
                         target_id=org_id, after={"differences": differences})
            log.warning("usage drift against Stripe", extra={"org_id": org_id, "differences": differences})
        uow.commit()
    return result


def last_reconciliation(*, uow: UnitOfWork, org_id: str) -> Reconciliation | None:
    row = uow.execute(select(usage_reconciliations).where(usage_reconciliations.c.org_id == org_id)).one_or_none()
    return None if row is None else Reconciliation(row.checked_at, row.in_sync, row.drift_quantity)


def orgs_to_report(*, database: Database) -> list[str]:
    with UnitOfWork(database) as uow:
        return list(uow.execute(text("SELECT nobill_usage_orgs_to_report()")).scalars())


def orgs_to_reconcile(*, database: Database, now: dt.datetime | None = None) -> list[str]:
    since = (now or _now()) - dt.timedelta(days=40)
    with UnitOfWork(database) as uow:
        return list(uow.execute(text("SELECT nobill_usage_orgs_reported_since(:since)"), {"since": since}).scalars())

"""Reporting usage to Stripe meters through the sandbox, exactly once: retries after a
500 that committed, 429s, an outage, a crash between the call and its confirmation, a
report unconfirmed past the 24-hour identifier window, concurrent reporters. At the end of
every scenario Stripe's meter summary equals the internal total, to the unit."""

from __future__ import annotations

import datetime as dt
import json
import threading
import urllib.request
import uuid

import psycopg
import pytest
import stripe
from requests import Session

from nobill import ids
from nobill.audit.actors import Actor, ActorType, AuditContext
from nobill.db.unit_of_work import UnitOfWork
from nobill.stripe.errors import StripeTransient
from nobill.stripe.gateway import StripeGateway
from nobill.stripe.meter_events import MeterEvents, Sent
from nobill.tenancy import service as tenancy
from nobill.usage import aggregation, ingest, periods, reporting, summary

UTC = dt.timezone.utc
METRICS = ("api_requests", "background_jobs", "reports_generated")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _control(url: str, method: str, path: str, body: dict | None = None) -> None:
    request = urllib.request.Request(
        f"{url}/_sandbox/{path}", data=json.dumps(body).encode() if body is not None else None, method=method,
        headers={"Content-Type": "application/json"},
    )
    _NO_PROXY.open(request, timeout=30).read()


def _stripe(url: str) -> stripe.StripeClient:
    session = Session()
    session.trust_env = False
    return stripe.StripeClient("sk_test_nobill_usage", base_addresses={"api": url, "meter_events": url},
                               http_client=stripe.RequestsClient(session=session), max_network_retries=0)


class CountingMeters(MeterEvents):
    """The real MeterEvents, counting calls; `crash_after_send` simulates a worker killed
    after Stripe stored the event and before NOBill recorded it."""

    def __init__(self, gateway: StripeGateway) -> None:
        super().__init__(gateway)
        self.calls = 0
        self.crash_after_send = False

    def send(self, **kwargs) -> Sent:  # noqa: ANN003
        self.calls += 1
        result = super().send(**kwargs)
        if self.crash_after_send:
            raise SystemExit("worker killed")
        return result


@pytest.fixture
def world(meter_sandbox, database, database_url):  # noqa: ANN001
    url, settings = meter_sandbox
    _control(url, "DELETE", "faults")
    meters = CountingMeters(StripeGateway.from_settings(settings))
    yield url, meters
    _control(url, "DELETE", "faults")


def _billed_org(database, database_url: str, url: str, *, plan: str = "enterprise", metered: bool = True) -> tuple[str, str]:
    """An org through the service layer, then put on Enterprise with metered prices and a
    Stripe customer: stands in for checkout + webhooks, which billing's tests cover."""
    with UnitOfWork(database) as uow:
        user_id = tenancy.provision_user(uow=uow, subject=f"rep-{uuid.uuid4().hex}", email=None)
        uow.commit()
    org_id = ids.new_id("org")
    with UnitOfWork(database, org_id=org_id) as uow:
        tenancy.create(uow=uow, context=AuditContext(Actor(ActorType.USER, user_id, "t"), "r"), owner_user_id=user_id, name="Rep")
        uow.commit()
    customer = _stripe(url).v1.customers.create({"name": org_id}).id
    with psycopg.connect(database_url, autocommit=True) as db:
        db.execute("UPDATE stripe_customers SET stripe_customer_id = %s WHERE org_id = %s", (customer, org_id))
        db.execute("UPDATE subscriptions SET plan = %s, status = 'active', metered = %s WHERE org_id = %s",
                   (plan, metered, org_id))
    return org_id, customer


def _record(database, org_id: str, count: int, metric: str = "api_requests", quantity: int = 3) -> None:
    keys = [uuid.uuid4().hex for _ in range(count)]
    columns = ingest.EventColumns(keys, [metric] * count, [quantity] * count, [ingest.NOW] * count, [""] * count)
    with UnitOfWork(database, org_id=org_id) as uow:
        ingest.record_usage(uow=uow, org_id=org_id, events=columns)
        uow.commit()
    aggregation.aggregate_all(database=database, org_id=org_id)


def _internal(database, org_id: str) -> dict[str, tuple[int, int]]:
    """metric -> (recorded, reported) of the current period."""
    with UnitOfWork(database, org_id=org_id) as uow:
        found = summary.get(uow=uow, org_id=org_id)
    return {t.metric: (t.quantity, t.reported_quantity) for t in found.totals}


def _stripe_totals(meters: MeterEvents, customer: str) -> dict[str, int]:
    start = periods.period_start(dt.datetime.now(UTC))
    totals = {m: meters.summary(event_name=m, stripe_customer_id=customer, start=start, end=periods.period_end(start))
              for m in METRICS}
    return {m: v for m, v in totals.items() if v}


def _assert_in_stripe(database, meters: MeterEvents, org_id: str, customer: str) -> None:
    internal = _internal(database, org_id)
    assert all(recorded == reported for recorded, reported in internal.values()), internal
    assert _stripe_totals(meters, customer) == {m: recorded for m, (recorded, _) in internal.items()}


def test_each_total_is_reported_once_with_one_call_per_metric(world, database, database_url) -> None:
    url, meters = world
    org_id, customer = _billed_org(database, database_url, url)
    _record(database, org_id, 500, "api_requests", 3)
    _record(database, org_id, 200, "background_jobs", 1)

    confirmed = reporting.report_org(database=database, meters=meters, org_id=org_id)
    again = reporting.report_org(database=database, meters=meters, org_id=org_id)

    assert (confirmed, again, meters.calls) == (2, 0, 2)  # 700 events, two Stripe calls
    _assert_in_stripe(database, meters, org_id, customer)
    _record(database, org_id, 10, "api_requests", 1)
    assert reporting.report_org(database=database, meters=meters, org_id=org_id) == 1
    _assert_in_stripe(database, meters, org_id, customer)


def test_pro_and_trial_usage_is_not_reported(world, database, database_url) -> None:
    url, meters = world
    org_id, customer = _billed_org(database, database_url, url, plan="pro", metered=False)
    _record(database, org_id, 5)

    assert reporting.report_org(database=database, meters=meters, org_id=org_id) == 0
    assert meters.calls == 0 and _stripe_totals(meters, customer) == {}


@pytest.mark.parametrize(
    "fault",
    [
        {"error_rate": {"rate": 1.0, "status": 500, "after_commit": True, "path_prefix": "/v1/billing/meter_events"}},
        {"error_rate": {"rate": 1.0, "status": 503, "path_prefix": "/v1/billing/meter_events"}},
        {"rate_limit": {"requests_per_second": 0.001, "burst": 1, "path_prefix": "/v1/billing/meter_events"}},
        {"outage": {"seconds": 60, "mode": "503"}},
    ],
    ids=["500-after-commit", "503", "429", "outage"],
)
def test_stripe_failures_are_retried_with_the_same_identifier(world, database, database_url, fault) -> None:
    url, meters = world
    org_id, customer = _billed_org(database, database_url, url)
    _record(database, org_id, 100, "reports_generated", 2)
    _control(url, "POST", "faults", fault)
    if "rate_limit" in fault:  # use up the one request of the burst
        with pytest.raises(stripe.StripeError):
            _stripe(url).v1.billing.meter_events.create({"event_name": "no_such_meter", "payload": {"value": "1"}})

    with pytest.raises(StripeTransient):
        reporting.report_org(database=database, meters=meters, org_id=org_id)
    assert _internal(database, org_id) == {"reports_generated": (200, 0)}  # pending, not sent
    _control(url, "DELETE", "faults")
    confirmed = reporting.report_org(database=database, meters=meters, org_id=org_id)

    assert confirmed == 1
    _assert_in_stripe(database, meters, org_id, customer)


def test_a_worker_killed_between_the_call_and_its_record_resends_the_same_identifier(world, database, database_url) -> None:
    url, meters = world
    org_id, customer = _billed_org(database, database_url, url)
    _record(database, org_id, 50, "api_requests", 4)
    meters.crash_after_send = True

    with pytest.raises(SystemExit):
        reporting.report_org(database=database, meters=meters, org_id=org_id)
    meters.crash_after_send = False
    # The claim is still held by the dead worker until its lease ends.
    assert reporting.report_org(database=database, meters=meters, org_id=org_id) == 0
    later = dt.datetime.now(UTC) + reporting.LEASE + dt.timedelta(seconds=1)
    assert reporting.report_org(database=database, meters=meters, org_id=org_id, now=later) == 1

    _assert_in_stripe(database, meters, org_id, customer)


def test_a_report_unconfirmed_past_the_identifier_window_is_reconciled_not_resent(world, database, database_url) -> None:
    url, meters = world
    landed_org, landed_customer = _billed_org(database, database_url, url)
    lost_org, lost_customer = _billed_org(database, database_url, url)
    for org_id in (landed_org, lost_org):
        _record(database, org_id, 30, "background_jobs", 1)
    # landed: Stripe stored the event, the worker died; lost: the call never happened.
    meters.crash_after_send = True
    with pytest.raises(SystemExit):
        reporting.report_org(database=database, meters=meters, org_id=landed_org)
    meters.crash_after_send = False
    with UnitOfWork(database, org_id=lost_org) as uow:
        reporting.plan_reports(uow=uow, org_id=lost_org, now=dt.datetime.now(UTC))
        uow.commit()
    calls = meters.calls
    day_later = dt.datetime.now(UTC) + dt.timedelta(hours=25)

    landed = reporting.report_org(database=database, meters=meters, org_id=landed_org, now=day_later)
    superseded = reporting.report_org(database=database, meters=meters, org_id=lost_org, now=day_later)
    assert (landed, superseded, meters.calls - calls) == (1, 0, 0)  # summaries read, nothing sent
    resent = reporting.report_org(database=database, meters=meters, org_id=lost_org)

    assert resent == 1
    _assert_in_stripe(database, meters, landed_org, landed_customer)
    _assert_in_stripe(database, meters, lost_org, lost_customer)


def test_concurrent_reporters_send_each_delta_once(world, database, database_url) -> None:
    url, meters = world
    org_id, customer = _billed_org(database, database_url, url)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for _ in range(5):
                _record(database, org_id, 20, "api_requests", 1)
                reporting.report_org(database=database, meters=meters, org_id=org_id)
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    while reporting.report_org(database=database, meters=meters, org_id=org_id):
        pass

    assert errors == []
    assert _internal(database, org_id)["api_requests"][0] == 400
    _assert_in_stripe(database, meters, org_id, customer)


def test_reconciliation_reports_drift_in_the_log_the_audit_and_the_summary(world, database, database_url, superuser) -> None:
    url, meters = world
    org_id, customer = _billed_org(database, database_url, url)
    _record(database, org_id, 10, "api_requests", 5)
    reporting.report_org(database=database, meters=meters, org_id=org_id)

    clean = reporting.reconcile_org(database=database, meters=meters, org_id=org_id)
    # Someone sends usage for this customer to Stripe behind NOBill's back.
    _stripe(url).v1.billing.meter_events.create(
        {"event_name": "api_requests", "payload": {"stripe_customer_id": customer, "value": "7"}}
    )
    drifted = reporting.reconcile_org(database=database, meters=meters, org_id=org_id)
    with UnitOfWork(database, org_id=org_id) as uow:
        shown = summary.get(uow=uow, org_id=org_id).last_reconciliation

    assert clean is not None and clean.in_sync and clean.drift_quantity == 0
    assert drifted is not None and not drifted.in_sync and drifted.drift_quantity == -7
    assert shown is not None and not shown.in_sync and shown.drift_quantity == -7
    actions = [a for (a,) in superuser.execute(
        "SELECT action FROM audit_events WHERE org_id = %s ORDER BY sequence", (org_id,)).fetchall()]
    assert actions.count("usage.drift_detected") == 1


def test_the_worker_and_scheduler_report_on_their_own(world, meter_sandbox, database, database_url) -> None:
    from nobill.jobs.scheduler import Periodic
    from nobill.usage import jobs as actors

    from usage_workers import isolated_worker

    url, meters = world
    _, settings = meter_sandbox
    org_id, customer = _billed_org(database, database_url, url)
    keys = [uuid.uuid4().hex for _ in range(300)]
    with UnitOfWork(database, org_id=org_id) as uow:  # recorded, not yet aggregated: the worker does both
        ingest.record_usage(uow=uow, org_id=org_id, events=ingest.EventColumns(keys, ["api_requests"] * 300, [2] * 300, [ingest.NOW] * 300, [""] * 300))
        uow.commit()
    actors._meters.clear()
    with isolated_worker(settings, database, (Periodic(actors.SWEEP, 0.2), Periodic(actors.REPORT_SWEEP, 0.2))):
        deadline = dt.datetime.now(UTC) + dt.timedelta(seconds=30)
        while dt.datetime.now(UTC) < deadline and _stripe_totals(meters, customer) != {"api_requests": 600}:
            threading.Event().wait(0.2)
    actors._meters.clear()

    assert _stripe_totals(meters, customer) == {"api_requests": 600}
    _assert_in_stripe(database, meters, org_id, customer)


def _subscribe(database_url: str, org_id: str, start: dt.datetime) -> dt.datetime:
    """Give the org a Stripe subscription period starting at `start` (as billing records it)."""
    end = periods.add_months(start, 1)
    with psycopg.connect(database_url, autocommit=True) as db:
        db.execute(
            "UPDATE subscriptions SET stripe_subscription_id = %s, current_period_start = %s, current_period_end = %s "
            "WHERE org_id = %s", (f"sub_{uuid.uuid4().hex[:14]}", start, end, org_id),
        )
    return end


def _record_at(database, org_id: str, stamps: list[dt.datetime]) -> ingest.BatchResult:
    keys = [uuid.uuid4().hex for _ in stamps]
    micros = [int(stamp.timestamp() * 1_000_000) for stamp in stamps]
    with UnitOfWork(database, org_id=org_id) as uow:
        result = ingest.record_usage(uow=uow, org_id=org_id, events=ingest.EventColumns(
            keys, ["api_requests"] * len(keys), [1] * len(keys), micros, [""] * len(keys)))
        uow.commit()
    return result


def test_usage_follows_the_subscriptions_periods_and_is_reported_inside_them(world, database, database_url) -> None:
    url, meters = world
    org_id, customer = _billed_org(database, database_url, url)
    now = dt.datetime.now(UTC)
    start = (now - dt.timedelta(days=10)).replace(second=37, microsecond=0)  # not minute-aligned, like Stripe's
    end = _subscribe(database_url, org_id, start)

    closed = _record_at(database, org_id, [start - dt.timedelta(minutes=1)])  # the previous period is invoiced
    stored = _record_at(database, org_id, [now, start + dt.timedelta(seconds=5)])
    aggregation.aggregate_all(database=database, org_id=org_id)
    reporting.report_org(database=database, meters=meters, org_id=org_id)
    with UnitOfWork(database, org_id=org_id) as uow:
        totals = summary.get(uow=uow, org_id=org_id).totals
    first, last = periods.report_window(start, end)

    assert closed.rejected == [(0, ingest.Reject.PERIOD_CLOSED)]
    assert stored.accepted == 2
    assert [(t.period_start, t.period_end, t.quantity, t.reported_quantity) for t in totals] == [(start, end, 2, 2)]
    assert meters.summary(event_name="api_requests", stripe_customer_id=customer, start=first, end=last) == 2


def test_the_previous_subscription_period_stays_open_for_an_hour(world, database, database_url) -> None:
    url, _ = world
    org_id, _ = _billed_org(database, database_url, url)
    now = dt.datetime.now(UTC)
    start = now - dt.timedelta(minutes=30)
    _subscribe(database_url, org_id, start)

    result = _record_at(database, org_id, [start - dt.timedelta(days=2), now])
    aggregation.aggregate_all(database=database, org_id=org_id)
    with UnitOfWork(database, org_id=org_id) as uow:
        totals = summary.get(uow=uow, org_id=org_id, start=start - dt.timedelta(days=40)).totals

    assert result.accepted == 2
    assert [(t.period_start, t.period_end, t.quantity) for t in totals] == [
        (periods.add_months(start, -1), start, 1), (start, periods.add_months(start, 1), 1)
    ]


def test_a_report_stripe_refuses_for_good_is_audited_and_not_retried_every_run(world, database, database_url, superuser) -> None:
    url, meters = world
    org_id, customer = _billed_org(database, database_url, url)
    _record(database, org_id, 5, "api_requests", 1)
    _stripe(url).v1.customers.delete(customer)  # the sandbox refuses events for an unknown customer

    first = reporting.report_org(database=database, meters=meters, org_id=org_id)
    again = reporting.report_org(database=database, meters=meters, org_id=org_id)
    later = reporting.report_org(database=database, meters=meters, org_id=org_id,
                                 now=dt.datetime.now(UTC) + reporting.FAILED_PAUSE + dt.timedelta(minutes=1))

    assert (first, again, later, meters.calls) == (0, 0, 0, 2)  # one call, none while paused, one after
    states = [s for (s,) in superuser.execute(
        "SELECT state FROM usage_reports WHERE org_id = %s ORDER BY created_at", (org_id,)).fetchall()]
    assert states == ["failed", "failed"]
    actions = [a for (a,) in superuser.execute("SELECT action FROM audit_events WHERE org_id = %s", (org_id,)).fetchall()]
    assert actions.count("usage.report_failed") == 2
    assert _internal(database, org_id) == {"api_requests": (5, 0)}


def test_a_duplicate_identifier_is_recognised_by_stripes_error_code_whatever_the_wording(
    world, database, database_url, superuser, monkeypatch
) -> None:
    """Stripe already holds an event with the report's identifier (sent under another
    idempotency key, so Stripe answers 400, not the stored answer): the report is sent, not
    failed. Recognised by the error code `duplicate_meter_event`: Stripe's message wording
    is not a contract (the v2 API words the same refusal differently)."""
    from nobill.sandbox import meters as sandbox_meters

    url, meters = world
    org_id, customer = _billed_org(database, database_url, url)
    _record(database, org_id, 4, "api_requests", 5)
    with UnitOfWork(database, org_id=org_id) as uow:
        reporting.plan_reports(uow=uow, org_id=org_id, now=dt.datetime.now(UTC))
        uow.commit()
    identifier, quantity = superuser.execute(
        "SELECT identifier, quantity FROM usage_reports WHERE org_id = %s AND state = 'pending'", (org_id,)
    ).fetchone()
    _stripe(url).v1.billing.meter_events.create(
        {"event_name": "api_requests", "identifier": identifier, "payload": {"stripe_customer_id": customer, "value": str(quantity)}}
    )
    monkeypatch.setattr(
        sandbox_meters, "DUPLICATE_IDENTIFIER_MESSAGE", "A meter event with a duplicate identifier has already been submitted."
    )

    confirmed = reporting.report_org(database=database, meters=meters, org_id=org_id)

    assert confirmed == 1
    states = superuser.execute("SELECT state FROM usage_reports WHERE org_id = %s", (org_id,)).fetchall()
    assert states == [("sent",)]
    _assert_in_stripe(database, meters, org_id, customer)

"""One Stripe customer per org, created asynchronously and never twice (concurrent runs,
a crash between Stripe's answer and the commit); the outbox sweep recovers a row whose
hand-over to the worker was lost."""

from __future__ import annotations

import datetime as dt
import threading
import time

from sqlalchemy import select

from billing_helpers import BillingWorld, audit_events, wait_for
from nobill.audit import service as audit
from nobill.billing import accounts, actors_context, customers, outbox, subscriptions
from nobill.billing.tables import billing_due_work, stripe_outbox
from nobill.db.unit_of_work import UnitOfWork
from nobill.stripe.gateway import StripeGateway
from nobill.v1 import tenancy_pb2
from support import new_user


def _customers_of(billing: BillingWorld, org_id: str) -> list[str]:
    customers = billing.stripe.v1.customers.list({"limit": 100}).auto_paging_iter()
    return [c.id for c in customers if c.metadata and c.metadata.to_dict().get("org_id") == org_id]


def test_creating_an_org_creates_its_stripe_customer_once(billing: BillingWorld) -> None:
    owner, org_id = billing.new_org("Acme Rockets")
    customer_id = billing.customer_id(org_id)
    customer = billing.stripe.v1.customers.retrieve(customer_id)
    assert customer.metadata["org_id"] == org_id and customer.name == "Acme Rockets"
    assert _customers_of(billing, org_id) == [customer_id]
    created = [e for e in audit_events(owner, org_id) if e.action == "billing.customer_created"]
    assert len(created) == 1 and created[0].target_id == customer_id


def _org_without_enqueue(billing: BillingWorld) -> tuple[str, str]:
    """An org created through the tenancy service whose customer row was never handed to
    the worker (as if the process died right after COMMIT); returns (org id, row id)."""
    from nobill import ids
    from nobill.audit.actors import Actor, ActorType, AuditContext
    from nobill.tenancy import service as tenancy

    owner = new_user(billing.channel)
    owner.tenancy.ListOrganizations(tenancy_pb2.ListOrganizationsRequest())  # provisions the user
    with UnitOfWork(billing.database) as uow:
        user_id = tenancy.provision_user(uow=uow, subject=owner.subject, email=owner.email)
        uow.commit()
    with UnitOfWork(billing.database, org_id=ids.new_id("org")) as uow:
        context = AuditContext(Actor(ActorType.USER, user_id, owner.email or ""), "test")
        org = tenancy.create(uow=uow, context=context, owner_user_id=user_id, name="Crashy")
        uow._after_commit.clear()
        uow.commit()
    with UnitOfWork(billing.database, org_id=org.org_id) as uow:
        row_id = uow.execute(select(stripe_outbox.c.outbox_id).where(stripe_outbox.c.kind == "create_customer")).scalar_one()
    return org.org_id, row_id


def test_concurrent_runs_and_a_crash_after_stripe_answered_still_make_one_customer(billing: BillingWorld) -> None:
    org_id, row_id = _org_without_enqueue(billing)
    gateway = StripeGateway.from_settings(billing.settings)
    # A run that crashed after Stripe created the customer, before NOBill committed:
    with UnitOfWork(billing.database, org_id=org_id) as uow:
        row = outbox.lock_pending(uow=uow, outbox_id=row_id)
        assert row is not None
        customers.create_customer(uow=uow, gateway=gateway, row=row)
        crashed = accounts.stripe_customer_id(uow=uow, org_id=org_id)
        # no commit: the transaction rolls back
    with UnitOfWork(billing.database, org_id=org_id) as uow:
        assert accounts.stripe_customer_id(uow=uow, org_id=org_id) is None
    outcomes: list[str] = []
    threads = [
        threading.Thread(
            target=lambda: outcomes.append(outbox.run(database=billing.database, gateway=gateway, org_id=org_id, outbox_id=row_id))
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["done", "skipped", "skipped", "skipped"]
    customer_id = billing.customer_id(org_id)
    assert customer_id == crashed, "Stripe replayed the first answer for the row's idempotency key"
    assert _customers_of(billing, org_id) == [customer_id]


def test_the_sweep_hands_over_a_row_whose_enqueue_was_lost(billing: BillingWorld) -> None:
    owner, org_id = billing.new_org()
    billing.customer_id(org_id)
    context = actors_context.system("test", "lost-enqueue")
    with UnitOfWork(billing.database, org_id=org_id) as uow:
        row_id = outbox.add(uow=uow, org_id=org_id, kind="sync_seats", payload={}, context=context)
        uow._after_commit.clear()  # the process died between COMMIT and the enqueue
        uow.commit()

    def state() -> str:
        with UnitOfWork(billing.database, org_id=org_id) as uow:
            return uow.execute(select(stripe_outbox.c.state).where(stripe_outbox.c.outbox_id == row_id)).scalar_one()

    time.sleep(1)
    assert state() == "pending", "nothing ran it: its message was never sent"
    # Too fresh for the sweep (the after-commit hand-over gets its grace period)...
    assert outbox.sweep(database=billing.database) == 0 or state() == "pending"
    # ...but once due, the sweep sends it and the worker runs it.
    sent = outbox.sweep(database=billing.database, now=dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=2))
    assert sent >= 1
    wait_for(lambda: state() == "done", timeout=20, what="the swept row to run")
    outbox.sweep(database=billing.database, now=dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=3))
    with UnitOfWork(billing.database) as uow:
        marks = uow.execute(
            select(billing_due_work.c.kind).where(billing_due_work.c.org_id == org_id, billing_due_work.c.kind == "outbox")
        ).all()
    assert marks == [], "an org with no pending rows leaves the due-work index"


def test_a_permanent_stripe_failure_is_logged_audited_and_shown_by_get_subscription(billing: BillingWorld) -> None:
    org_id, row_id = _org_without_enqueue(billing)
    gateway = StripeGateway.from_settings(billing.settings)
    # The row's idempotency key already used with other parameters: Stripe refuses for good.
    gateway.create_customer(org_id=org_id, name="someone else", test_clock=None, idempotency_key=f"nobill-customer-{org_id}")
    assert outbox.run(database=billing.database, gateway=gateway, org_id=org_id, outbox_id=row_id) == "failed"
    with UnitOfWork(billing.database, org_id=org_id) as uow:
        row = uow.execute(select(stripe_outbox.c.state, stripe_outbox.c.last_error).where(stripe_outbox.c.outbox_id == row_id)).one()
        subscription = subscriptions.get(uow=uow, org_id=org_id)
        failures = [e for e in audit.list_(uow=uow, page_size=100, page_token="", actions=["billing.stripe_call_failed"],
                                           start_time=None, end_time=None, oldest_first=True)[0]]
    assert row.state == "failed" and row.last_error
    assert subscription.sync_error and "create_customer" in subscription.sync_error
    assert len(failures) == 1 and failures[0].target_id == row_id
    # Running it again changes nothing.
    assert outbox.run(database=billing.database, gateway=gateway, org_id=org_id, outbox_id=row_id) == "skipped"

    # The operator queues it again (here the cause persists, so it fails again, visibly).
    with UnitOfWork(billing.database, org_id=org_id) as uow:
        assert outbox.retry_failed(uow=uow, org_id=org_id, context=actors_context.system("test", "retry")) == [row_id]
        uow.commit()

    def attempts() -> int:
        with UnitOfWork(billing.database, org_id=org_id) as uow:
            row = uow.execute(select(stripe_outbox.c.state, stripe_outbox.c.attempts).where(stripe_outbox.c.outbox_id == row_id)).one()
        return row.attempts if row.state == "failed" else 0

    wait_for(lambda: attempts() == 2, timeout=20, what="the retried row to run")

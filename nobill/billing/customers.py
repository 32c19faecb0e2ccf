"""Exactly one Stripe Customer per org: created by the outbox row that CreateOrganization
commits (idempotency key derived from the org id), or by checkout calling Stripe with that
same row's keys when the customer is needed before the worker got to it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select, true

from nobill.audit import service as audit
from nobill.billing import inbox_routes, outbox, subscriptions
from nobill.billing.tables import stripe_customers, stripe_outbox
from nobill.db.database import Database
from nobill.db.unit_of_work import UnitOfWork, transaction
from nobill.errors import FailedPrecondition
from nobill.stripe.gateway import StripeGateway, StripeObject

# Test seam (tests/billing/test_checkout_concurrency.py): called with the org id right
# after checkout found the org's customer missing, so a test can make the worker's customer
# creation commit at exactly that moment. Always None outside tests.
after_customer_found_missing: Callable[[str], None] | None = None

_NOT_CREATED = "the organization's Stripe customer could not be created; see GetSubscription's sync_error"


@dataclass(frozen=True)
class Customer:
    """The org's Stripe customer as one read saw it: its id, or else the pending outbox row
    that creates it."""

    stripe_customer_id: str | None
    pending: outbox.OutboxRow | None


def _create_on_stripe(gateway: StripeGateway, row: outbox.OutboxRow) -> tuple[StripeObject, str | None]:
    """The customer (and, with NOBILL_STRIPE_TEST_CLOCKS, its test clock) for `row`, with the
    row's idempotency keys and parameters derived from the row alone: every caller, the worker
    or checkout, at any attempt, gets the same objects."""
    test_clock = None
    if gateway.test_clocks:
        # The clock starts when the row was queued: a retry gets the clock the first attempt created.
        clock = gateway.create_test_clock(
            frozen_time=int(row.created_at.timestamp()), name=f"nobill {row.org_id}",
            idempotency_key=f"{row.idempotency_key}-clock",
        )
        test_clock = clock["id"]
    customer = gateway.create_customer(
        org_id=row.org_id, name=str(row.payload.get("name") or row.org_id), test_clock=test_clock,
        idempotency_key=row.idempotency_key,
    )
    return customer, test_clock


def _record(*, uow: UnitOfWork, row: outbox.OutboxRow, customer: StripeObject, test_clock: str | None) -> None:
    subscriptions.record_customer(uow=uow, org_id=row.org_id, stripe_customer_id=customer["id"], test_clock_id=test_clock)
    # Webhooks about this customer that arrived before its route: now they have an org.
    routed = inbox_routes.move_to_org(uow=uow, org_id=row.org_id, stripe_customer_id=customer["id"])
    if routed:
        from nobill.billing.inbox import APPLY_ACTOR
        from nobill.jobs.send import send

        uow.after_commit(lambda: send(APPLY_ACTOR, routed))
    audit.record(
        uow=uow,
        context=row.requested_by,
        action="billing.customer_created",
        target_type="stripe_customer",
        target_id=customer["id"],
        after={"stripe_customer_id": customer["id"], "test_clock": test_clock},
    )


def create_customer(*, uow: UnitOfWork, gateway: StripeGateway, row: outbox.OutboxRow) -> None:
    """Create the org's customer (and, with NOBILL_STRIPE_TEST_CLOCKS, its test clock)."""
    existing = uow.execute(
        select(stripe_customers.c.stripe_customer_id).where(stripe_customers.c.org_id == row.org_id)
    ).scalar_one_or_none()
    if existing:
        return
    customer, test_clock = _create_on_stripe(gateway, row)
    _record(uow=uow, row=row, customer=customer, test_clock=test_clock)


def find(*, uow: UnitOfWork, org_id: str) -> Customer:
    """The org's customer id, or the pending row that creates it. One statement, so one
    snapshot: the worker commits the customer and its row's `done` together, and a read
    sees both or neither (two reads could see neither, the row done but not the customer)."""
    pending = (
        select(stripe_outbox)
        .where(stripe_outbox.c.kind == "create_customer", stripe_outbox.c.state == "pending")
        .order_by(stripe_outbox.c.created_at)
        .limit(1)
        .lateral("pending")
    )
    record = uow.execute(
        select(stripe_customers.c.stripe_customer_id.label("customer_id"), pending)
        .select_from(stripe_customers.outerjoin(pending, true()))
        .where(stripe_customers.c.org_id == org_id)
    ).one_or_none()
    if record is None or record.customer_id:
        return Customer(record.customer_id if record else None, None)
    if record.outbox_id is None:
        raise FailedPrecondition(_NOT_CREATED)
    return Customer(None, outbox.row_of(record))


def ensure(*, database: Database, gateway: StripeGateway, customer: Customer) -> str:
    """The customer's id; when `find` saw it missing, create it now on Stripe with its
    pending row's keys (the same customer the worker makes) and record it in a short unit
    of work of its own. Called outside any transaction; raises StripeTransient /
    StripePermanent from Stripe (a refusal is left to the worker's row to record)."""
    if customer.stripe_customer_id:
        return customer.stripe_customer_id
    row = customer.pending
    assert row is not None
    if after_customer_found_missing is not None:
        after_customer_found_missing(row.org_id)
    created, test_clock = _create_on_stripe(gateway, row)
    with transaction(database, org_id=row.org_id) as uow:
        # Unless the worker is running the row right now (it then records this same
        # customer) or has done it, record the customer and finish the row here.
        locked = outbox.lock_pending(uow=uow, outbox_id=row.outbox_id)
        if locked is not None:
            _record(uow=uow, row=locked, customer=created, test_clock=test_clock)
            outbox.complete(uow=uow, row=locked)
    return created["id"]

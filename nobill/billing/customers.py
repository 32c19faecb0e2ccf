"""Exactly one Stripe Customer per org: created by the outbox row that CreateOrganization
commits (idempotency key derived from the org id), or by checkout running that same row
when the customer is needed before the worker got to it."""

from __future__ import annotations

from sqlalchemy import select

from nobill.audit import service as audit
from nobill.billing import inbox_routes, outbox, subscriptions
from nobill.billing.tables import stripe_customers, stripe_outbox
from nobill.db.unit_of_work import UnitOfWork
from nobill.errors import FailedPrecondition, Unavailable
from nobill.stripe.errors import StripeTransient
from nobill.stripe.gateway import StripeGateway


@outbox.handler("create_customer")
def create_customer(*, uow: UnitOfWork, gateway: StripeGateway, row: outbox.OutboxRow) -> None:
    """Create the org's customer (and, with NOBILL_STRIPE_TEST_CLOCKS, its test clock)."""
    existing = uow.execute(
        select(stripe_customers.c.stripe_customer_id).where(stripe_customers.c.org_id == row.org_id)
    ).scalar_one_or_none()
    if existing:
        return
    test_clock = None
    if gateway.test_clocks:
        # The same key and the same parameters on every attempt (the clock starts when the
        # row was queued): a retry after a crash gets the clock the first attempt created.
        clock = gateway.create_test_clock(
            frozen_time=int(row.created_at.timestamp()), name=f"nobill {row.org_id}",
            idempotency_key=f"{row.idempotency_key}-clock",
        )
        test_clock = clock["id"]
    customer = gateway.create_customer(
        org_id=row.org_id, name=str(row.payload.get("name") or row.org_id), test_clock=test_clock,
        idempotency_key=row.idempotency_key,
    )
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


def ensure_customer(*, uow: UnitOfWork, gateway: StripeGateway, org_id: str) -> str:
    """The org's Stripe customer id, creating it now (through its outbox row) if the worker
    has not yet. UNAVAILABLE while Stripe is down or another process is creating it."""
    existing = uow.execute(
        select(stripe_customers.c.stripe_customer_id).where(stripe_customers.c.org_id == org_id)
    ).scalar_one_or_none()
    if existing:
        return existing
    outbox_id = uow.execute(
        select(stripe_outbox.c.outbox_id)
        .where(stripe_outbox.c.kind == "create_customer", stripe_outbox.c.state == "pending")
        .order_by(stripe_outbox.c.created_at)
        .limit(1)
    ).scalar_one_or_none()
    if outbox_id is None:
        raise FailedPrecondition("the organization's Stripe customer could not be created; see GetSubscription's sync_error")
    # Wait for a worker that is creating it right now (its Stripe call is short), then
    # find its result, or run the row here with the same idempotency key.
    row = outbox.lock_pending(uow=uow, outbox_id=outbox_id, wait=True)
    if row is not None:
        try:
            outcome = outbox.perform(uow=uow, gateway=gateway, row=row)
        except StripeTransient as error:
            raise Unavailable(
                f"Stripe is unavailable ({error.message}); retry in {_retry_after(gateway)} s",
                retry_after=_retry_after(gateway),
            ) from error
        if outcome != "done":
            raise FailedPrecondition(
                "the organization's Stripe customer could not be created; see GetSubscription's sync_error"
            )
    customer_id = uow.execute(
        select(stripe_customers.c.stripe_customer_id).where(stripe_customers.c.org_id == org_id)
    ).scalar_one_or_none()
    if not customer_id:
        raise FailedPrecondition("the organization's Stripe customer could not be created; see GetSubscription's sync_error")
    return customer_id


def _retry_after(gateway: StripeGateway) -> int:
    return max(1, round(gateway.breaker.retry_after()) or 5)


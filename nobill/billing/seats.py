"""Pro seats: the subscription's seat quantity equals the org's member count. Membership
changes queue one coalesced sync per org (Stripe allows about 200 quantity updates per
hour per subscription); reconciliation finds and corrects drift (seats, and every other
difference from the plan: nobill/billing/drift.py)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from sqlalchemy import update

from nobill.audit import service as audit
from nobill.billing import accounts, actors_context, outbox, subscriptions
from nobill.billing.plans import PlanCode
from nobill.billing.tables import subscriptions as subscriptions_table
from nobill.db.database import Database
from nobill.db.unit_of_work import UnitOfWork
from nobill.stripe.errors import StripeFailure
from nobill.stripe.gateway import StripeGateway
from nobill.tenancy import members as tenancy_members

log = logging.getLogger("nobill.billing.seats")


@dataclass(frozen=True)
class SeatIntent:
    """What a seat sync run decided in its first unit of work: set the subscription's seat
    quantity to `members`, as the row stood at `version`."""

    subscription_id: str
    members: int
    version: int


@dataclass(frozen=True)
class SeatUpdate:
    """Stripe's seat quantity before the run and after it (the same when nothing was sent)."""

    before: int | None
    after: int | None


def _decide(*, uow: UnitOfWork, row: outbox.OutboxRow) -> SeatIntent | None:
    """The seat quantity to send, read under the row's lock: a membership change that has not
    committed yet folds its request into this row only after this unit of work commits, so
    the version read here and the member count belong together."""
    current = subscriptions.get(uow=uow, org_id=row.org_id)
    if current.plan is not PlanCode.PRO or not current.has_live_stripe_subscription or not current.stripe_subscription_id:
        return None
    return SeatIntent(current.stripe_subscription_id, tenancy_members.count(uow=uow), outbox.version_of(row))


def _update_stripe(*, gateway: StripeGateway, row: outbox.OutboxRow, plan: SeatIntent | None) -> SeatUpdate | None:
    """Set the seat item's quantity unless Stripe already has it; runs with no transaction open."""
    if plan is None:
        return None
    snapshot = gateway.retrieve_subscription(plan.subscription_id)
    item_id = subscriptions.seat_item_id(snapshot)
    quantity = subscriptions.seat_quantity(snapshot)
    if item_id is None or quantity == plan.members:
        return SeatUpdate(quantity, quantity)
    gateway.update_subscription_item(
        item_id,
        params={"quantity": plan.members, "proration_behavior": "create_prorations"},
        # NOTE: the same intent (this row, at this version, for this count) always sends the
        # same key with the same parameters, so a retry after a crash or a timeout is not a
        # second change; a membership change meanwhile raises the version: a new key.
        idempotency_key=f"{row.idempotency_key}-v{plan.version}-{plan.members}",
    )
    return SeatUpdate(quantity, plan.members)


def _record(
    *, uow: UnitOfWork, row: outbox.OutboxRow, plan: SeatIntent | None, result: SeatUpdate | None
) -> float | None:
    """Record the update, then check again: when members changed while Stripe answered (the
    row's version moved, or the count differs from what was sent), run again."""
    if plan is None or result is None:
        return None
    if result.after != result.before:
        uow.execute(update(subscriptions_table).where(subscriptions_table.c.org_id == row.org_id).values(seats=result.after))
        audit.record(
            uow=uow,
            context=row.requested_by,
            action="subscription.seats_synced",
            target_type="subscription",
            target_id=row.org_id,
            before={"seats": result.before},
            after={"seats": result.after},
        )
    if outbox.version_of(row) == plan.version and tenancy_members.count(uow=uow) == plan.members:
        return None
    from nobill.jobs import runtime

    # Coalesced like any membership change: Stripe allows about 200 quantity updates per
    # hour per subscription.
    return float(runtime.settings().seat_sync_delay_seconds)


# Set the seat item's quantity to the member count as it is when the row runs (not when it
# was queued: later changes ride along), holding nothing while Stripe answers.
SYNC_SEATS = outbox.StagedHandler(prepare=_decide, call=_update_stripe, record=_record)


@dataclass(frozen=True)
class Drift:
    org_id: str
    stripe_seats: int | None  # the Pro seat item's quantity on Stripe (None: no seat item)
    members: int
    items: tuple[subscriptions.ItemDrift, ...] = ()  # every difference from the plan (drift.py)

    @property
    def message(self) -> str:
        """One line for `nobill stripe reconcile-seats`."""
        parts = [item.message for item in self.items]
        if self.stripe_seats is not None and self.stripe_seats != self.members and not any(
            item.kind == "seat_quantity" for item in self.items
        ):  # NOTE: NOBill's own seat sync was queued (or brought forward) for this difference
            parts.append(f"Stripe has {self.stripe_seats} seat(s), {self.members} member(s); sync queued")
        return "; ".join(parts)


def reconcile(*, database: Database, gateway: StripeGateway) -> list[Drift]:
    """Compare every live subscription on Stripe with its plan (Pro seats with the member
    count, base quantities, unknown or missing prices); queue the corrections, record and
    audit the drift, and report it (log line and audit event per org). Each org is read in
    one short unit of work and recorded in another: none is open while Stripe answers."""
    from nobill.billing import drift

    run_id = f"reconcile-{uuid.uuid4().hex[:12]}"
    context = actors_context.system("seat-reconciliation", run_id)
    drifts: list[Drift] = []
    after = ""
    while True:
        with UnitOfWork(database) as uow:
            page = accounts.orgs_with_customers(uow=uow, after=after)
        if not page:
            break
        for org_id, _customer in page:
            with UnitOfWork(database, org_id=org_id) as uow:
                current = subscriptions.get(uow=uow, org_id=org_id)
            if not current.has_live_stripe_subscription:
                continue
            assert current.stripe_subscription_id
            try:
                snapshot = gateway.retrieve_subscription(current.stripe_subscription_id)
            except StripeFailure as error:
                log.warning("seat reconciliation skipped an org", extra={"org_id": org_id, "error": error.message})
                continue
            with UnitOfWork(database, org_id=org_id) as uow:
                again = subscriptions.get(uow=uow, org_id=org_id, for_update=True)
                if again.stripe_subscription_id != snapshot["id"] or not again.has_live_stripe_subscription:
                    continue  # changed while Stripe answered: the webhook's apply covers it
                members = tenancy_members.count(uow=uow)
                quantity = subscriptions.seat_quantity(snapshot)
                drift.record(
                    uow=uow, org_id=org_id, snapshot=snapshot, plan=again.plan, live=True, previous=again.drift,
                    context=context,
                )
                items = subscriptions.get(uow=uow, org_id=org_id).drift
                seat_drift = again.plan is PlanCode.PRO and quantity is not None and quantity != members
                if not seat_drift and not items:
                    uow.commit()
                    continue
                drifts.append(Drift(org_id, quantity, members, items))
                if seat_drift:
                    audit.record(
                        uow=uow, context=context, action="subscription.seat_drift_found", target_type="subscription",
                        target_id=org_id, before={"seats": quantity}, after={"members": members},
                    )
                    outbox.add_coalesced(
                        uow=uow, org_id=org_id, kind="sync_seats", payload={}, context=context, delay_seconds=0
                    )
                uow.commit()
        after = page[-1][0]
    log.info("seat reconciliation finished", extra={"drifts": len(drifts), "orgs": [d.org_id for d in drifts], "run_id": run_id})
    return drifts

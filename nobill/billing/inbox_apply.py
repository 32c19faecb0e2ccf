"""Applying stored Stripe events, convergently and per org.

The apply actor gets a list of event ids (one stored batch, or a sweep's or a replay's).
The intake routed them (stripe_event_ids says to which org); events still unrouted are
routed now if their customer's route has appeared since (moved into the org's inbox,
nobill/billing/inbox_routes.py). Then for each org, in one unit of work bound to it:

1. takes the org's subscription row lock, *then* notes the database's clock (`read_from`);
2. locks every pending event of the org's customer stored up to `read_from` (not only the
   message's: whatever is pending is covered by the reads below). If none of them is the
   message's own, an earlier message covered its events: the rest have messages of their
   own, due later, and nothing is re-read now;
3. re-reads each distinct Stripe object those events name once (an invoice, then the
   subscription it bills; a subscription), however many events name it, and applies it;
4. marks those events applied, and commits.

The last unit of work to apply an org read Stripe last, so no older snapshot overwrites a
newer one; each event is marked applied only by a read made after it was stored. Because a
unit of work takes every pending event of its org, a message whose events an earlier one
already covered costs a query or two. The apply message waits a moment before it runs (see
NOBILL_STRIPE_EVENT_APPLY_DELAY_MS): by then the org's next events are stored too, so a
burst of them costs about one Stripe read per object per delay, not one per event.

An event whose Stripe customer no org owns (yet) is retried with the message, then parked;
an event whose object Stripe refuses to return is parked. Neither holds back the rest.

The event only says *that* something changed; the object re-read from Stripe says whose it
is (ARCHITECTURE §14). An event routed to an org by the customer it names, whose re-read
object belongs to another customer, is refused for good (state `refused`, reason
OBJECT_CUSTOMER_MISMATCH): nothing is applied, it is counted and logged, and the org's audit
log records the refusal."""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update

from nobill import metrics
from nobill.audit import service as audit
from nobill.billing import accounts, actors_context, inbox_routes, invoices, service, subscriptions
from nobill.billing.inbox_events import Target, owner_of
from nobill.billing.tables import stripe_events
from nobill.db.database import Database
from nobill.db.unit_of_work import UnitOfWork
from nobill.stripe.errors import StripePermanent
from nobill.stripe.gateway import StripeGateway
from nobill.tenancy import members as tenancy_members

log = logging.getLogger("nobill.billing.inbox")


# Why an event was refused for good (a stable code: metrics label, inbox reason, audit).
OBJECT_CUSTOMER_MISMATCH = "object_customer_mismatch"
PARKED = "parked"
REFUSED = "refused"


class UnknownCustomer(Exception):
    """No org owns the event's customer (yet): retried, then parked."""


def apply_events(
    *, database: Database, gateway: StripeGateway, event_ids: Sequence[str], max_attempts: int, seat_sync_delay: float
) -> Counter[str]:
    """Apply the pending events among `event_ids`, each org in its own unit of work (with
    every other pending event of that org). Returns how many events ended applied, parked
    or refused. Raises (after every other org is done) UnknownCustomer or the first org's
    failure (e.g. StripeTransient), so the message is retried; what was applied stays."""
    with UnitOfWork(database) as uow:
        # Only what is still pending: a message an earlier one covered costs these queries.
        routed = inbox_routes.pending_routed(uow=uow, event_ids=event_ids)
        unrouted = inbox_routes.pending(uow=uow, event_ids=[event_id for event_id in event_ids if event_id not in routed])
        routes = accounts.orgs_for_customers(uow=uow, stripe_customer_ids=[customer for _, customer in unrouted if customer])
    own: dict[str, set[str]] = {}
    for event_id, org_id in routed.items():
        own.setdefault(org_id, set()).add(event_id)
    # Their customer's route appeared after they were stored: into the org's inbox first.
    for customer, org_id in sorted(routes.items()):
        with UnitOfWork(database, org_id=org_id) as uow:
            own.setdefault(org_id, set()).update(
                inbox_routes.move_to_org(uow=uow, org_id=org_id, stripe_customer_id=customer)
            )
            uow.commit()
    outcome: Counter[str] = Counter()
    failure: Exception | None = None
    for org_id in sorted(own):
        try:
            outcome.update(_apply_org(database, gateway, org_id, own[org_id], seat_sync_delay))
        except Exception as error:  # noqa: BLE001 - one org's failure must not hold back the others
            log.warning("applying an org's stripe events failed; the message is retried",
                        extra={"org_id": org_id, "error": str(error) or type(error).__name__})
            failure = failure or error
    unknown = [event_id for event_id, customer in unrouted if customer not in routes]
    waiting = _count_unknown(database, unknown, max_attempts, outcome) if unknown else 0
    if failure is not None:
        raise failure
    if waiting:
        raise UnknownCustomer(f"no organization owns the Stripe customer of {waiting} event(s) (yet)")
    return outcome


@dataclass
class _Named:
    """The pending events that name one Stripe object, in the order they were stored."""

    positions: list[int] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)

    def add(self, position: int, event_id: str) -> None:
        self.positions.append(position)
        self.event_ids.append(event_id)

    @property
    def latest(self) -> str:
        """The last stored of them: the change is audited as reported by it."""
        return self.event_ids[self.positions.index(max(self.positions))]


def _apply_org(database: Database, gateway: StripeGateway, org_id: str, own: set[str], seat_sync_delay: float) -> Counter[str]:
    with UnitOfWork(database, org_id=org_id) as uow:
        # The org's lock first, then the clock: whoever applies this org next reads Stripe
        # after us, so no older snapshot can overwrite a newer one.
        subscriptions.get(uow=uow, org_id=org_id, for_update=True)
        # Whose objects this org may take: its own customer's, whatever an event claimed.
        customer = accounts.stripe_customer_id(uow=uow, org_id=org_id) or ""
        read_from = uow.execute(select(func.clock_timestamp())).scalar_one()
        # Rows another unit of work holds are its to apply (SKIP LOCKED).
        pending = uow.execute(
            select(stripe_events.c.event_id, stripe_events.c.event_type, stripe_events.c.target_kind,
                   stripe_events.c.target_id)
            .where(
                stripe_events.c.org_id == org_id,
                stripe_events.c.state == "pending",
                stripe_events.c.received_at <= read_from,
            )
            .order_by(stripe_events.c.received_at)
            .with_for_update(skip_locked=True)
        ).all()
        if own.isdisjoint(row.event_id for row in pending):
            # This message's events are applied (or held) by now: the rest of what is
            # pending has messages of its own, due later, so nothing is re-read for it
            # yet. Without this, every message would re-read every org with anything
            # pending, and a burst would cost a read per message instead of per delay.
            return Counter()
        named: dict[Target, _Named] = {}
        for position, row in enumerate(pending):
            if row.target_kind is not None:  # only handled types are stored pending
                named.setdefault(Target(row.target_kind, row.target_id), _Named()).add(position, row.event_id)
        unapplied = _reread_and_apply(uow, gateway, org_id, customer, named, seat_sync_delay)
        now = dt.datetime.now(dt.timezone.utc)
        types = {row.event_id: row.event_type for row in pending}
        applied = [row.event_id for row in pending if row.event_id not in unapplied]
        if applied:
            uow.execute(
                update(stripe_events)
                .where(stripe_events.c.org_id == org_id, stripe_events.c.event_id.in_(applied))
                .values(state="applied", org_id=org_id, applied_at=now, last_error=None, attempts=stripe_events.c.attempts + 1)
            )
        for event_id, (state, reason) in unapplied.items():
            uow.execute(
                update(stripe_events)
                .where(stripe_events.c.org_id == org_id, stripe_events.c.event_id == event_id)
                .values(state=state, org_id=org_id, last_error=reason, attempts=stripe_events.c.attempts + 1)
            )
            if state == REFUSED:
                audit.record(
                    uow=uow,
                    context=actors_context.stripe_event(event_id),
                    action="billing.webhook_refused",
                    target_type="stripe_event",
                    target_id=event_id,
                    # Not the foreign object's id: it is another org's business (the log has it).
                    after={"event_type": types[event_id], "reason": reason},
                )
        uow.commit()
    counts: Counter[tuple[str, str]] = Counter()
    for event_id, (state, reason) in unapplied.items():
        counts[(types[event_id], state)] += 1
        if state == REFUSED:
            metrics.webhook_refused(types[event_id], reason)
            log.error("stripe event refused: its object belongs to another customer",
                      extra={"event_id": event_id, "event_type": types[event_id], "org_id": org_id, "reason": reason})
        else:
            log.error("stripe event parked: Stripe refused the re-read",
                      extra={"event_id": event_id, "event_type": types[event_id], "error": reason})
    counts.update((types[event_id], "applied") for event_id in applied)
    for (event_type, result), count in counts.items():
        metrics.webhook_event(event_type, result, count)
    return Counter({"applied": len(applied), **Counter(state for state, _ in unapplied.values())})


def _reread_and_apply(
    uow: UnitOfWork, gateway: StripeGateway, org_id: str, customer: str, named: dict[Target, _Named], seat_sync_delay: float
) -> dict[str, tuple[str, str]]:
    """Re-read each named object once and apply it if it belongs to the org's `customer`;
    returns the events not applied (event id -> (state, why)): parked when Stripe refused
    to return their object (deleted, say: nothing to converge to), refused for good when
    the object is another customer's (whatever the event claimed)."""
    unapplied: dict[str, tuple[str, str]] = {}

    def refuse(target: Target, found: dict[str, Any]) -> None:
        log.warning("stripe object belongs to another customer than the event claimed",
                    extra={"org_id": org_id, "object": f"{target.kind} {target.object_id}",
                           "claimed_customer": customer, "object_customer": owner_of(found)})
        unapplied.update(dict.fromkeys(named[target].event_ids, (REFUSED, OBJECT_CUSTOMER_MISMATCH)))

    for target in [target for target in named if target.kind == "invoice"]:
        try:
            invoice = gateway.retrieve_invoice(target.object_id)
        except StripePermanent as error:
            unapplied.update(dict.fromkeys(named[target].event_ids, (PARKED, error.message)))
            continue
        if owner_of(invoice) != customer:
            refuse(target, invoice)
            continue
        invoices.apply_invoice_snapshot(uow=uow, org_id=org_id, invoice=invoice)
        subscription_id = invoices.subscription_of(invoice)
        if subscription_id:
            # Its subscription is re-read with the others (once, if events name it too).
            into = named.setdefault(Target("subscription", subscription_id), _Named())
            for position, event_id in zip(named[target].positions, named[target].event_ids):
                into.add(position, event_id)
    member_count: int | None = None
    for target in [target for target in named if target.kind == "subscription"]:
        try:
            snapshot = gateway.retrieve_subscription(target.object_id)
        except StripePermanent as error:
            unapplied.update(dict.fromkeys(named[target].event_ids, (PARKED, error.message)))
            continue
        if owner_of(snapshot) != customer:
            refuse(target, snapshot)
            continue
        context = actors_context.stripe_event(named[target].latest)
        subscriptions.apply_subscription_snapshot(uow=uow, org_id=org_id, snapshot=snapshot, context=context)
        # Members added between checkout and now: one coalesced seat sync.
        seats = subscriptions.seat_quantity(snapshot)
        if seats is not None:
            member_count = tenancy_members.count(uow=uow) if member_count is None else member_count
            if seats != member_count:
                service.request_seat_sync(uow=uow, org_id=org_id, context=context, delay_seconds=seat_sync_delay)
    return unapplied


def _count_unknown(database: Database, event_ids: Sequence[str], max_attempts: int, outcome: Counter[str]) -> int:
    """One more attempt for events no org owns the customer of; park those out of attempts.
    Returns how many are still waiting (the message is retried for them)."""
    with UnitOfWork(database) as uow:
        changed = inbox_routes.count_attempt(uow=uow, event_ids=event_ids, max_attempts=max_attempts)
        uow.commit()
    waiting = 0
    for event_id, event_type, customer, state in changed:
        if state == PARKED:
            outcome[PARKED] += 1
            metrics.webhook_event(event_type, PARKED)
            log.error("stripe event parked: unknown customer",
                      extra={"event_id": event_id, "event_type": event_type, "customer": customer})
        else:
            waiting += 1
    return waiting

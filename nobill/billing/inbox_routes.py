"""Webhook events whose Stripe customer no org owns yet (stripe_unrouted_events: ids, kinds
and times, never a body), and the global id index of every stored event (stripe_event_ids).

An unrouted event waits until a route for its customer appears (the customer's creation is
recorded, or the apply finds the route on a retry); it then moves into the org's own inbox
(stripe_events, under row-level security) in a unit of work bound to that org. Out of
attempts it is parked; after the retention period it is deleted (its id stays, so a late
redelivery is still a duplicate)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import cast

from sqlalchemy import CursorResult, case, delete, select, text, update

from nobill.billing.tables import stripe_event_ids, stripe_unrouted_events
from nobill.db.unit_of_work import UnitOfWork

# Moves every unrouted event of one customer into the bound org's inbox, as pending (a
# parked one too: the route is the news it waited for). Their bodies were never kept.
_MOVE = text(
    "WITH moved AS ("
    " DELETE FROM stripe_unrouted_events WHERE stripe_customer_id = :customer"
    " RETURNING event_id, event_type, stripe_customer_id, target_kind, target_id, received_at)"
    " INSERT INTO stripe_events (org_id, event_id, event_type, stripe_customer_id, target_kind, target_id, state,"
    " received_at)"
    " SELECT :org_id, event_id, event_type, stripe_customer_id, target_kind, target_id, 'pending', received_at"
    " FROM moved ORDER BY event_id RETURNING event_id"
)


def move_to_org(*, uow: UnitOfWork, org_id: str, stripe_customer_id: str) -> list[str]:
    """Move the events waiting for `stripe_customer_id` into `org_id`'s inbox (the unit of
    work must be bound to that org and the customer must be the org's); returns their ids,
    to be handed to the apply actor after commit."""
    assert uow.org_id == org_id, "the unit of work must be bound to the org"
    moved = sorted(uow.execute(_MOVE, {"org_id": org_id, "customer": stripe_customer_id}).scalars())
    if moved:
        uow.execute(update(stripe_event_ids).where(stripe_event_ids.c.event_id.in_(moved)).values(org_id=org_id))
    return moved


def orgs_of(*, uow: UnitOfWork, event_ids: Sequence[str]) -> dict[str, str | None]:
    """Event id -> the org it was routed to (None: unrouted), for the stored ones among `event_ids`."""
    rows = uow.execute(
        select(stripe_event_ids.c.event_id, stripe_event_ids.c.org_id).where(
            stripe_event_ids.c.event_id.in_(sorted(set(event_ids)))
        )
    ).all()
    return {row.event_id: row.org_id for row in rows}


_PENDING = text("SELECT pending_event_id, pending_org_id FROM nobill_pending_stripe_events(CAST(:event_ids AS text[]))")


def pending_routed(*, uow: UnitOfWork, event_ids: Sequence[str]) -> dict[str, str]:
    """Event id -> org id of the routed events among `event_ids` still pending (one query,
    ids only, through a SECURITY DEFINER function: the bodies stay behind each org's policy)."""
    rows = uow.execute(_PENDING, {"event_ids": sorted(set(event_ids))}).all()
    return {row.pending_event_id: row.pending_org_id for row in rows}


def count_attempt(*, uow: UnitOfWork, event_ids: Sequence[str], max_attempts: int) -> list[tuple[str, str, str | None, str]]:
    """One more attempt for pending unrouted events; those out of attempts are parked.
    Returns (event id, type, customer, state) of each."""
    attempts = stripe_unrouted_events.c.attempts + 1
    changed = uow.execute(
        update(stripe_unrouted_events)
        .where(stripe_unrouted_events.c.event_id.in_(sorted(set(event_ids))), stripe_unrouted_events.c.state == "pending")
        .values(attempts=attempts, state=case((attempts >= max_attempts, "parked"), else_="pending"))
        .returning(stripe_unrouted_events.c.event_id, stripe_unrouted_events.c.event_type,
                   stripe_unrouted_events.c.stripe_customer_id, stripe_unrouted_events.c.state)
    ).all()
    return [(row.event_id, row.event_type, row.stripe_customer_id, row.state) for row in changed]


def pending(*, uow: UnitOfWork, event_ids: Sequence[str]) -> list[tuple[str, str | None]]:
    """(event id, customer) of the pending unrouted events among `event_ids`."""
    rows = uow.execute(
        select(stripe_unrouted_events.c.event_id, stripe_unrouted_events.c.stripe_customer_id).where(
            stripe_unrouted_events.c.event_id.in_(sorted(set(event_ids))), stripe_unrouted_events.c.state == "pending"
        )
    ).all()
    return [(row.event_id, row.stripe_customer_id) for row in rows]


def delete_expired(*, uow: UnitOfWork, received_before: dt.datetime, limit: int = 1000) -> int:
    """Delete unrouted events received before `received_before` (pending or parked): the
    retention limit. Their ids stay in stripe_event_ids."""
    expired = (
        select(stripe_unrouted_events.c.event_id)
        .where(stripe_unrouted_events.c.received_at < received_before)
        .order_by(stripe_unrouted_events.c.received_at)
        .limit(limit)
        .scalar_subquery()
    )
    deleted = uow.execute(delete(stripe_unrouted_events).where(stripe_unrouted_events.c.event_id.in_(expired)))
    return cast(CursorResult, deleted).rowcount


def reason(stripe_customer_id: str | None) -> str:
    """Why an unrouted event waits (or was parked)."""
    return f"no organization owns Stripe customer {stripe_customer_id or '(none)'}"

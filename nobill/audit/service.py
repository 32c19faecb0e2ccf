"""The audit log: appended in the same transaction as the change it records,
hash-chained per org, verified on demand."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, insert, select, update

from nobill import pagination
from nobill.audit.actors import Actor, ActorType, AuditContext
from nobill.audit.tables import audit_chain_heads, audit_events
from nobill.db.unit_of_work import UnitOfWork
from nobill.errors import InvalidArgument
from nobill.text import clean_text

GENESIS_HASH = "0" * 64
_CHAIN_BATCH = 1000


@dataclass(frozen=True)
class AuditEvent:
    org_id: str
    sequence: int
    actor: Actor
    action: str
    target_type: str
    target_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str
    created_at: dt.datetime
    previous_hash: str
    hash: str


@dataclass(frozen=True)
class ChainReport:
    valid: bool
    events_checked: int
    first_broken_sequence: int
    reason: str


def compute_hash(event: AuditEvent) -> str:
    """SHA-256 over a canonical JSON form of the event (its own `hash` aside) and the
    previous event's hash."""
    canonical = json.dumps(
        [
            event.org_id,
            event.sequence,
            event.actor.type.value,
            event.actor.id,
            event.actor.display_name,
            event.action,
            event.target_type,
            event.target_id,
            event.before,
            event.after,
            event.request_id,
            event.created_at.astimezone(dt.timezone.utc).isoformat(timespec="microseconds"),
            event.previous_hash,
        ],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def start_chain(*, uow: UnitOfWork, org_id: str) -> None:
    """Create the org's chain head; called once, when the org is created."""
    uow.execute(insert(audit_chain_heads).values(org_id=org_id, last_sequence=0, last_hash=GENESIS_HASH))


def record(
    *,
    uow: UnitOfWork,
    context: AuditContext,
    action: str,
    target_type: str,
    target_id: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the org's chain inside the caller's transaction."""
    org_id = uow.org_id
    assert org_id, "audit events belong to an org"
    # NOTE: the row lock on the head serialises appends per org, so sequence numbers are
    # gapless and each event's previous_hash is the hash of the event just before it.
    head = uow.execute(
        select(audit_chain_heads.c.last_sequence, audit_chain_heads.c.last_hash)
        .where(audit_chain_heads.c.org_id == org_id)
        .with_for_update()
    ).one()
    unsigned = AuditEvent(
        org_id=org_id,
        sequence=head.last_sequence + 1,
        actor=context.actor,
        action=action,
        target_type=target_type,
        target_id=target_id,
        before=before,
        after=after,
        request_id=context.request_id,
        created_at=dt.datetime.now(dt.timezone.utc),
        previous_hash=head.last_hash,
        hash="",
    )
    event = dataclasses.replace(unsigned, hash=compute_hash(unsigned))
    uow.execute(
        insert(audit_events).values(
            org_id=event.org_id,
            sequence=event.sequence,
            actor_type=event.actor.type.value,
            actor_id=event.actor.id,
            actor_display=event.actor.display_name,
            action=event.action,
            target_type=event.target_type,
            target_id=event.target_id,
            before=event.before,
            after=event.after,
            request_id=event.request_id,
            created_at=event.created_at,
            previous_hash=event.previous_hash,
            hash=event.hash,
        )
    )
    uow.execute(
        update(audit_chain_heads)
        .where(audit_chain_heads.c.org_id == org_id)
        .values(last_sequence=event.sequence, last_hash=event.hash)
    )
    return event


def _from_row(row: Any) -> AuditEvent:
    return AuditEvent(
        org_id=row.org_id,
        sequence=row.sequence,
        actor=Actor(ActorType(row.actor_type), row.actor_id, row.actor_display),
        action=row.action,
        target_type=row.target_type,
        target_id=row.target_id,
        before=row.before,
        after=row.after,
        request_id=row.request_id,
        created_at=row.created_at,
        previous_hash=row.previous_hash,
        hash=row.hash,
    )


def list_(
    *,
    uow: UnitOfWork,
    page_size: int,
    page_token: str,
    actions: list[str],
    start_time: dt.datetime | None,
    end_time: dt.datetime | None,
    oldest_first: bool,
) -> tuple[list[AuditEvent], str]:
    """A page of the org's events, filtered by action and time range; returns (events, next token)."""
    if len(actions) > 50:
        raise InvalidArgument("at most 50 action filters", field="actions")
    for action in actions:
        # Filters match stored actions exactly, so they are checked, not normalised.
        if not action or len(action) > 100 or clean_text(action, field="actions", max_length=100) != action:
            raise InvalidArgument("each action filter must be 1 to 100 printable characters", field="actions")
    if start_time and end_time and start_time >= end_time:
        raise InvalidArgument("start_time must be before end_time", field="start_time")
    conditions: list[ColumnElement[bool]] = []
    if actions:
        conditions.append(audit_events.c.action.in_(actions))
    if start_time:
        conditions.append(audit_events.c.created_at >= start_time)
    if end_time:
        conditions.append(audit_events.c.created_at < end_time)
    rows, next_token = pagination.fetch_page(
        uow,
        select(audit_events).where(and_(True, *conditions)),
        key=audit_events.c.sequence,
        key_type=int,
        page_size=page_size,
        page_token=page_token,
        query=pagination.fingerprint("audit", uow.org_id, sorted(actions), start_time, end_time, oldest_first),
        descending=not oldest_first,
    )
    return [_from_row(row) for row in rows], next_token


def verify_chain(*, uow: UnitOfWork) -> ChainReport:
    """Recompute every hash of the org's chain, oldest first; report the first broken link."""
    expected_previous = GENESIS_HASH
    expected_sequence = 1
    checked = 0
    while True:
        rows = uow.execute(
            select(audit_events)
            .where(audit_events.c.sequence >= expected_sequence)
            .order_by(audit_events.c.sequence)
            .limit(_CHAIN_BATCH)
        ).all()
        if not rows:
            break
        for row in rows:
            event = _from_row(row)
            if event.sequence != expected_sequence:
                return ChainReport(False, checked, expected_sequence, f"event {expected_sequence} is missing")
            if event.previous_hash != expected_previous:
                return ChainReport(False, checked, event.sequence, "previous_hash does not match the event before it")
            if compute_hash(event) != event.hash:
                return ChainReport(False, checked, event.sequence, "content does not match its hash")
            checked += 1
            expected_previous = event.hash
            expected_sequence += 1
    head = uow.execute(select(audit_chain_heads.c.last_sequence, audit_chain_heads.c.last_hash)).one_or_none()
    if head is not None and (head.last_sequence != checked or head.last_hash != expected_previous):
        # Events were removed from the end, or the head was rewound.
        return ChainReport(False, checked, checked + 1, "the chain is shorter than its recorded head")
    return ChainReport(True, checked, 0, "")


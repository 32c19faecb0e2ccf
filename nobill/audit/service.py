"""The audit log: appended in the same transaction as the change it records,
hash-chained per org with a key kept outside the database (HMAC-SHA256 under
NOBILL_AUDIT_KEY), verified on demand, optionally against a signed checkpoint."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, insert, select, text

from nobill import pagination
from nobill.audit import keys
from nobill.audit.actors import Actor, ActorType, AuditContext
from nobill.audit.checkpoints import Checkpoint
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
    key_id: str | None = None  # None: written before audit keys (plain SHA-256)


@dataclass(frozen=True)
class ChainReport:
    valid: bool
    events_checked: int
    first_broken_sequence: int
    reason: str


def _canonical(event: AuditEvent) -> bytes:
    """A canonical JSON form of the event (its own `hash` aside), with the previous
    event's hash and, for keyed events, the key id."""
    fields: list[Any] = [
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
    ]
    if event.key_id is not None:
        fields.append(event.key_id)
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def compute_hash(event: AuditEvent) -> str:
    """Plain SHA-256 of the canonical form: the hash of events from before audit keys."""
    return hashlib.sha256(_canonical(event)).hexdigest()


def _signed(event: AuditEvent, keyring: keys.AuditKeyring) -> AuditEvent:
    key_id, _ = keyring.sign(b"")
    keyed = dataclasses.replace(event, key_id=key_id)
    _, digest = keyring.sign(_canonical(keyed))
    return dataclasses.replace(keyed, hash=digest)


def _check_hash(event: AuditEvent, keyring: keys.AuditKeyring) -> str | None:
    """Why the event's hash is wrong, or None when it is right."""
    if event.key_id is None:
        return None if compute_hash(event) == event.hash else "content does not match its hash"
    verified = keyring.verify(event.key_id, _canonical(event), event.hash)
    if verified is None:
        return f"signed with audit key {event.key_id!r}, which is not configured (NOBILL_AUDIT_KEY)"
    return None if verified else "content does not match its keyed hash"


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
    keyring = keys.current()
    # NOTE: the row lock on the head serialises appends per org, so sequence numbers are
    # gapless and each event's previous_hash is the hash of the event just before it.
    # The app role locks it through a function and a trigger advances it on insert.
    head = uow.execute(
        text("SELECT last_sequence, last_hash FROM nobill_lock_audit_head(:org_id)"), {"org_id": org_id}
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
    event = _signed(unsigned, keyring)
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
            key_id=event.key_id,
        )
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
        key_id=row.key_id,
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


def verify_chain(*, uow: UnitOfWork, checkpoint: Checkpoint | None = None) -> ChainReport:
    """Recompute every hash of the org's chain, oldest first; report the first broken link.
    With a checkpoint (already signature-checked), the chain must also still hold the
    checkpointed event unchanged: a rewritten or truncated history fails even when every
    hash after it was recomputed."""
    keyring = keys.current()
    expected_previous = GENESIS_HASH
    expected_sequence = 1
    checked = 0
    keyed_seen = False
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
            if event.key_id is None and keyed_seen:
                # Unkeyed events may only precede the first keyed one (history from before keys).
                return ChainReport(False, checked, event.sequence, "unkeyed event after keyed events")
            keyed_seen = keyed_seen or event.key_id is not None
            problem = _check_hash(event, keyring)
            if problem is not None:
                return ChainReport(False, checked, event.sequence, problem)
            if checkpoint is not None and event.sequence == checkpoint.sequence and event.hash != checkpoint.hash:
                return ChainReport(False, checked, event.sequence, "event differs from the checkpoint (history rewritten)")
            checked += 1
            expected_previous = event.hash
            expected_sequence += 1
    head = uow.execute(select(audit_chain_heads.c.last_sequence, audit_chain_heads.c.last_hash)).one_or_none()
    if head is not None and (head.last_sequence != checked or head.last_hash != expected_previous):
        # Events were removed from the end, or the head was rewound.
        return ChainReport(False, checked, checked + 1, "the chain is shorter than its recorded head")
    if checkpoint is not None and checked < checkpoint.sequence:
        return ChainReport(
            False, checked, checked + 1, f"the chain ends before the checkpoint's event {checkpoint.sequence} (truncated)"
        )
    return ChainReport(True, checked, 0, "")



@dataclass(frozen=True)
class ChainHead:
    org_id: str
    sequence: int
    hash: str


def heads(*, uow: UnitOfWork) -> list[ChainHead]:
    """Every org's chain head, for checkpoints (uow bound to no org; the database function
    is the one read across orgs)."""
    rows = uow.execute(text("SELECT org_id, last_sequence, last_hash FROM nobill_audit_heads()")).all()
    return [ChainHead(row.org_id, row.last_sequence, row.last_hash) for row in rows]

"""The audit log: appended in the same transaction as the change it records,
hash-chained per org with a key kept outside the database (HMAC-SHA256 under
NOBILL_AUDIT_KEY), verified on demand, optionally against a signed checkpoint.

Each org's chain head is sealed under the key: (org, last sequence, last hash, and the
sequence from which the chain is keyed). Unkeyed events (from before audit keys) verify
only below that mark, so someone who can write the database but lacks the key cannot
downgrade a keyed chain to plain SHA-256: they cannot seal the head they would need."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
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
HEAD_SEAL_FORMAT = "nobill-audit-head/1"
_CHAIN_BATCH = 1000
_UNSEALED_HELP = (
    "history rewritten without the audit key, or from before audit keys and never sealed: "
    "`nobill audit seal` seals such a chain once, right after upgrading"
)

log = logging.getLogger("nobill.audit")


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
    # The sequence from which the org's chain is keyed, stated under the key; None for
    # unkeyed events, keyed events from before sealed heads, and events appended to an
    # unsealed head (which the application never seals on its own).
    keyed_from: int | None = None


@dataclass(frozen=True)
class ChainReport:
    valid: bool
    events_checked: int
    first_broken_sequence: int
    reason: str


def _canonical(event: AuditEvent) -> bytes:
    """A canonical JSON form of the event (its own `hash` aside), with the previous
    event's hash and, for keyed events, the key id and the chain's keyed-from mark."""
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
    if event.keyed_from is not None:
        fields.append(event.keyed_from)
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


@dataclass(frozen=True)
class _Head:
    last_sequence: int
    last_hash: str
    keyed_from_sequence: int | None
    seal_key_id: str | None
    seal: str | None


def _head_message(org_id: str, last_sequence: int, last_hash: str, keyed_from: int) -> bytes:
    """What a head's seal covers."""
    return json.dumps([HEAD_SEAL_FORMAT, org_id, last_sequence, last_hash, keyed_from], separators=(",", ":")).encode()


def _seal_problem(keyring: keys.AuditKeyring, org_id: str, head: _Head) -> str | None:
    """Why the head's seal does not vouch for it, or None when it does."""
    if head.seal is None or head.seal_key_id is None or head.keyed_from_sequence is None:
        return "the chain head is not sealed with an audit key"
    message = _head_message(org_id, head.last_sequence, head.last_hash, head.keyed_from_sequence)
    verified = keyring.verify(head.seal_key_id, message, head.seal)
    if verified is None:
        return f"the chain head is sealed with audit key {head.seal_key_id!r}, which is not configured (NOBILL_AUDIT_KEY)"
    return None if verified else "the chain head's seal does not match it (the head was changed without the audit key)"


def _locked_head(uow: UnitOfWork, org_id: str) -> _Head | None:
    row = uow.execute(
        text(
            "SELECT last_sequence, last_hash, keyed_from_sequence, seal_key_id, seal "
            "FROM nobill_lock_audit_head(:org_id)"
        ),
        {"org_id": org_id},
    ).one_or_none()
    return None if row is None else _Head(*row)


def _seal_head(
    uow: UnitOfWork, keyring: keys.AuditKeyring, org_id: str, last_sequence: int, last_hash: str, keyed_from: int
) -> None:
    """Seal the org's current head under the newest key (the database refuses a head that moved)."""
    key_id, seal = keyring.sign(_head_message(org_id, last_sequence, last_hash, keyed_from))
    sealed = uow.execute(
        text("SELECT nobill_seal_audit_head(:org_id, :sequence, :hash, :keyed_from, :key_id, :seal)"),
        {"org_id": org_id, "sequence": last_sequence, "hash": last_hash, "keyed_from": keyed_from, "key_id": key_id,
         "seal": seal},
    ).scalar_one()
    assert sealed, "the audit chain head moved inside its own transaction"


def start_chain(*, uow: UnitOfWork, org_id: str) -> None:
    """Create the org's chain head, keyed from its first event and sealed; called once,
    when the org is created."""
    # NOTE: an org created with keys installed can have no unkeyed event: its mark is 1.
    key_id, seal = keys.current().sign(_head_message(org_id, 0, GENESIS_HASH, 1))
    uow.execute(
        insert(audit_chain_heads).values(
            org_id=org_id, last_sequence=0, last_hash=GENESIS_HASH, keyed_from_sequence=1, seal_key_id=key_id, seal=seal
        )
    )


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
    head = _locked_head(uow, org_id)
    assert head is not None, f"organization {org_id} has no audit chain head"
    # NOTE: the mark is carried forward only from a head sealed under the key. An unsealed
    # head (tampered with, or from before sealed heads) is never sealed here: sealing it
    # would vouch for whatever history lies below it. `nobill audit seal` does that, once.
    unsealed = _seal_problem(keyring, org_id, head)
    if unsealed is not None:
        log.warning("audit chain of %s: %s; the event is keyed but the head stays unsealed (%s)", org_id, unsealed,
                    _UNSEALED_HELP)
    keyed_from = head.keyed_from_sequence if unsealed is None else None
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
        keyed_from=keyed_from,
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
            keyed_from_sequence=event.keyed_from,
        )
    )
    if keyed_from is not None:
        _seal_head(uow, keyring, org_id, event.sequence, event.hash, keyed_from)
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
        keyed_from=row.keyed_from_sequence,
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


@dataclass
class _Walk:
    checked: int = 0
    last_hash: str = GENESIS_HASH
    last_unkeyed: int = 0  # the newest unkeyed event's sequence; 0 if none
    stated_mark: int | None = None  # the keyed-from mark the first event stating one states
    broken: ChainReport | None = None


def _walk(
    uow: UnitOfWork,
    keyring: keys.AuditKeyring,
    *,
    mark: int | None,
    unkeyed_problem: str,
    checkpoint: Checkpoint | None,
) -> _Walk:
    """Recompute every hash of the bound org's chain, oldest first, and stop at the first
    broken link. Unkeyed events are refused from `mark` on (`unkeyed_problem` says why; it
    may name {sequence} and {mark}); with `mark` None (sealing a chain from before keys),
    anywhere before the first keyed one."""
    walk = _Walk()
    keyed_seen = False
    while True:
        rows = uow.execute(
            select(audit_events)
            .where(audit_events.c.sequence > walk.checked)
            .order_by(audit_events.c.sequence)
            .limit(_CHAIN_BATCH)
        ).all()
        if not rows:
            return walk
        for row in rows:
            event = _from_row(row)
            expected = walk.checked + 1

            def broken(sequence: int, reason: str) -> _Walk:
                walk.broken = ChainReport(False, walk.checked, sequence, reason)
                return walk

            if event.sequence != expected:
                return broken(expected, f"event {expected} is missing")
            if event.previous_hash != walk.last_hash:
                return broken(event.sequence, "previous_hash does not match the event before it")
            if event.key_id is None:
                if keyed_seen:
                    # Unkeyed events may only precede the first keyed one (history from before keys).
                    return broken(event.sequence, "unkeyed event after keyed events")
                if mark is not None and event.sequence >= mark:
                    return broken(
                        event.sequence,
                        unkeyed_problem.replace("{sequence}", str(event.sequence)).replace("{mark}", str(mark)),
                    )
                walk.last_unkeyed = event.sequence
            keyed_seen = keyed_seen or event.key_id is not None
            problem = _check_hash(event, keyring)
            if problem is not None:
                return broken(event.sequence, problem)
            if event.keyed_from is not None:
                if walk.stated_mark is None:
                    walk.stated_mark = event.keyed_from
                if mark is not None and event.keyed_from != mark:
                    return broken(
                        event.sequence,
                        f"event {event.sequence} states the chain is keyed from event {event.keyed_from}, "
                        f"its head from event {mark}",
                    )
            if checkpoint is not None and event.sequence == checkpoint.sequence and event.hash != checkpoint.hash:
                return broken(event.sequence, "event differs from the checkpoint (history rewritten)")
            walk.checked += 1
            walk.last_hash = event.hash


def verify_chain(*, uow: UnitOfWork, checkpoint: Checkpoint | None = None) -> ChainReport:
    """Recompute every hash of the org's chain, oldest first; report the first broken link.
    The head must be sealed under a configured key; unkeyed events verify only below the
    mark it seals (with no valid seal, none do). With a checkpoint (already
    signature-checked), the chain must also still hold the checkpointed event unchanged: a
    history cut short and sealed again by someone holding the key fails too."""
    keyring = keys.current()
    org_id = uow.org_id
    assert org_id, "a chain belongs to an org"
    row = uow.execute(
        select(
            audit_chain_heads.c.last_sequence,
            audit_chain_heads.c.last_hash,
            audit_chain_heads.c.keyed_from_sequence,
            audit_chain_heads.c.seal_key_id,
            audit_chain_heads.c.seal,
        )
    ).one_or_none()
    if row is None:
        return ChainReport(False, 0, 1, "the organization has no audit chain head (it was deleted)")
    head = _Head(*row)
    seal_problem = _seal_problem(keyring, org_id, head)
    if seal_problem is None:
        assert head.keyed_from_sequence is not None
        mark = head.keyed_from_sequence
        unkeyed_problem = (
            "event {sequence} is unkeyed, but the sealed chain head says the chain is keyed from event {mark} "
            "(history rewritten without the audit key)"
        )
    else:
        # NOTE: without a valid seal nothing says where keyed history starts, so no unkeyed
        # event is trusted: a rewrite to plain SHA-256 is what this refuses.
        mark = 1
        unkeyed_problem = "event {sequence} is unkeyed and " + seal_problem + f" ({_UNSEALED_HELP})"
    walk = _walk(uow, keyring, mark=mark, unkeyed_problem=unkeyed_problem, checkpoint=checkpoint)
    if walk.broken is not None:
        return walk.broken
    checked = walk.checked
    if head.last_sequence != checked or head.last_hash != walk.last_hash:
        # Events were removed from the end, or the head was rewound.
        return ChainReport(False, checked, checked + 1, "the chain is shorter than its recorded head")
    if checked == 0:
        # Creating an org records its first event in the same transaction.
        return ChainReport(False, 0, 1, "the chain has no events (every organization's chain starts when it is created)")
    if checkpoint is not None and checked < checkpoint.sequence:
        return ChainReport(
            False, checked, checked + 1, f"the chain ends before the checkpoint's event {checkpoint.sequence} (truncated)"
        )
    if seal_problem is not None:
        return ChainReport(False, checked, head.last_sequence, f"{seal_problem} at event {head.last_sequence} ({_UNSEALED_HELP})")
    return ChainReport(True, checked, 0, "")


@dataclass(frozen=True)
class SealReport:
    sealed: bool
    keyed_from: int
    message: str


def seal_chain(*, uow: UnitOfWork) -> SealReport:
    """Seal the bound org's chain head if it has none: for chains from before sealed heads
    (migration 0007), once, right after upgrading. Keyed from one past its newest unkeyed
    event. Refuses a chain that does not verify, a head whose seal is wrong, and a chain
    whose events state a mark (it was sealed before, so its seal was removed)."""
    keyring = keys.current()
    org_id = uow.org_id
    assert org_id, "a chain belongs to an org"
    head = _locked_head(uow, org_id)
    if head is None:
        return SealReport(False, 0, "the organization has no audit chain head")
    problem = _seal_problem(keyring, org_id, head)
    if problem is None:
        assert head.keyed_from_sequence is not None
        return SealReport(True, head.keyed_from_sequence, f"already sealed, keyed from event {head.keyed_from_sequence}")
    if head.seal is not None:
        return SealReport(False, 0, problem)
    walk = _walk(uow, keyring, mark=None, unkeyed_problem="", checkpoint=None)
    if walk.broken is not None:
        return SealReport(False, 0, f"the chain does not verify at event {walk.broken.first_broken_sequence}: {walk.broken.reason}")
    if walk.checked != head.last_sequence or walk.last_hash != head.last_hash:
        return SealReport(False, 0, "the chain is shorter than its recorded head")
    if walk.stated_mark is not None:
        return SealReport(
            False, 0, f"its events say it was sealed before (keyed from event {walk.stated_mark}) and its seal is gone: "
            "the head or the history was tampered with",
        )
    keyed_from = walk.last_unkeyed + 1
    _seal_head(uow, keyring, org_id, head.last_sequence, head.last_hash, keyed_from)
    return SealReport(True, keyed_from, f"sealed, keyed from event {keyed_from}")


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


def org_ids(*, uow: UnitOfWork) -> list[str]:
    """Every org's id, headless ones included, to verify every chain (uow bound to no org)."""
    return list(uow.execute(text("SELECT org_id FROM nobill_audit_org_ids()")).scalars())

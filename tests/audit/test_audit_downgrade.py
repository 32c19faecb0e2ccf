"""The keyed chain cannot be downgraded without the audit key.

Someone who can write the database as its superuser, but does not hold NOBILL_AUDIT_KEY,
can recompute everything plain SHA-256 covers: rewrite an org's events as if written
before audit keys (key_id NULL), chain them again and move the head. The head is sealed
under the key (org, last sequence, last hash, and the sequence from which the chain is
keyed), so `VerifyAuditChain` and `nobill audit verify` find the rewrite, even with no
checkpoint, and a later append does not bless it. Unkeyed history is accepted only below
the sealed mark: the history of orgs from before audit keys, sealed once with
`nobill audit seal` after upgrading."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from sqlalchemy import text

from nobill.db.unit_of_work import UnitOfWork
from nobill.v1 import audit_pb2, tenancy_pb2
from support import TEST_AUDIT_KEY, new_user

ROOT = Path(__file__).resolve().parents[2]
GENESIS = "0" * 64


@pytest.fixture
def org_with_history(channel):
    """An org created with keys installed: its chain is keyed from event 1 (5 events)."""
    owner = new_user(channel)
    org = owner.tenancy.CreateOrganization(tenancy_pb2.CreateOrganizationRequest(name="Downgrade Co")).organization
    member = owner.tenancy.AddMember(
        tenancy_pb2.AddMemberRequest(org_id=org.id, email=f"m-{org.id.lower()}@example.com", role=3)
    ).member
    owner.tenancy.UpdateMemberRole(tenancy_pb2.UpdateMemberRoleRequest(org_id=org.id, user_id=member.user_id, role=2))
    owner.tenancy.AddMember(tenancy_pb2.AddMemberRequest(org_id=org.id, email=f"n-{org.id.lower()}@example.com", role=3))
    return owner, org.id


# --- what the attacker does, as the PostgreSQL superuser without the audit key ----------


def _plain_hash(row: dict) -> str:
    """The hash of an event from before audit keys: SHA-256 of its canonical form."""
    fields = [
        row["org_id"], row["sequence"], row["actor_type"], row["actor_id"], row["actor_display"], row["action"],
        row["target_type"], row["target_id"], row["before"], row["after"], row["request_id"],
        row["created_at"].astimezone(dt.timezone.utc).isoformat(timespec="microseconds"), row["previous_hash"],
    ]
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


def _rewrite_unkeyed(superuser, org_id: str, *, first: int = 1, edit=None, head: str = "moved") -> None:
    """Rewrite events `first`.. as unkeyed events (plain SHA-256 chain, key_id NULL),
    applying `edit(row)` to each, and fix the head: everything computable without the key.

    head: "moved" (last sequence and hash updated, the rest left), "unsealed" (its seal and
    mark cleared too, as for an org from before audit keys), "mark-raised" (the mark set
    past the end so every event looks older than keys), "deleted" (the row removed)."""
    rows = superuser.cursor(row_factory=dict_row).execute(
        "SELECT * FROM audit_events WHERE org_id = %s ORDER BY sequence", (org_id,)
    ).fetchall()
    previous = rows[first - 2]["hash"] if first > 1 else GENESIS
    sealed_heads = "keyed_from_sequence" in rows[0]  # NOTE: lets this run on a schema before seals, to show the hole
    superuser.execute("SET session_replication_role = replica")  # triggers off: what a superuser can do
    try:
        for row in rows[first - 1:]:
            row = dict(row)
            if edit is not None:
                edit(row)
            row["previous_hash"] = previous
            digest = _plain_hash(row)
            superuser.execute(
                "UPDATE audit_events SET after = %s, previous_hash = %s, hash = %s, key_id = NULL"
                + (", keyed_from_sequence = NULL" if sealed_heads else "")
                + " WHERE org_id = %s AND sequence = %s",
                (Jsonb(row["after"]) if row["after"] is not None else None, previous, digest, org_id, row["sequence"]),
            )
            previous = digest
        last = rows[-1]["sequence"]
        if head == "deleted":
            superuser.execute("DELETE FROM audit_chain_heads WHERE org_id = %s", (org_id,))
            return
        superuser.execute(
            "UPDATE audit_chain_heads SET last_sequence = %s, last_hash = %s WHERE org_id = %s", (last, previous, org_id)
        )
        if head == "unsealed" and sealed_heads:
            superuser.execute(
                "UPDATE audit_chain_heads SET keyed_from_sequence = NULL, seal_key_id = NULL, seal = NULL WHERE org_id = %s",
                (org_id,),
            )
        elif head == "mark-raised" and sealed_heads:
            superuser.execute(
                "UPDATE audit_chain_heads SET keyed_from_sequence = 1000000000 WHERE org_id = %s", (org_id,)
            )
    finally:
        superuser.execute("SET session_replication_role = DEFAULT")


def _member_made_owner(row: dict) -> None:
    if row["action"] == "member.role_changed" or (row["after"] or {}).get("role") in ("member", "admin"):
        row["after"] = {**(row["after"] or {}), "role": "owner"}


# --- the two ways to verify: the RPC and the command ---------------------------------


def _verify(owner, org_id: str) -> audit_pb2.VerifyAuditChainResponse:
    return owner.audit.VerifyAuditChain(audit_pb2.VerifyAuditChainRequest(org_id=org_id))


def _nobill(*args: str, database_url: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("NOBILL_")}
    env = {**base, "NOBILL_DATABASE_URL": database_url, "NOBILL_AUDIT_KEY": TEST_AUDIT_KEY}
    return subprocess.run([sys.executable, "-m", "nobill.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def _cli_verify(database_url: str, org_id: str) -> subprocess.CompletedProcess:
    return _nobill("audit", "verify", "--org", org_id, database_url=database_url)


# --- an org created with keys installed ------------------------------------------------


def test_an_untouched_keyed_chain_verifies_through_the_rpc_and_the_command(org_with_history, database_url) -> None:
    owner, org_id = org_with_history

    report = _verify(owner, org_id)
    result = _cli_verify(database_url, org_id)

    assert (report.valid, report.events_checked) == (True, 5), report.reason
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{org_id}: valid (5 events checked)" in result.stdout


@pytest.mark.parametrize("head", ["moved", "unsealed", "mark-raised", "deleted"])
def test_a_keyed_history_rewritten_as_unkeyed_is_found_without_a_checkpoint(
    org_with_history, superuser, database_url, head: str
) -> None:
    # A member turned into an owner, every event made "from before audit keys", the plain
    # SHA-256 chain recomputed and the head fixed.
    owner, org_id = org_with_history
    _rewrite_unkeyed(superuser, org_id, edit=_member_made_owner, head=head)

    report = _verify(owner, org_id)
    result = _cli_verify(database_url, org_id)

    assert not report.valid and report.first_broken_sequence == 1, report.reason
    assert "event 1" in report.reason or "head" in report.reason, report.reason
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{org_id}: BROKEN at event 1:" in result.stdout


def test_an_append_after_the_rewrite_does_not_bless_it(org_with_history, superuser, database_url) -> None:
    owner, org_id = org_with_history
    _rewrite_unkeyed(superuser, org_id, edit=_member_made_owner, head="unsealed")

    # The application goes on working for the org; its next keyed event must not seal the
    # rewritten history below it.
    owner.tenancy.AddMember(tenancy_pb2.AddMemberRequest(org_id=org_id, email=f"later-{org_id.lower()}@example.com", role=3))
    report = _verify(owner, org_id)
    result = _cli_verify(database_url, org_id)

    assert not report.valid and report.first_broken_sequence == 1, report.reason
    assert result.returncode == 1 and f"{org_id}: BROKEN at event 1:" in result.stdout, result.stdout


def test_the_app_role_cannot_append_an_unkeyed_event_unnoticed(org_with_history, database) -> None:
    # Without the key (say, through an injection as the app role), an event that extends
    # the chain is accepted by the database, but it unseals the head.
    owner, org_id = org_with_history
    with UnitOfWork(database, org_id=org_id) as uow:
        head = uow.execute(text("SELECT last_sequence, last_hash FROM nobill_lock_audit_head(:org)"), {"org": org_id}).one()
        row = {
            "org_id": org_id, "sequence": head.last_sequence + 1, "actor_type": "system", "actor_id": "x",
            "actor_display": "x", "action": "member.added", "target_type": "member", "target_id": "x", "before": None,
            "after": {"role": "owner"}, "request_id": "r", "created_at": dt.datetime.now(dt.timezone.utc),
            "previous_hash": head.last_hash,
        }
        uow.execute(
            text(
                "INSERT INTO audit_events (org_id, sequence, actor_type, actor_id, actor_display, action, target_type, "
                "target_id, after, request_id, created_at, previous_hash, hash) VALUES (:org_id, :sequence, :actor_type, "
                ":actor_id, :actor_display, :action, :target_type, :target_id, CAST(:after AS jsonb), :request_id, "
                ":created_at, :previous_hash, :hash)"
            ),
            {**row, "after": json.dumps(row["after"]), "hash": _plain_hash(row)},
        )
        uow.commit()

    report = _verify(owner, org_id)

    assert not report.valid and report.first_broken_sequence == 6, report.reason


# --- an org with history from before audit keys, sealed once after upgrading ---------


@pytest.fixture
def upgraded_org(org_with_history, superuser, database_url):
    """An org whose first 5 events predate audit keys (unkeyed, head never sealed), sealed
    with `nobill audit seal`, then 2 keyed events: keyed from event 6."""
    owner, org_id = org_with_history
    _rewrite_unkeyed(superuser, org_id, head="unsealed")  # as a database from before keys holds it
    before_seal = _verify(owner, org_id)
    assert not before_seal.valid and "not sealed" in before_seal.reason, before_seal.reason

    sealed = _nobill("audit", "seal", "--org", org_id, database_url=database_url)
    assert sealed.returncode == 0, sealed.stdout + sealed.stderr
    assert f"{org_id}: sealed, keyed from event 6" in sealed.stdout

    for name in ("p", "q"):
        owner.tenancy.AddMember(tenancy_pb2.AddMemberRequest(org_id=org_id, email=f"{name}-{org_id.lower()}@example.com", role=3))
    return owner, org_id


def test_an_upgraded_chain_verifies_with_its_unkeyed_prefix(upgraded_org, superuser, database_url) -> None:
    owner, org_id = upgraded_org

    report = _verify(owner, org_id)
    result = _cli_verify(database_url, org_id)

    assert (report.valid, report.events_checked) == (True, 7), report.reason
    assert result.returncode == 0 and f"{org_id}: valid (7 events checked)" in result.stdout, result.stdout
    assert superuser.execute(
        "SELECT array_agg(key_id IS NOT NULL ORDER BY sequence) FROM audit_events WHERE org_id = %s", (org_id,)
    ).fetchone()[0] == [False] * 5 + [True] * 2


@pytest.mark.parametrize("head", ["moved", "unsealed", "mark-raised"])
def test_the_keyed_part_rewritten_with_the_unkeyed_prefix_kept_is_found(
    upgraded_org, superuser, database_url, head: str
) -> None:
    # Events 1-5 are genuinely from before keys; the attacker rewrites the keyed events 6-7
    # as unkeyed ones and moves the head. With no valid seal nothing says where keyed
    # history starts, so no unkeyed event is trusted: broken from event 1, naming the head.
    owner, org_id = upgraded_org
    _rewrite_unkeyed(superuser, org_id, first=6, edit=_member_made_owner, head=head)

    report = _verify(owner, org_id)
    result = _cli_verify(database_url, org_id)

    assert not report.valid and report.first_broken_sequence == 1, report.reason
    assert "event 1 is unkeyed and the chain head" in report.reason and "seal" in report.reason, report.reason
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{org_id}: BROKEN at event 1: event 1 is unkeyed and the chain head" in result.stdout


def test_the_whole_upgraded_history_rewritten_is_found(upgraded_org, superuser, database_url) -> None:
    owner, org_id = upgraded_org
    _rewrite_unkeyed(superuser, org_id, edit=_member_made_owner, head="moved")

    report = _verify(owner, org_id)
    result = _cli_verify(database_url, org_id)

    assert not report.valid and report.first_broken_sequence == 1, report.reason
    assert result.returncode == 1 and f"{org_id}: BROKEN at event 1:" in result.stdout, result.stdout


def test_seal_refuses_a_chain_that_was_sealed_before(org_with_history, superuser, database_url) -> None:
    # Only the head's seal removed (say, with the tail dropped): its events still state
    # their mark, so sealing it again would bless a tampered chain.
    owner, org_id = org_with_history
    superuser.execute("SET session_replication_role = replica")
    superuser.execute("DELETE FROM audit_events WHERE org_id = %s AND sequence > 3", (org_id,))
    superuser.execute(
        "UPDATE audit_chain_heads h SET last_sequence = 3, last_hash = e.hash, seal = NULL, seal_key_id = NULL "
        "FROM audit_events e WHERE h.org_id = %s AND e.org_id = h.org_id AND e.sequence = 3", (org_id,)
    )
    superuser.execute("SET session_replication_role = DEFAULT")

    sealed = _nobill("audit", "seal", "--org", org_id, database_url=database_url)
    report = _verify(owner, org_id)

    assert sealed.returncode == 1 and f"{org_id}: NOT SEALED" in sealed.stdout, sealed.stdout + sealed.stderr
    assert not report.valid and "not sealed" in report.reason, report.reason


def test_verify_without_a_checkpoint_covers_every_org(org_with_history, superuser, database_url) -> None:
    # An org whose head row is gone is still verified (and broken).
    _, org_id = org_with_history
    _rewrite_unkeyed(superuser, org_id, head="deleted")

    result = _nobill("audit", "verify", database_url=database_url)

    assert result.returncode == 1
    assert f"{org_id}: BROKEN at event 1: the organization has no audit chain head" in result.stdout

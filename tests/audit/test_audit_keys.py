"""Tamper-evidence against the database's own administrators: events are keyed with
NOBILL_AUDIT_KEY (kept outside the database, rotatable), and signed checkpoints of each
org's head expose history that was rewritten or cut short and then made consistent."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import psycopg
import pytest

from nobill.audit import checkpoints, keys
from nobill.config import Settings
from nobill.v1 import audit_pb2, tenancy_pb2
from support import TEST_AUDIT_KEY, new_user

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def org_with_history(channel):
    owner = new_user(channel)
    org = owner.tenancy.CreateOrganization(tenancy_pb2.CreateOrganizationRequest(name="Keyed Co")).organization
    added = owner.tenancy.AddMember(
        tenancy_pb2.AddMemberRequest(org_id=org.id, email=f"m-{org.id.lower()}@example.com", role=3)
    ).member
    owner.tenancy.UpdateMemberRole(tenancy_pb2.UpdateMemberRoleRequest(org_id=org.id, user_id=added.user_id, role=2))
    owner.tenancy.RemoveMember(tenancy_pb2.RemoveMemberRequest(org_id=org.id, user_id=added.user_id))
    return owner, org.id


def _verify(owner, org_id: str, checkpoint: checkpoints.Checkpoint | None = None):
    request = audit_pb2.VerifyAuditChainRequest(org_id=org_id)
    if checkpoint is not None:
        request.checkpoint.CopyFrom(
            audit_pb2.AuditCheckpoint(
                sequence=checkpoint.sequence, hash=checkpoint.hash, create_time=checkpoint.created_at,
                key_id=checkpoint.key_id, signature=checkpoint.signature,
            )
        )
    return owner.audit.VerifyAuditChain(request)


def _keyring() -> keys.AuditKeyring:
    return keys.from_settings(Settings.from_env({"NOBILL_AUDIT_KEY": TEST_AUDIT_KEY}).audit_keys)


def _checkpoint(superuser, org_id: str) -> checkpoints.Checkpoint:
    sequence, head = superuser.execute(
        "SELECT last_sequence, last_hash FROM audit_chain_heads WHERE org_id = %s", (org_id,)
    ).fetchone()
    return checkpoints.sign(_keyring(), org_id=org_id, sequence=sequence, hash=head)


# --- what an administrator with superuser rights can do, and what it achieves ------------


def _canonical(row: dict, key_id: str | None) -> bytes:
    fields = [
        row["org_id"], row["sequence"], row["actor_type"], row["actor_id"], row["actor_display"], row["action"],
        row["target_type"], row["target_id"], row["before"], row["after"], row["request_id"],
        row["created_at"].astimezone(dt.timezone.utc).isoformat(timespec="microseconds"), row["previous_hash"],
    ]
    if key_id is not None:
        fields.append(key_id)
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _rewrite_from(superuser, org_id: str, first: int, *, guessed_key: bytes | None, edit: dict | None = None) -> None:
    """Rewrite events `first`.. with recomputed hashes and move the head: everything an
    attacker who can write the database, but does not hold the audit key, can do."""
    import hmac

    from psycopg.rows import dict_row
    from psycopg.types.json import Jsonb

    rows = superuser.cursor(row_factory=dict_row).execute(
        "SELECT * FROM audit_events WHERE org_id = %s ORDER BY sequence", (org_id,)
    ).fetchall()
    previous = rows[first - 2]["hash"] if first > 1 else "0" * 64
    superuser.execute("SET session_replication_role = replica")
    try:
        for row in rows[first - 1:]:
            row = {**row, **(edit or {})} if row["sequence"] == first else dict(row)
            row["previous_hash"] = previous
            key_id = row["key_id"] if guessed_key is not None else None
            canonical = _canonical(row, key_id)
            digest = (
                hmac.new(guessed_key, canonical, hashlib.sha256).hexdigest()
                if guessed_key is not None else hashlib.sha256(canonical).hexdigest()
            )
            superuser.execute(
                "UPDATE audit_events SET after = %s, previous_hash = %s, hash = %s, key_id = %s "
                "WHERE org_id = %s AND sequence = %s",
                (Jsonb(row["after"]) if row["after"] is not None else None, previous, digest, key_id, org_id, row["sequence"]),
            )
            previous = digest
        superuser.execute(
            "UPDATE audit_chain_heads SET last_sequence = %s, last_hash = %s WHERE org_id = %s",
            (rows[-1]["sequence"], previous, org_id),
        )
    finally:
        superuser.execute("SET session_replication_role = DEFAULT")


def test_every_event_carries_the_signing_key_id(org_with_history, superuser) -> None:
    owner, org_id = org_with_history
    key_ids = {row[0] for row in superuser.execute("SELECT key_id FROM audit_events WHERE org_id = %s", (org_id,))}
    listed = owner.audit.ListAuditEvents(audit_pb2.ListAuditEventsRequest(org_id=org_id)).events

    assert key_ids == {"test-1"}  # the last key of TEST_AUDIT_KEY signs
    assert {event.key_id for event in listed} == {"test-1"}


@pytest.mark.parametrize("guessed_key", [None, b"a-guess-at-the-audit-key-0123456789"], ids=["plain-sha256", "wrong-key"])
def test_rewriting_an_event_and_recomputing_the_rest_is_found(org_with_history, superuser, guessed_key) -> None:
    owner, org_id = org_with_history
    _rewrite_from(superuser, org_id, 3, guessed_key=guessed_key, edit={"after": {"email": "x@example.com", "role": "owner"}})

    report = _verify(owner, org_id)

    assert (report.valid, report.first_broken_sequence) == (False, 3), report.reason


def test_a_whole_history_rewritten_without_keys_is_found_with_or_without_a_checkpoint(org_with_history, superuser) -> None:
    # Every event rewritten as if written before audit keys existed: the sealed head says
    # the chain is keyed from event 1 (tests/audit/test_audit_downgrade.py), and the
    # checkpoint says so too.
    owner, org_id = org_with_history
    checkpoint = _checkpoint(superuser, org_id)
    _rewrite_from(superuser, org_id, 1, guessed_key=None, edit={"after": {"name": "Rewritten"}})

    alone = _verify(owner, org_id)
    assert (alone.valid, alone.first_broken_sequence) == (False, 1), alone.reason
    report = _verify(owner, org_id, checkpoint)

    assert (report.valid, report.first_broken_sequence) == (False, 1), report.reason


def test_a_dropped_tail_with_a_rewound_head_is_found_by_a_checkpoint(org_with_history, superuser) -> None:
    owner, org_id = org_with_history
    checkpoint = _checkpoint(superuser, org_id)
    superuser.execute("SET session_replication_role = replica")
    superuser.execute("DELETE FROM audit_events WHERE org_id = %s AND sequence > 3", (org_id,))
    superuser.execute(
        "UPDATE audit_chain_heads h SET last_sequence = 3, last_hash = e.hash FROM audit_events e "
        "WHERE h.org_id = %s AND e.org_id = h.org_id AND e.sequence = 3", (org_id,)
    )
    superuser.execute("SET session_replication_role = DEFAULT")

    alone = _verify(owner, org_id)  # consistent, but shorter: the head's seal no longer matches it
    assert not alone.valid and "seal does not match" in alone.reason, alone.reason
    report = _verify(owner, org_id, checkpoint)

    assert (report.valid, report.first_broken_sequence) == (False, 4)
    assert "truncated" in report.reason


def test_an_untouched_chain_matches_its_checkpoint(org_with_history, superuser) -> None:
    owner, org_id = org_with_history
    checkpoint = _checkpoint(superuser, org_id)
    owner.tenancy.AddMember(tenancy_pb2.AddMemberRequest(org_id=org_id, email=f"later-{org_id.lower()}@example.com", role=3))

    report = _verify(owner, org_id, checkpoint)

    assert report.valid and report.events_checked == checkpoint.sequence + 1


@pytest.mark.parametrize("field", ["sequence", "hash", "signature", "key_id"])
def test_an_altered_or_forged_checkpoint_is_invalid_argument(org_with_history, superuser, field: str) -> None:
    owner, org_id = org_with_history
    checkpoint = _checkpoint(superuser, org_id)
    changed = {"sequence": 3, "hash": "0" * 64, "signature": "0" * 64, "key_id": "unknown"}[field]
    forged = checkpoints.Checkpoint(**{**checkpoint.__dict__, field: changed})

    with pytest.raises(grpc.RpcError) as refused:
        _verify(owner, org_id, forged)

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# --- key rotation ---------------------------------------------------------------------


def test_rotation_every_configured_key_verifies_the_newest_signs() -> None:
    old_only = keys.AuditKeyring((("k1", b"k" * 32),))
    rotated = keys.AuditKeyring((("k1", b"k" * 32), ("k2", b"n" * 32)))
    key_id, signature = old_only.sign(b"event")

    assert rotated.signing_key_id == "k2"
    assert rotated.verify(key_id, b"event", signature) is True
    assert rotated.verify(key_id, b"other", signature) is False
    assert keys.AuditKeyring((("k2", b"n" * 32),)).verify(key_id, b"event", signature) is None


def test_events_signed_with_a_retired_key_need_that_key_configured(org_with_history, database) -> None:
    from nobill.audit import service as audit
    from nobill.db.unit_of_work import UnitOfWork

    _, org_id = org_with_history
    installed = keys.current()
    try:
        keys.install(keys.AuditKeyring((("test-2", b"the-next-audit-key-that-is-long-enough"),)))
        with UnitOfWork(database, org_id=org_id) as uow:
            report = audit.verify_chain(uow=uow)
    finally:
        keys.install(installed)

    assert not report.valid and report.first_broken_sequence == 1
    assert "'test-1'" in report.reason and "not configured" in report.reason


@pytest.mark.parametrize(
    ("value", "problem"),
    [("nokey", "id:secret"), ("a:short", "32 bytes"), (f"a:{'x' * 32},a:{'y' * 32}", "more than once"), (f"bad id:{'x' * 32}", "id:secret")],
)
def test_a_bad_audit_key_setting_names_itself(value: str, problem: str) -> None:
    from nobill.errors import ConfigError

    with pytest.raises(ConfigError, match=problem) as refused:
        Settings.from_env({"NOBILL_AUDIT_KEY": value})

    assert refused.value.setting == "NOBILL_AUDIT_KEY"


def test_serve_without_an_audit_key_names_the_setting(database_url: str) -> None:
    from support import TEST_SECRET

    result = _nobill("serve", env={"NOBILL_DATABASE_URL": database_url, "NOBILL_JWT_SECRET": TEST_SECRET,
                                  "NOBILL_GRPC_ADDR": "127.0.0.1:0"})

    assert result.returncode == 2 and "NOBILL_AUDIT_KEY" in result.stderr


# --- the CLI --------------------------------------------------------------------------


def _nobill(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("NOBILL_")}
    return subprocess.run([sys.executable, "-m", "nobill.cli", *args], env={**base, **env}, capture_output=True,
                          text=True, timeout=60, cwd=ROOT)


def test_cli_checkpoint_then_verify_finds_a_rewrite(org_with_history, superuser, database_url, tmp_path: Path) -> None:
    owner, org_id = org_with_history
    env = {"NOBILL_DATABASE_URL": database_url, "NOBILL_AUDIT_KEY": TEST_AUDIT_KEY}
    path = tmp_path / "checkpoint.json"

    taken = _nobill("audit", "checkpoint", "--output", str(path), env=env)
    assert taken.returncode == 0, taken.stderr
    entries = {entry.org_id: entry for entry in checkpoints.loads(path.read_text())}
    assert org_id in entries and entries[org_id].sequence == 5

    clean = _nobill("audit", "verify", "--checkpoint", str(path), "--org", org_id, env=env)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert f"{org_id}: valid" in clean.stdout

    _rewrite_from(superuser, org_id, 1, guessed_key=None, edit={"after": {"name": "Rewritten"}})
    broken = _nobill("audit", "verify", "--checkpoint", str(path), "--org", org_id, env=env)
    assert broken.returncode == 1
    assert f"{org_id}: BROKEN" in broken.stdout


def test_cli_checkpoint_to_stdout_for_one_org(org_with_history, database_url) -> None:
    _, org_id = org_with_history
    result = _nobill("audit", "checkpoint", "--org", org_id,
                     env={"NOBILL_DATABASE_URL": database_url, "NOBILL_AUDIT_KEY": TEST_AUDIT_KEY})

    assert result.returncode == 0, result.stderr
    (entry,) = checkpoints.loads(result.stdout)
    assert entry.org_id == org_id and entry.key_id == "test-1"
    checkpoints.check_signature(_keyring(), entry)

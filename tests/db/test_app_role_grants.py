"""Defence in depth: the app role holds only what the code needs. It cannot rewrite users
(only claim an invitation through nobill_claim_invitation), cannot update, delete or
rewind audit chain heads (a trigger advances them as events are appended), and cannot
append an event that does not extend its org's chain."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from nobill import ids
from nobill.db.unit_of_work import UnitOfWork
from support import new_user
from nobill.v1 import tenancy_pb2


def _privileges(superuser, table: str) -> set[str]:
    return {
        privilege for (privilege,) in superuser.execute(
            "SELECT privilege_type FROM information_schema.role_table_grants "
            "WHERE grantee = 'nobill_app' AND table_name = %s", (table,)
        )
    }


def test_the_app_role_has_exactly_the_table_privileges_the_code_needs(superuser) -> None:
    assert _privileges(superuser, "users") == {"SELECT", "INSERT"}
    assert _privileges(superuser, "audit_chain_heads") == {"SELECT", "INSERT"}
    assert _privileges(superuser, "audit_events") == {"SELECT", "INSERT"}
    column_grants = superuser.execute(
        "SELECT table_name, column_name, privilege_type FROM information_schema.column_privileges "
        "WHERE grantee = 'nobill_app' AND table_name IN ('users', 'audit_chain_heads') AND privilege_type <> 'SELECT' "
        "AND privilege_type <> 'INSERT'"
    ).fetchall()
    assert column_grants == []


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE users SET email = 'attacker@example.com' WHERE user_id = :user_id",
        "UPDATE users SET subject = 'attacker' WHERE user_id = :user_id",
    ],
)
def test_the_app_role_cannot_rewrite_a_user(database, channel, statement: str) -> None:
    user = new_user(channel)
    org = user.tenancy.CreateOrganization(tenancy_pb2.CreateOrganizationRequest(name="Grants")).organization
    with UnitOfWork(database, org_id=org.id) as uow:
        user_id = uow.execute(text("SELECT user_id FROM memberships")).scalar_one()
    with UnitOfWork(database) as uow, pytest.raises(DBAPIError, match="permission denied"):
        uow.execute(text(statement), {"user_id": user_id})


def test_claiming_an_invitation_sets_only_a_missing_subject(database, superuser) -> None:
    invited, signed_in = ids.new_id("usr"), ids.new_id("usr")
    superuser.execute(
        "INSERT INTO users (user_id, subject, email, created_at) VALUES (%s, NULL, %s, now()), (%s, 'sub-taken', %s, now())",
        (invited, f"{invited}@example.com", signed_in, f"{signed_in}@example.com"),
    )
    with UnitOfWork(database) as uow:
        claim = text("SELECT nobill_claim_invitation(:email, :subject)")
        assert uow.execute(claim, {"email": f"{invited}@example.com", "subject": "new-sub"}).scalar_one() == invited
        assert uow.execute(claim, {"email": f"{signed_in}@example.com", "subject": "thief"}).scalar_one() is None
        assert uow.execute(claim, {"email": f"{invited}@example.com", "subject": "second"}).scalar_one() is None
        uow.commit()
    subjects = dict(superuser.execute("SELECT user_id, subject FROM users WHERE user_id IN (%s, %s)", (invited, signed_in)))
    assert subjects == {invited: "new-sub", signed_in: "sub-taken"}


@pytest.fixture
def org_id(channel) -> str:
    user = new_user(channel)
    return user.tenancy.CreateOrganization(tenancy_pb2.CreateOrganizationRequest(name="Heads")).organization.id


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_chain_heads SET last_sequence = 0, last_hash = repeat('0', 64)",
        "DELETE FROM audit_chain_heads",
        "SELECT * FROM audit_chain_heads FOR UPDATE",
    ],
)
def test_the_app_role_cannot_rewind_or_delete_a_chain_head(database, org_id: str, statement: str) -> None:
    with UnitOfWork(database, org_id=org_id) as uow, pytest.raises(DBAPIError, match="permission denied"):
        uow.execute(text(statement))


def test_the_lock_function_reads_only_the_bound_org(database, org_id: str, channel) -> None:
    other = new_user(channel).tenancy.CreateOrganization(tenancy_pb2.CreateOrganizationRequest(name="Other")).organization.id
    with UnitOfWork(database, org_id=org_id) as uow:
        lock = text("SELECT * FROM nobill_lock_audit_head(:org)")
        assert uow.execute(lock, {"org": org_id}).one().last_sequence == 2
        assert uow.execute(lock, {"org": other}).first() is None


@pytest.mark.parametrize(("sequence_offset", "previous"), [(0, "head"), (2, "head"), (1, "forged")])
def test_an_event_that_does_not_extend_the_chain_is_refused(database, org_id: str, sequence_offset: int, previous: str) -> None:
    with UnitOfWork(database, org_id=org_id) as uow:
        head = uow.execute(text("SELECT last_sequence, last_hash FROM audit_chain_heads")).one()
        with pytest.raises(DBAPIError, match="does not extend the chain"):
            uow.execute(
                text(
                    "INSERT INTO audit_events (org_id, sequence, actor_type, actor_id, actor_display, action, target_type, "
                    "target_id, request_id, created_at, previous_hash, hash) VALUES (:org, :seq, 'system', 's', 's', "
                    "'forged', 'x', 'x', 'r', now(), :previous, repeat('f', 64))"
                ),
                {"org": org_id, "seq": head.last_sequence + sequence_offset,
                 "previous": head.last_hash if previous == "head" else "e" * 64},
            )


def test_appending_an_event_advances_the_head(database, org_id: str, channel) -> None:
    with UnitOfWork(database, org_id=org_id) as uow:
        before = uow.execute(text("SELECT last_sequence FROM audit_chain_heads")).scalar_one()
        newest = uow.execute(text("SELECT max(sequence), (array_agg(hash ORDER BY sequence DESC))[1] FROM audit_events")).one()
        head = uow.execute(text("SELECT last_sequence, last_hash FROM audit_chain_heads")).one()
    assert before == newest[0] == head.last_sequence and head.last_hash == newest[1]

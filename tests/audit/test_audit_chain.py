"""The audit log is append-only in the database and its hash chain exposes tampering."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from nobill.v1 import audit_pb2, tenancy_pb2
from support import new_user


@pytest.fixture
def org_with_history(channel):
    owner = new_user(channel)
    org = owner.tenancy.CreateOrganization(tenancy_pb2.CreateOrganizationRequest(name="Chain Co")).organization
    added = owner.tenancy.AddMember(
        tenancy_pb2.AddMemberRequest(org_id=org.id, email=f"m-{org.id.lower()}@example.com", role=3)
    ).member
    owner.tenancy.UpdateMemberRole(tenancy_pb2.UpdateMemberRoleRequest(org_id=org.id, user_id=added.user_id, role=2))
    owner.tenancy.RemoveMember(tenancy_pb2.RemoveMemberRequest(org_id=org.id, user_id=added.user_id))
    return owner, org.id


def _verify(owner, org_id: str) -> audit_pb2.VerifyAuditChainResponse:
    return owner.audit.VerifyAuditChain(audit_pb2.VerifyAuditChainRequest(org_id=org_id))


def test_an_untouched_chain_verifies(org_with_history) -> None:
    owner, org_id = org_with_history
    report = _verify(owner, org_id)
    assert report.valid and report.events_checked == 5 and report.first_broken_sequence == 0


@pytest.mark.parametrize("statement", ["UPDATE audit_events SET action = 'x'", "DELETE FROM audit_events"])
def test_the_database_rejects_update_and_delete_even_for_a_superuser(superuser, org_with_history, statement) -> None:
    _, org_id = org_with_history
    with pytest.raises(errors.InsufficientPrivilege, match="append-only"):
        superuser.execute(f"{statement} WHERE org_id = %s", (org_id,))


def test_the_database_rejects_truncate(superuser, org_with_history) -> None:
    with pytest.raises(errors.InsufficientPrivilege, match="append-only"):
        superuser.execute("TRUNCATE audit_events CASCADE")


def test_the_app_role_has_no_update_or_delete_privilege(superuser) -> None:
    privileges = {
        p for (p,) in superuser.execute(
            "SELECT privilege_type FROM information_schema.role_table_grants "
            "WHERE grantee = 'nobill_app' AND table_name = 'audit_events'"
        ).fetchall()
    }
    assert privileges == {"SELECT", "INSERT"}


def _tamper(superuser: psycopg.Connection, sql: str, params: tuple) -> None:
    """Change audit rows behind the application's back, as a superuser who disables triggers."""
    superuser.execute("SET session_replication_role = replica")
    try:
        superuser.execute(sql, params)
    finally:
        superuser.execute("SET session_replication_role = DEFAULT")


def test_an_edited_event_is_found(superuser, org_with_history) -> None:
    owner, org_id = org_with_history
    _tamper(superuser, "UPDATE audit_events SET after = '{\"role\": \"owner\"}' WHERE org_id = %s AND sequence = 4", (org_id,))
    report = _verify(owner, org_id)
    assert (report.valid, report.first_broken_sequence, report.events_checked) == (False, 4, 3)
    assert "hash" in report.reason


def test_an_edited_event_with_a_recomputed_hash_breaks_the_next_link(superuser, org_with_history) -> None:
    owner, org_id = org_with_history
    _tamper(superuser, "UPDATE audit_events SET hash = repeat('a', 64) WHERE org_id = %s AND sequence = 2", (org_id,))
    report = _verify(owner, org_id)
    assert not report.valid and report.first_broken_sequence == 2


def test_a_deleted_event_is_found(superuser, org_with_history) -> None:
    owner, org_id = org_with_history
    _tamper(superuser, "DELETE FROM audit_events WHERE org_id = %s AND sequence = 3", (org_id,))
    report = _verify(owner, org_id)
    assert (report.valid, report.first_broken_sequence) == (False, 3)
    assert "missing" in report.reason


def test_a_truncated_tail_is_found(superuser, org_with_history) -> None:
    owner, org_id = org_with_history
    _tamper(superuser, "DELETE FROM audit_events WHERE org_id = %s AND sequence = 5", (org_id,))
    report = _verify(owner, org_id)
    assert (report.valid, report.first_broken_sequence) == (False, 5)


def test_concurrent_changes_keep_a_gapless_chain(channel) -> None:
    from concurrent.futures import ThreadPoolExecutor

    owner = new_user(channel)
    org_id = owner.tenancy.CreateOrganization(tenancy_pb2.CreateOrganizationRequest(name="Busy")).organization.id

    def add(index: int) -> None:
        owner.tenancy.AddMember(tenancy_pb2.AddMemberRequest(org_id=org_id, email=f"c{index}-{org_id.lower()}@ex.com", role=3))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(add, range(24)))
    report = _verify(owner, org_id)
    assert report.valid and report.events_checked == 2 + 24

"""Row-level security as the application's role: no org set sees nothing, another org
set sees nothing of this one, and writes into another org are refused."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.exc import DBAPIError

from nobill import ids
from nobill.audit.actors import Actor, ActorType, AuditContext
from nobill.db.unit_of_work import UnitOfWork
from nobill.tenancy import service as tenancy
from nobill.tenancy.tables import memberships, organizations

TABLES = ("organizations", "memberships", "subscriptions", "audit_events", "audit_chain_heads")


def _create_org(database, name: str) -> tuple[str, str]:
    with UnitOfWork(database) as uow:
        user_id = tenancy.provision_user(uow=uow, subject=f"rls-{ids.new_id('usr')}", email=None)
        uow.commit()
    org_id = ids.new_id("org")
    with UnitOfWork(database, org_id=org_id) as uow:
        tenancy.create(uow=uow, context=AuditContext(Actor(ActorType.USER, user_id, "t"), "req"), owner_user_id=user_id, name=name)
        uow.commit()
    return org_id, user_id


@pytest.fixture
def two_orgs(database):
    return _create_org(database, "Tenant A"), _create_org(database, "Tenant B")


def test_connections_run_as_the_app_role(database) -> None:
    with UnitOfWork(database) as uow:
        assert uow.execute(text("SELECT current_user")).scalar_one() == "nobill_app"


def test_no_org_set_sees_no_rows(database, two_orgs) -> None:
    with UnitOfWork(database) as uow:
        for table in TABLES:
            assert uow.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() == 0, table


def test_a_bound_org_sees_only_its_own_rows(database, two_orgs) -> None:
    (org_a, _), (org_b, _) = two_orgs
    with UnitOfWork(database, org_id=org_a) as uow:
        for table in TABLES:
            foreign = uow.execute(text(f"SELECT count(*) FROM {table} WHERE org_id <> :org"), {"org": org_a}).scalar_one()
            assert foreign == 0, table
            own = uow.execute(text(f"SELECT count(*) FROM {table} WHERE org_id = :org"), {"org": org_a}).scalar_one()
            assert own >= 1, table
        # Even asking for the other org by id returns nothing.
        assert uow.execute(select(organizations).where(organizations.c.org_id == org_b)).first() is None


def test_a_bound_org_cannot_write_rows_of_another_org(database, two_orgs) -> None:
    (org_a, user_a), (org_b, _) = two_orgs
    with UnitOfWork(database, org_id=org_a) as uow:
        with pytest.raises(DBAPIError, match="row-level security"):
            uow.execute(
                insert(memberships).values(
                    org_id=org_b, user_id=user_a, role="owner", created_at=dt.datetime.now(dt.timezone.utc)
                )
            )


def test_updates_and_deletes_cannot_reach_another_org(database, two_orgs) -> None:
    (org_a, _), (org_b, _) = two_orgs
    with UnitOfWork(database, org_id=org_a) as uow:
        assert uow.execute(text("UPDATE organizations SET name = 'x' WHERE org_id = :o"), {"o": org_b}).rowcount == 0
        assert uow.execute(text("DELETE FROM memberships WHERE org_id = :o"), {"o": org_b}).rowcount == 0
        uow.commit()
    with UnitOfWork(database, org_id=org_b) as uow:
        assert tenancy.get(uow=uow).name == "Tenant B"
        assert len(tenancy.list_members(uow=uow, page_size=10, page_token="")[0]) == 1


def test_the_tenant_setting_does_not_leak_into_the_next_transaction(database, two_orgs) -> None:
    (org_a, _), _ = two_orgs
    with UnitOfWork(database, org_id=org_a) as uow:
        assert uow.execute(text("SELECT count(*) FROM organizations")).scalar_one() == 1
        uow.commit()
    # The pool hands the same connection back; the setting was transaction-local.
    with UnitOfWork(database) as uow:
        assert uow.execute(text("SELECT current_setting('nobill.org_id', true)")).scalar_one() in ("", None)
        assert uow.execute(text("SELECT count(*) FROM organizations")).scalar_one() == 0


def test_a_user_bound_unit_of_work_reads_only_that_users_orgs_and_cannot_write(database, two_orgs) -> None:
    (org_a, user_a), (org_b, _) = two_orgs
    with UnitOfWork(database, user_id=user_a) as uow:
        assert uow.execute(select(organizations.c.org_id)).scalars().all() == [org_a]
        assert uow.execute(text("UPDATE organizations SET name = 'x'")).rowcount == 0


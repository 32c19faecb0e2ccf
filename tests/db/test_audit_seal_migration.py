"""Migration 0007 on a database with history: an org whose chain starts before audit keys
(migration 0001) and goes on keyed (0002-0005) has an unsealed head after the upgrade, so
it does not verify until `nobill audit seal` (audit.seal_chain) seals it once, keyed
from one past its last unkeyed event; the application then keeps it sealed. It reverses."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import psycopg
from alembic import command

from nobill.audit import keys
from nobill.audit import service as audit
from nobill.audit.actors import Actor, ActorType, AuditContext
from nobill.config import Settings
from nobill.db.database import connect
from nobill.db.migrate import alembic_config, upgrade
from nobill.db.unit_of_work import UnitOfWork
from support import TEST_AUDIT_KEY, with_database

ORG = "org_from_before_keys"
SYSTEM = Actor(ActorType.SYSTEM, "migration-test", "Migration test")


def _event(sequence: int, previous_hash: str) -> audit.AuditEvent:
    return audit.AuditEvent(
        org_id=ORG, sequence=sequence, actor=SYSTEM, action="organization.renamed", target_type="organization",
        target_id=ORG, before=None, after={"name": f"Name {sequence}"}, request_id=f"req-{sequence}",
        created_at=dt.datetime(2026, 1, sequence, tzinfo=dt.timezone.utc), previous_hash=previous_hash, hash="",
    )


def _insert(connection: psycopg.Connection, event: audit.AuditEvent, *, keyed: bool) -> None:
    columns = ("org_id, sequence, actor_type, actor_id, actor_display, action, target_type, target_id, after, "
               "request_id, created_at, previous_hash, hash")
    values = [event.org_id, event.sequence, event.actor.type.value, event.actor.id, event.actor.display_name,
              event.action, event.target_type, event.target_id, json.dumps(event.after), event.request_id,
              event.created_at, event.previous_hash, event.hash]
    if keyed:
        columns += ", key_id"
        values.append(event.key_id)
    connection.execute(
        f"INSERT INTO audit_events ({columns}) VALUES ({', '.join(['%s'] * len(values))})", values
    )


def test_0007_leaves_old_chains_unsealed_until_sealed_once_and_reverses(postgres_admin_url: str) -> None:
    name = f"nobill_migrate_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(postgres_admin_url, name)
    engine_url = Settings.from_env({"NOBILL_DATABASE_URL": url}).database_url
    keyring = keys.from_settings(Settings.from_env({"NOBILL_AUDIT_KEY": TEST_AUDIT_KEY}).audit_keys)
    installed = keys._installed
    keys.install(keyring)
    database = None
    try:
        upgrade(engine_url, revision="0001")  # before audit keys: plain SHA-256
        first = _event(1, audit.GENESIS_HASH)
        first = audit.AuditEvent(**{**first.__dict__, "hash": audit.compute_hash(first)})
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("INSERT INTO organizations VALUES (%s, 'Old Co', now(), 'usr_old')", (ORG,))
            connection.execute("INSERT INTO audit_chain_heads VALUES (%s, 1, %s)", (ORG, first.hash))
            _insert(connection, first, keyed=False)

        upgrade(engine_url, revision="0005")  # keyed events, heads advanced by the trigger
        second = audit._signed(_event(2, first.hash), keyring)
        assert second.keyed_from is None
        with psycopg.connect(url, autocommit=True) as connection:
            _insert(connection, second, keyed=True)

        upgrade(engine_url)
        database = connect(engine_url, pool_size=1)
        with UnitOfWork(database, org_id=ORG) as uow:
            before = audit.verify_chain(uow=uow)
        assert not before.valid and "not sealed" in before.reason, before.reason

        with UnitOfWork(database, org_id=ORG) as uow:
            sealed = audit.seal_chain(uow=uow)
            uow.commit()
        assert (sealed.sealed, sealed.keyed_from) == (True, 2), sealed.message

        with UnitOfWork(database, org_id=ORG) as uow:
            audit.record(uow=uow, context=AuditContext(SYSTEM, "req-3"), action="organization.renamed",
                         target_type="organization", target_id=ORG, after={"name": "Sealed Co"})
            uow.commit()
        with UnitOfWork(database, org_id=ORG) as uow:
            after = audit.verify_chain(uow=uow)
            again = audit.seal_chain(uow=uow)
        assert (after.valid, after.events_checked) == (True, 3), after.reason
        assert again.sealed and again.message == "already sealed, keyed from event 2"
        with psycopg.connect(url, autocommit=True) as connection:
            assert connection.execute(
                "SELECT keyed_from_sequence FROM audit_events WHERE org_id = %s ORDER BY sequence", (ORG,)
            ).fetchall() == [(None,), (None,), (2,)]
        database.dispose()
        database = None

        command.downgrade(alembic_config(engine_url), "0005")
        with psycopg.connect(url, autocommit=True) as connection:
            columns = {row[0] for row in connection.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'audit_chain_heads'"
            )}
            assert columns == {"org_id", "last_sequence", "last_hash"}
            assert connection.execute("SELECT count(*) FROM audit_events").fetchone()[0] == 3
    finally:
        keys._installed = installed
        if database is not None:
            database.dispose()
        with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

"""Migration 0005 changes the collation of usage_events' key columns on a database that
already holds partitions and rows: data, partitions and tenant policies all survive, and
it reverses."""

from __future__ import annotations

import uuid

import psycopg
from alembic import command

from nobill.config import Settings
from nobill.db.migrate import alembic_config, upgrade
from support import with_database


def _collations(connection: psycopg.Connection) -> set[tuple[str, str]]:
    return set(connection.execute(
        """SELECT table_name, coalesce(collation_name, 'default') FROM information_schema.columns
           WHERE column_name = 'idempotency_key' AND table_name LIKE 'usage_events%'"""
    ).fetchall())


def _policies(connection: psycopg.Connection) -> set[str]:
    return {row[0] for row in connection.execute(
        "SELECT tablename FROM pg_policies WHERE policyname = 'tenant_isolation' AND tablename LIKE 'usage_events%'"
    ).fetchall()}


def test_0005_recollates_partitions_with_rows_and_keeps_their_tenant_policies(postgres_admin_url: str) -> None:
    name = f"nobill_migrate_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(postgres_admin_url, name)
    engine_url = Settings.from_env({"NOBILL_DATABASE_URL": url}).database_url
    try:
        upgrade(engine_url, revision="0004")
        with psycopg.connect(url, autocommit=True) as connection:
            window = connection.execute(
                "SELECT substring(inhrelid::regclass::text from 15)::int FROM pg_inherits "
                "WHERE inhparent = 'usage_events'::regclass ORDER BY 1 DESC LIMIT 1"
            ).fetchone()[0]
            for org in ("org_a", "org_b"):
                connection.execute(
                    "INSERT INTO usage_events VALUES (%s, 'key-1', %s, 'api_requests', 1, now(), now(), NULL)", (org, window)
                )
            partitions = _policies(connection) - {"usage_events"}
            assert partitions, "0004 creates partitions ahead"

        upgrade(engine_url)
        with psycopg.connect(url, autocommit=True) as connection:
            assert {collation for _, collation in _collations(connection)} == {"C"}
            assert _policies(connection) == {"usage_events", *partitions}
            assert connection.execute("SELECT count(*) FROM usage_events").fetchone()[0] == 2
            # The policy still isolates tenants for the app role.
            connection.execute("SET ROLE nobill_app")
            connection.execute("SELECT set_config('nobill.org_id', 'org_a', false)")
            assert connection.execute("SELECT org_id FROM usage_events").fetchall() == [("org_a",)]

        command.downgrade(alembic_config(engine_url), "0004")
        with psycopg.connect(url, autocommit=True) as connection:
            assert {collation for _, collation in _collations(connection)} == {"default"}
            assert _policies(connection) == {"usage_events", *partitions}
    finally:
        with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

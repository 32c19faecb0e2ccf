"""Structural guard: every business table is tenant-scoped the same way (ARCHITECTURE §1)."""

from __future__ import annotations

import psycopg

from nobill.db.base import GLOBAL_TABLES


def _tables(connection: psycopg.Connection) -> list[str]:
    rows = connection.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
    ).fetchall()
    return sorted(name for (name,) in rows)


def _business_tables(connection: psycopg.Connection) -> list[str]:
    return [name for name in _tables(connection) if name not in GLOBAL_TABLES]


def test_the_schema_has_business_tables(superuser: psycopg.Connection) -> None:
    assert {"organizations", "memberships", "subscriptions", "audit_events"} <= set(_business_tables(superuser))


def test_every_business_table_has_org_id_first_in_its_primary_key(superuser: psycopg.Connection) -> None:
    missing = []
    for table in _business_tables(superuser):
        columns = [
            name
            for (name,) in superuser.execute(
                """SELECT a.attname FROM pg_index i
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                   WHERE i.indrelid = %s::regclass AND i.indisprimary""",
                (table,),
            ).fetchall()
        ]
        if "org_id" not in columns:
            missing.append(table)
    assert missing == [], f"tables without org_id in their primary key: {missing}"


def test_every_unique_constraint_of_a_business_table_includes_org_id(superuser: psycopg.Connection) -> None:
    offenders = superuser.execute(
        """SELECT c.conrelid::regclass::text, c.conname FROM pg_constraint c
           JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace
           WHERE n.nspname = 'public' AND c.contype IN ('u', 'p')
             AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                             WHERE a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey) AND a.attname = 'org_id')"""
    ).fetchall()
    offenders = [(table, name) for table, name in offenders if table not in GLOBAL_TABLES]
    assert offenders == [], f"unique constraints without org_id: {offenders}"
    # Unique indexes made without a constraint count too.
    indexes = superuser.execute(
        """SELECT t.relname, i.relname FROM pg_index x
           JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
           JOIN pg_namespace n ON n.oid = t.relnamespace
           WHERE n.nspname = 'public' AND x.indisunique
             AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                             WHERE a.attrelid = t.oid AND a.attnum = ANY(x.indkey) AND a.attname = 'org_id')"""
    ).fetchall()
    assert [(t, i) for t, i in indexes if t not in GLOBAL_TABLES] == []


def test_foreign_keys_between_business_tables_include_org_id(superuser: psycopg.Connection) -> None:
    rows = superuser.execute(
        """SELECT c.conrelid::regclass::text, c.confrelid::regclass::text, c.conname,
                  ARRAY(SELECT a.attname FROM pg_attribute a
                        WHERE a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey))::text[]
           FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
           JOIN pg_namespace n ON n.oid = t.relnamespace
           WHERE n.nspname = 'public' AND c.contype = 'f'"""
    ).fetchall()
    assert rows, "expected foreign keys"
    offenders = [
        name for table, target, name, columns in rows if target not in GLOBAL_TABLES and "org_id" not in columns
    ]
    assert offenders == [], f"foreign keys to business tables without org_id: {offenders}"


def test_every_business_table_has_row_level_security_enabled_and_forced(superuser: psycopg.Connection) -> None:
    rows = superuser.execute(
        """SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
                  (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"""  # 'p': partitioned parents (usage_events)
    ).fetchall()
    state = {name: (enabled, forced, policies) for name, enabled, forced, policies in rows}
    unsafe = [
        name
        for name in _business_tables(superuser)
        if state[name][0] is not True or state[name][1] is not True or state[name][2] == 0
    ]
    assert unsafe == [], f"business tables without enabled+forced RLS and a policy: {unsafe}"


def test_the_app_role_cannot_bypass_row_level_security(superuser: psycopg.Connection) -> None:
    row = superuser.execute(
        "SELECT rolsuper, rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = 'nobill_app'"
    ).fetchone()
    assert row == (False, False, False)
    owned = superuser.execute(
        # Temporary tables (a session's COPY staging for usage batches) vanish with the session.
        "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner "
        "WHERE r.rolname = 'nobill_app' AND c.relpersistence <> 't'"
    ).fetchone()
    assert owned == (0,), "the app role must own nothing"


# A column that holds what a tenant sent or received (a webhook body, a JSON document, bytes).
_BODY_COLUMNS = """SELECT c.table_name, c.column_name FROM information_schema.columns c
                   JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
                   WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
                     AND (c.data_type IN ('json', 'jsonb', 'bytea') OR c.column_name ~ '(payload|body)')"""


def test_every_table_holding_a_payload_or_body_is_org_scoped_under_forced_rls(superuser: psycopg.Connection) -> None:
    forced = {
        name for (name,) in superuser.execute(
            """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'public' AND c.relrowsecurity AND c.relforcerowsecurity
                 AND EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid)"""
        ).fetchall()
    }
    holding = superuser.execute(_BODY_COLUMNS).fetchall()
    assert ("stripe_events", "payload") in holding, "expected the webhook inbox's bodies"
    offenders = sorted({(table, column) for table, column in holding if table in GLOBAL_TABLES or table not in forced})
    assert offenders == [], f"payload/body columns outside forced row-level security: {offenders}"


def test_global_routing_tables_hold_ids_kinds_and_times_only(superuser: psycopg.Connection) -> None:
    routing = GLOBAL_TABLES - {"users", "alembic_version"}
    rows = superuser.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'public'"
    ).fetchall()
    allowed = {"text", "timestamp with time zone", "integer", "bigint", "boolean"}
    offenders = [(table, column, kind) for table, column, kind in rows if table in routing and kind not in allowed]
    assert offenders == [], f"global routing tables may hold ids, kinds, counts and times only: {offenders}"

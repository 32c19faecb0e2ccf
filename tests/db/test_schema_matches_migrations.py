"""One schema: the SQLAlchemy tables are the source, and the migrations build exactly them.

Generic on purpose: every table declared in any `nobill/<domain>/tables.py` and every
revision in migrations/versions/ is covered, including ones added later. Objects the
migrations create without a table declaring them must be listed, with a reason, in
`nobill.db.schema.EXCLUSIONS`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, pool

from nobill.config import Settings
from nobill.db.schema import EXCLUSIONS, excluded, include_object, target_metadata
from support import with_database


def _engine_url(url: str) -> str:
    return Settings.from_env({"NOBILL_DATABASE_URL": url}).database_url


def test_autogenerate_finds_no_difference_between_tables_and_migrations(database_url: str) -> None:
    engine = create_engine(_engine_url(database_url), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={"include_object": include_object, "compare_type": True, "compare_server_default": True},
            )
            differences = compare_metadata(context, target_metadata())
    finally:
        engine.dispose()
    assert differences == [], "tables and migrations differ (fix the table or add a revision):\n" + "\n".join(
        map(str, differences)
    )


@pytest.fixture
def database_from_tables(postgres_admin_url: str) -> Iterator[str]:
    """A scratch database built by `metadata.create_all()`, straight from the tables."""
    name = f"nobill_tables_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = with_database(postgres_admin_url, name)
    engine = create_engine(_engine_url(url), poolclass=pool.NullPool)
    try:
        target_metadata().create_all(engine)
        yield url
    finally:
        engine.dispose()
        with psycopg.connect(postgres_admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _check_constraints(url: str) -> dict[tuple[str, str], str]:
    """(table, constraint) -> definition as PostgreSQL prints it, for every CHECK constraint."""
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            """SELECT c.relname, k.conname, pg_get_constraintdef(k.oid)
               FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE k.contype = 'c' AND n.nspname = 'public'"""
        ).fetchall()
    return {(table, name): definition for table, name, definition in rows if not excluded("table", table)}


def test_check_constraints_match_between_tables_and_migrations(database_url: str, database_from_tables: str) -> None:
    # Alembic's autogenerate cannot see CHECK constraints; PostgreSQL prints both sides'
    # definitions in one canonical form, so they are compared there.
    migrated = _check_constraints(database_url)
    declared = _check_constraints(database_from_tables)
    assert migrated, "expected at least memberships_role_check"
    assert migrated == declared


def test_every_exclusion_says_why() -> None:
    for exclusion in EXCLUSIONS:
        assert exclusion.why.strip() and exclusion.kind and exclusion.pattern


@pytest.fixture
def migrations_with_a_newer_revision(tmp_path, monkeypatch):
    """A copy of the shipped migrations plus one revision after the current head, as the
    next release would ship."""
    import shutil

    from nobill.db import migrate

    copy = tmp_path / "migrations"
    shutil.copytree(migrate.migrations_dir(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    head = migrate.head_revision()
    (copy / "versions" / "9001_next_release.py").write_text(
        f'"""Next release."""\nrevision = "9001"\ndown_revision = "{head}"\nbranch_labels = None\ndepends_on = None\n\n\n'
        "def upgrade() -> None:\n    pass\n\n\ndef downgrade() -> None:\n    pass\n"
    )
    monkeypatch.setattr(migrate, "migrations_dir", lambda: copy)
    return copy


def test_a_database_behind_the_latest_revision_is_refused(database_url: str, migrations_with_a_newer_revision) -> None:
    from nobill.db.migrate import head_revision, require_latest_schema
    from nobill.errors import ConfigError

    assert head_revision() == "9001"
    with pytest.raises(ConfigError) as refused:
        require_latest_schema(database_url)
    assert refused.value.setting == "NOBILL_DATABASE_URL"
    assert "this release needs 9001; run `nobill migrate`" in refused.value.problem


def test_a_draft_revision_of_an_unchanged_schema_has_nothing_to_do(database_url: str, tmp_path, monkeypatch) -> None:
    import shutil

    from nobill.db import migrate

    copy = tmp_path / "migrations"
    shutil.copytree(migrate.migrations_dir(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(migrate, "migrations_dir", lambda: copy)
    head = migrate.head_revision()
    path = migrate.draft_revision(_engine_url(database_url), "nothing changed")
    text = path.read_text()
    assert path.parent == copy / "versions" and f'down_revision = "{head}"' in text.replace("'", '"')
    assert "op." not in text.split("def upgrade", 1)[1].split("def downgrade", 1)[0]


def _collations(url: str) -> dict[tuple[str, str], str]:
    """(table, column) -> collation, for every column with one other than the database's."""
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            """SELECT table_name, column_name, collation_name FROM information_schema.columns
               WHERE table_schema = 'public' AND collation_name IS NOT NULL"""
        ).fetchall()
    return {(table, column): collation for table, column, collation in rows if not excluded("table", table)}


def test_column_collations_match_between_tables_and_migrations(database_url: str, database_from_tables: str) -> None:
    # Alembic's autogenerate does not compare collations either.
    migrated = _collations(database_url)
    assert migrated.get(("usage_events", "idempotency_key")) == "C"
    assert migrated == _collations(database_from_tables)

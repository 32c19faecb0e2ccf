"""Alembic environment: runs as the migrating (owner) login, never as the app role.

`target_metadata` is the schema the code declares (nobill/db/schema.py), so
`alembic revision --autogenerate` drafts a revision from a change to the tables."""

from alembic import context
from sqlalchemy import create_engine, pool

from nobill.db.schema import include_object, target_metadata

config = context.config

# Comparing (autogenerate) needs the tables. Applying revisions does not get them: with a
# target metadata Alembic would apply the tables' naming convention to names a revision
# spells out (a CHECK named "memberships_role_check" would become
# "memberships_memberships_role_check_check"), so revisions run exactly as written.
APPLYING = bool(config.attributes.get("applying_revisions"))


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "nobill.db.migrate sets sqlalchemy.url"
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            transaction_per_migration=True,
            target_metadata=None if APPLYING else target_metadata(),
            include_object=include_object,
            compare_type=True,
            compare_server_default=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run `nobill migrate`")
run_migrations_online()

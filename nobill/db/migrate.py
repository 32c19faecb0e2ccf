"""Apply Alembic migrations (`nobill migrate`) and check that a database is at the latest
revision (`nobill serve` and `nobill worker` refuse to run otherwise).

The migrations ship inside the package as `nobill.migrations` (the top-level migrations/
directory in a checkout), so an installed wheel can migrate without the source tree."""

from __future__ import annotations

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from nobill.errors import ConfigError


def migrations_dir() -> Path:
    import nobill.migrations

    return Path(nobill.migrations.__file__).resolve().parent


def alembic_config(url: str, *, app_role: str = "nobill_app") -> Config:
    migrations = migrations_dir()
    # Revisions import shared helpers (migrations/rls.py) as a top-level module.
    if str(migrations) not in sys.path:
        sys.path.insert(0, str(migrations))
    config = Config()
    config.set_main_option("script_location", str(migrations))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["app_role"] = app_role
    return config


def upgrade(url: str, *, app_role: str = "nobill_app", revision: str = "head") -> None:
    config = alembic_config(url, app_role=app_role)
    config.attributes["applying_revisions"] = True
    command.upgrade(config, revision)


def draft_revision(url: str, message: str) -> Path:
    """Write a new revision drafted by autogenerate from the difference between the tables
    and the database at `url` (which must be at the latest revision); returns its path."""
    config = alembic_config(url)
    number = f"{int(head_revision()) + 1:04d}"
    script = command.revision(config, message=message, autogenerate=True, rev_id=number)
    assert script is not None and not isinstance(script, list)
    return Path(script.path)


def head_revision() -> str:
    """The latest revision this release knows."""
    heads = ScriptDirectory.from_config(alembic_config("postgresql://")).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"migrations have {len(heads)} heads ({', '.join(heads)}); merge them into one")
    return heads[0]


def current_revision(url: str) -> str | None:
    """The revision the database is at (None: never migrated). Raises ConfigError naming
    NOBILL_DATABASE_URL when the database cannot be reached."""
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
    try:
        with psycopg.connect(dsn, connect_timeout=5, application_name="nobill") as connection:
            exists = connection.execute("SELECT to_regclass('public.alembic_version') IS NOT NULL").fetchone()
            if not exists or not exists[0]:
                return None
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except psycopg.OperationalError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise ConfigError(
            "NOBILL_DATABASE_URL", f"cannot reach PostgreSQL ({reason}); check the URL and that the server is up"
        ) from None
    return row[0] if row else None


def require_latest_schema(url: str) -> None:
    """Refuse to run against a database that is not at the latest revision: every call
    would fail on a missing table or column."""
    current, head = current_revision(url), head_revision()
    if current == head:
        return
    if current is None:
        raise ConfigError("NOBILL_DATABASE_URL", "the database has no NOBill schema yet; run `nobill migrate`")
    known = ScriptDirectory.from_config(alembic_config("postgresql://"))
    try:
        known.get_revision(current)
    except Exception:
        raise ConfigError(
            "NOBILL_DATABASE_URL",
            f"the database is at revision {current}, which this release does not know (latest: {head}); "
            "run the release that migrated it",
        ) from None
    raise ConfigError(
        "NOBILL_DATABASE_URL", f"the database is at revision {current}, this release needs {head}; run `nobill migrate`"
    )

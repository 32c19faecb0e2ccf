"""Engine and connections. Every application connection runs as the app role, which
owns nothing and cannot bypass row-level security."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from nobill import metrics
from nobill.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class Database:
    engine: Engine
    app_role: str
    # What this database added to the pool-limit gauge (connect() sets it): dispose takes
    # back exactly that, once, so a Database built by hand or disposed twice leaves the
    # process's gauge right.
    counted_connections: int = 0

    def dispose(self) -> None:
        self.engine.dispose()
        metrics.DB_POOL_LIMIT.dec(self.counted_connections)
        self.counted_connections = 0


def connect(url: str, *, app_role: str = "nobill_app", pool_size: int = 20) -> Database:
    """An engine whose connections switch to `app_role`; checks that role cannot bypass RLS."""
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=10,
        pool_recycle=1800,
        # NOTE: transactions are opened and ended by the unit of work with explicit
        # BEGIN/COMMIT/ROLLBACK (BEGIN travels with the tenant binding in one round trip),
        # so the driver runs in autocommit and the pool need not roll back on check-in.
        isolation_level="AUTOCOMMIT",
        pool_reset_on_return=None,
        connect_args={"application_name": "nobill", "connect_timeout": 5},
    )

    @event.listens_for(engine, "connect")
    def _switch_role(dbapi_connection, _record):  # noqa: ANN001 - SQLAlchemy callback
        # NOTE: the login role may be a superuser (dev, CI). SET ROLE makes every statement
        # run as the app role, so row-level security applies to it.
        dbapi_connection.autocommit = True
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f'SET ROLE "{app_role}"')

    # Pool use, for the metrics endpoint: a gauge moved on each checkout and check-in.
    event.listen(engine, "checkout", lambda *_: metrics.DB_POOL_IN_USE.inc())
    event.listen(engine, "checkin", lambda *_: metrics.DB_POOL_IN_USE.dec())
    database = Database(engine=engine, app_role=app_role)
    check_app_role(database)
    database.counted_connections = 2 * pool_size  # pool_size plus max_overflow
    metrics.DB_POOL_LIMIT.inc(database.counted_connections)
    return database


def check_app_role(database: Database) -> None:
    """Refuse to run as a role that would see every tenant's rows."""
    try:
        with database.engine.connect() as connection:
            row = connection.execute(
                text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            ).one_or_none()
            quoting = connection.execute(text("SHOW standard_conforming_strings")).scalar_one()
    except OperationalError as error:
        if "does not exist" in str(error) and database.app_role in str(error):
            raise ConfigError(
                "NOBILL_DB_APP_ROLE", f"role {database.app_role!r} does not exist; run `nobill migrate` first"
            ) from None
        reason = str(error.orig).strip().splitlines()[-1] if str(error.orig).strip() else type(error.orig).__name__
        raise ConfigError(
            "NOBILL_DATABASE_URL", f"cannot reach PostgreSQL ({reason}); check the URL and that the server is up"
        ) from None
    except Exception as error:  # psycopg raises ProgrammingError subclasses for SET ROLE failures
        if database.app_role in str(error):
            raise ConfigError(
                "NOBILL_DB_APP_ROLE",
                f"cannot switch to role {database.app_role!r} ({str(error).splitlines()[0]}); run `nobill migrate` "
                "and grant the role to the login user",
            ) from None
        raise
    if quoting != "on":
        # The unit of work quotes tenant ids itself and relies on it.
        raise ConfigError("NOBILL_DATABASE_URL", "the server must run with standard_conforming_strings = on")
    if row is None or row.rolsuper or row.rolbypassrls:
        raise ConfigError("NOBILL_DB_APP_ROLE", f"role {database.app_role!r} must not be a superuser or bypass RLS")

"""The unit of work: one transaction, bound to one tenant, the ONE place that decides it.

    with UnitOfWork(database, org_id=org_id) as uow:
        ...                       # every statement sees only org_id's rows (RLS)
        uow.commit()              # without this, the transaction rolls back
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from psycopg.pq import TransactionStatus
from psycopg.rows import namedtuple_row
from sqlalchemy.engine import Connection, Result
from sqlalchemy.exc import OperationalError
from sqlalchemy.sql import Executable

from nobill.db.compiled import CompiledQuery
from nobill.db.database import Database
from nobill.db.errors import is_connection_error
from nobill.errors import Unavailable

log = logging.getLogger(__name__)

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


# The tenant binding, as bound parameters. set_config(..., is_local => true) lasts until
# the transaction ends, so a pooled connection never carries one tenant's setting into the
# next transaction.
_BIND = "SELECT set_config('nobill.org_id', %(org_id)s, true), set_config('nobill.user_id', %(user_id)s, true)"

# The binding plus the caller's role in the org, in one statement. The role is read in a
# subquery correlated with the binding so it runs after it (row-level security on
# memberships needs the org set). FOR SHARE holds the caller's membership row until the
# transaction ends: a concurrent removal or role change waits for this call to finish, and
# a call that starts after a removal committed finds no row (see nobill.auth.authorization).
_BIND_AND_ROLE = (
    "SELECT (SELECT m.role FROM memberships m WHERE m.org_id = bound.org_id AND m.user_id = %(member)s{lock})"
    " FROM (SELECT set_config('nobill.org_id', %(org_id)s, true) AS org_id,"
    " set_config('nobill.user_id', %(user_id)s, true) AS user_id) AS bound"
)
_BIND_AND_ROLE_LOCKED = _BIND_AND_ROLE.format(lock=" FOR SHARE")
_BIND_AND_ROLE_UNLOCKED = _BIND_AND_ROLE.format(lock="")


class UnitOfWork:
    """A transaction scoped to `org_id` (reads and writes of that org's rows), or to
    `user_id` (read-only view of that user's memberships across orgs), or to neither
    (only global tables such as users are visible).

    `member_of_org`: a user id whose role in `org_id` is read in the same round trip as
    BEGIN and the tenant binding (the per-call permission check), see `member_role`.
    `lock_member`: also hold that membership row (FOR SHARE) until the transaction ends,
    so role changes and removals serialise with this call (calls that change something)."""

    def __init__(
        self,
        database: Database,
        *,
        org_id: str | None = None,
        user_id: str | None = None,
        member_of_org: str | None = None,
        lock_member: bool = False,
    ) -> None:
        assert member_of_org is None or org_id, "a membership lookup needs an org"
        self.database = database
        self.org_id = org_id
        self.user_id = user_id
        self.member_role: str | None = None
        self.member_of_org = member_of_org
        self.lock_member = lock_member
        self.connection: Connection | None = None
        self._after_commit: list[Callable[[], Any]] = []
        self._committed = False

    def __enter__(self) -> UnitOfWork:
        # BEGIN and the binding (with the optional role lookup) go out together in pipeline
        # mode: one round trip, with the ids as bound parameters, never spliced into SQL.
        parameters = {"org_id": self.org_id or "", "user_id": self.user_id or "", "member": self.member_of_org}
        if self.member_of_org:
            statement = _BIND_AND_ROLE_LOCKED if self.lock_member else _BIND_AND_ROLE_UNLOCKED
        else:
            statement = _BIND
        # A pooled connection may have died since its last use (server restart, failover).
        # Nothing has happened yet, so BEGIN is safe to retry once on a fresh connection.
        for attempt in (1, 2):
            try:
                self.connection = self.database.engine.connect()
                driver = self._driver()
                with driver.cursor() as cursor:
                    with driver.pipeline():
                        cursor.execute("BEGIN")
                        cursor.execute(statement, parameters)
                    if self.member_of_org:
                        row = cursor.fetchone()
                        self.member_role = row[0] if row else None
                return self
            except OperationalError as error:  # SQLAlchemy could not check a connection out
                self._close()
                raise Unavailable("the database is unavailable; retry shortly") from error
            except Exception as error:
                self._discard_connection()
                if not _is_connection_error(error):
                    raise
                if attempt == 2:
                    raise Unavailable("the database is unavailable; retry shortly") from error
                log.warning("database connection lost; retrying on a new pool", extra={"error": str(error)})
                # The other pooled connections most likely died with this one (restart,
                # failover): start a new pool rather than try them one by one.
                self.database.engine.dispose(close=False)
        raise AssertionError("unreachable")

    def __exit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        try:
            if not self._committed and self.connection is not None:
                self._driver().execute("ROLLBACK")
        except Exception:
            log.warning("rollback failed; discarding the connection", exc_info=True)
            self._discard_connection()
        finally:
            self._close()

    def _driver(self) -> Any:
        assert self.connection is not None, "unit of work used outside its `with` block"
        return self.connection.connection.driver_connection

    def _discard_connection(self) -> None:
        """Close the connection for good: the pool must not hand out a broken one again."""
        if self.connection is not None:
            try:
                self.connection.invalidate()
            finally:
                self._close()

    def _close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def execute(self, statement: Executable, parameters: Any = None) -> Result:
        assert self.connection is not None, "unit of work used outside its `with` block"
        return self.connection.execute(statement, parameters)

    def fetch_one(self, query: CompiledQuery, parameters: dict[str, Any]) -> Any | None:
        """The first row of a compiled query (attributes named like its columns), or None."""
        with self._driver().cursor(row_factory=namedtuple_row) as cursor:
            cursor.execute(query.sql, parameters)
            return cursor.fetchone()

    def copy_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Bulk-load rows with COPY ... FROM STDIN, in this transaction and under its tenant
        binding (row-level security checks every row against the bound org)."""
        for name in (table, *columns):
            if not _IDENTIFIER.fullmatch(name):
                raise ValueError(f"not a plain SQL identifier: {name!r}")
        with self._driver().cursor() as cursor:
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)

    def copy_text(self, table: str, columns: Sequence[str], data: bytes) -> None:
        """COPY ... FROM STDIN of rows already in COPY's text format (tab-separated, one
        row a line, special characters escaped by the caller); same binding as copy_rows."""
        for name in (table, *columns):
            if not _IDENTIFIER.fullmatch(name):
                raise ValueError(f"not a plain SQL identifier: {name!r}")
        with self._driver().cursor() as cursor:
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                copy.write(data)

    def ensure_temp_table(self, name: str, columns_sql: str) -> None:
        """Create a per-connection staging table (rows vanish at commit) unless this
        connection already has it."""
        if not _IDENTIFIER.fullmatch(name):
            raise ValueError(f"not a plain SQL identifier: {name!r}")
        assert self.connection is not None, "unit of work used outside its `with` block"
        created = self.connection.info.setdefault("nobill_temp_tables", set())
        if name not in created:
            self._driver().execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {name} ({columns_sql}) ON COMMIT DELETE ROWS"
            )
            created.add(name)

    def after_commit(self, callback: Callable[[], Any]) -> None:
        """Run `callback` once the transaction has committed (e.g. enqueue a job)."""
        self._after_commit.append(callback)

    def commit(self) -> None:
        driver = self._driver()
        if driver.info.transaction_status == TransactionStatus.INERROR:
            # PostgreSQL would answer COMMIT with a silent ROLLBACK; never acknowledge that.
            raise RuntimeError("commit of a failed transaction; an earlier statement's error was swallowed")
        try:
            driver.execute("COMMIT")
        except Exception as error:
            if _is_connection_error(error):
                self._discard_connection()
                # NOTE: if the connection broke after the server received COMMIT, the change
                # may have been saved; callers retry with the same idempotency key.
                raise Unavailable("the database connection was lost during commit; retry") from error
            raise
        self._committed = True
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # the change is committed; a failed follow-up must not undo the answer
                log.exception("after-commit callback failed", extra={"org_id": self.org_id})

    def release(self) -> None:
        """End the unit of work now (rolled back unless committed) and hand its connection
        back to the pool, before slow work outside any transaction such as a call to Stripe
        (docs/ARCHITECTURE.md, "Calling Stripe"). It cannot run statements afterwards; the
        end of its `with` block then does nothing more."""
        if self.connection is None:
            return
        try:
            if not self._committed:
                self._driver().execute("ROLLBACK")
        except Exception:
            log.warning("rollback failed; discarding the connection", exc_info=True)
            self._discard_connection()
        finally:
            self._close()

    @property
    def committed(self) -> bool:
        return self._committed


@contextmanager
def transaction(database: Database, **binding: Any) -> Iterator[UnitOfWork]:
    """A unit of work that commits when the block ends without an exception (and rolls
    back otherwise): the caller never commits itself."""
    with UnitOfWork(database, **binding) as uow:
        yield uow
        if not uow.committed:
            uow.commit()


def _is_connection_error(error: BaseException) -> bool:
    return is_connection_error(error)

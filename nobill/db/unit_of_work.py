"""The unit of work: one transaction, bound to one tenant, the ONE place that decides it.

    with UnitOfWork(database, org_id=org_id) as uow:
        ...                       # every statement sees only org_id's rows (RLS)
        uow.commit()              # without this, the transaction rolls back
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Result
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.sql import Executable

from nobill.db.database import Database
from nobill.errors import Unavailable

log = logging.getLogger(__name__)

# NOTE: set_config(..., is_local => true) lasts until the transaction ends, so a pooled
# connection never carries one tenant's setting into the next transaction.
_BIND_TENANT = text("SELECT set_config('nobill.org_id', :org_id, true), set_config('nobill.user_id', :user_id, true)")


class UnitOfWork:
    """A transaction scoped to `org_id` (reads and writes of that org's rows), or to
    `user_id` (read-only view of that user's memberships across orgs), or to neither
    (only global tables such as users are visible)."""

    def __init__(self, database: Database, *, org_id: str | None = None, user_id: str | None = None) -> None:
        self.database = database
        self.org_id = org_id
        self.user_id = user_id
        self.connection: Connection | None = None
        self._after_commit: list[Callable[[], Any]] = []
        self._committed = False

    def __enter__(self) -> UnitOfWork:
        try:
            self.connection = self.database.engine.connect()
            self.connection.begin()
            self.connection.execute(_BIND_TENANT, {"org_id": self.org_id or "", "user_id": self.user_id or ""})
        except OperationalError as error:
            self._close()
            raise Unavailable("the database is unavailable; retry shortly") from error
        return self

    def __exit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        try:
            if not self._committed and self.connection is not None:
                self.connection.rollback()
        except DBAPIError:
            log.warning("rollback failed", exc_info=True)
        finally:
            self._close()

    def _close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def execute(self, statement: Executable, parameters: Any = None) -> Result:
        assert self.connection is not None, "unit of work used outside its `with` block"
        return self.connection.execute(statement, parameters)

    def after_commit(self, callback: Callable[[], Any]) -> None:
        """Run `callback` once the transaction has committed (e.g. enqueue a job)."""
        self._after_commit.append(callback)

    def commit(self) -> None:
        assert self.connection is not None, "unit of work used outside its `with` block"
        try:
            self.connection.commit()
        except OperationalError as error:
            raise Unavailable("the database is unavailable; the change was not saved, retry") from error
        self._committed = True
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # the change is committed; a failed follow-up must not undo the answer
                log.exception("after-commit callback failed", extra={"org_id": self.org_id})

    @property
    def committed(self) -> bool:
        return self._committed

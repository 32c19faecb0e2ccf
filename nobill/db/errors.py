"""What a database error means for the caller: the database is unreachable (retryable,
UNAVAILABLE), or the transaction lost a lock conflict (deadlock, serialization failure)."""

from __future__ import annotations

import psycopg
from sqlalchemy.exc import DBAPIError

# Class 08: connection exceptions; 57P01-57P03: the server is shutting down or starting.
_CONNECTION_SQLSTATES = ("57P01", "57P02", "57P03")
# Class 40: the transaction was rolled back (deadlock, serialization failure).
_CONFLICT_SQLSTATES = ("40001", "40P01")


def _driver_error(error: BaseException) -> BaseException:
    if isinstance(error, DBAPIError) and error.orig is not None:
        return error.orig
    return error


def is_connection_error(error: BaseException) -> bool:
    """True for a lost or refused connection, raised by psycopg directly (the unit of work's
    driver-level paths) or wrapped by SQLAlchemy; False for errors in the SQL itself."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    error = _driver_error(error)
    if isinstance(error, psycopg.InterfaceError):  # "the connection is closed"
        return True
    if not isinstance(error, psycopg.OperationalError):
        return False
    sqlstate = error.sqlstate
    # No SQLSTATE: libpq itself lost the server ("server closed the connection unexpectedly").
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in _CONNECTION_SQLSTATES


def is_transaction_conflict(error: BaseException) -> bool:
    """True when PostgreSQL rolled the transaction back to break a deadlock or a
    serialization conflict: nothing was changed, so the whole call may run again."""
    error = _driver_error(error)
    return isinstance(error, psycopg.Error) and error.sqlstate in _CONFLICT_SQLSTATES


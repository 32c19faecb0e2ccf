"""What actors share inside one worker process: the database, connected once."""

from __future__ import annotations

import threading

from nobill.db.database import Database

_database: Database | None = None
_lock = threading.Lock()


def use_database(database: Database) -> None:
    """Make actors in this process use `database` (the worker, `nobill dev`, tests)."""
    global _database
    _database = database


def database() -> Database:
    """The process's database, connected from the environment on first use."""
    global _database
    if _database is None:
        with _lock:
            if _database is None:
                from nobill.config import Settings
                from nobill.db.database import connect

                settings = Settings.from_env()
                _database = connect(
                    settings.require("database_url"), app_role=settings.db_app_role, pool_size=settings.db_pool_size
                )
    return _database

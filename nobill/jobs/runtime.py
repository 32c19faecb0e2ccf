"""What actors need, built once per worker process: settings, the database, Stripe."""

from __future__ import annotations

import threading
from typing import Any

from nobill.config import Settings

_lock = threading.Lock()
_state: dict[str, Any] = {}


def configure(settings: Settings, *, database: Any = None) -> None:
    """Use these settings (and this database, when given) for every actor in the process."""
    with _lock:
        _state.clear()
        _state["settings"] = settings
        if database is not None:
            _state["database"] = database


def settings() -> Settings:
    with _lock:
        if "settings" not in _state:
            _state["settings"] = Settings.from_env()
        return _state["settings"]


def database() -> Any:
    current = settings()
    with _lock:
        if "database" not in _state:
            from nobill.db.database import connect

            _state["database"] = connect(
                current.require("database_url"), app_role=current.db_app_role, pool_size=current.db_pool_size
            )
        return _state["database"]


def stripe_gateway() -> Any:
    current = settings()
    with _lock:
        if "gateway" not in _state:
            from nobill.stripe.gateway import StripeGateway

            _state["gateway"] = StripeGateway.from_settings(current)
        return _state["gateway"]

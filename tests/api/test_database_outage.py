"""Dropped database connections: the server recovers on its own, and a caller sees at
worst UNAVAILABLE (retryable), never INTERNAL."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy import create_engine

from nobill.db.database import Database
from nobill.db.unit_of_work import UnitOfWork
from nobill.errors import Unavailable
from nobill.v1 import tenancy_pb2
from support import new_user


def _kill_app_connections(superuser) -> int:
    return len(
        superuser.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = 'nobill'"
        ).fetchall()
    )


def test_dropped_connections_are_replaced_without_failing_calls(channel, superuser) -> None:
    owner = new_user(channel)
    org = owner.tenancy.CreateOrganization(tenancy_pb2.CreateOrganizationRequest(name="Outage")).organization
    request = tenancy_pb2.GetOrganizationRequest(org_id=org.id)
    assert _kill_app_connections(superuser) > 0

    codes = []
    for _ in range(30):
        try:
            owner.tenancy.GetOrganization(request)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as error:
            codes.append(error.code())
    # BEGIN on a dead pooled connection is retried on a fresh pool: no call fails.
    assert codes == [grpc.StatusCode.OK] * 30, codes


def test_a_database_that_is_down_answers_unavailable() -> None:
    # Nothing listens on port 1: connecting fails the way a down server does.
    engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none", connect_args={"connect_timeout": 2})
    try:
        with pytest.raises(Unavailable, match="unavailable"):
            with UnitOfWork(Database(engine, "nobill_app"), org_id="org_01M85FATANC14B26ZTWVY7KDW6"):
                pass
    finally:
        engine.dispose()


def _terminate_when_waiting(superuser_url: str) -> int:
    """Kill the app connections that wait for a lock (mid-call, after BEGIN)."""
    import time

    import psycopg

    with psycopg.connect(superuser_url, autocommit=True) as watcher:
        for _ in range(250):
            killed = watcher.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = 'nobill' AND wait_event_type = 'Lock'"
            ).fetchall()
            if killed:
                return len(killed)
            time.sleep(0.02)
    raise AssertionError("no call reached the lock")


@pytest.mark.parametrize("kind", ["read", "write"])
def test_a_connection_lost_in_the_middle_of_a_call_is_unavailable(channel, database_url, kind: str) -> None:
    # The read path runs its query on the driver directly (UnitOfWork.fetch_one), the write
    # path through SQLAlchemy: both must say UNAVAILABLE, never INTERNAL.
    from concurrent.futures import ThreadPoolExecutor

    import psycopg

    from fixtures_api import unique_email
    from nobill.v1 import common_pb2

    owner = new_user(channel)
    org = owner.tenancy.CreateOrganization(tenancy_pb2.CreateOrganizationRequest(name="Mid-call outage")).organization
    if kind == "read":
        call = lambda: owner.tenancy.GetOrganization(tenancy_pb2.GetOrganizationRequest(org_id=org.id))  # noqa: E731
        lock = "LOCK TABLE organizations IN ACCESS EXCLUSIVE MODE"
    else:
        call = lambda: owner.tenancy.AddMember(  # noqa: E731
            tenancy_pb2.AddMemberRequest(org_id=org.id, email=unique_email(), role=common_pb2.ROLE_MEMBER)
        )
        lock = "LOCK TABLE subscriptions IN ACCESS EXCLUSIVE MODE"
    with psycopg.connect(database_url) as blocker:
        blocker.execute(lock)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(lambda: failure_code(call))
            assert _terminate_when_waiting(database_url) == 1
            code, details = pending.result(timeout=30)
        blocker.rollback()

    assert code == grpc.StatusCode.UNAVAILABLE, details
    # And the next call works on a fresh connection.
    owner.tenancy.GetOrganization(tenancy_pb2.GetOrganizationRequest(org_id=org.id))


def failure_code(call) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as error:
        return error.code(), error.details()
    return grpc.StatusCode.OK, ""

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

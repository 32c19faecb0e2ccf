"""Health reflects what the server can do (NOT_SERVING while PostgreSQL is unreachable or
the server drains), and every log line of a call carries its request id, refused or not."""

from __future__ import annotations

import logging
import threading
import time
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine

from nobill.api import server as server_module
from nobill.api.server import build_server
from nobill.auth.authenticator import Authenticator
from nobill.db.database import Database
from nobill.v1 import tenancy_pb2
from support import Client, new_user

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _health(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status


def _wait_for_status(port: int, wanted: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while _health(port) != wanted:
        assert time.monotonic() < deadline, f"health never became {wanted}"
        time.sleep(0.1)


def test_health_is_not_serving_while_postgresql_is_unreachable(settings, monkeypatch) -> None:
    monkeypatch.setattr(server_module, "HEALTH_CHECK_SECONDS", 0.1)
    # Nothing listens on port 1: every check fails as it would with the database down.
    unreachable = Database(
        engine=create_engine("postgresql+psycopg://nobody@127.0.0.1:1/nothing", connect_args={"connect_timeout": 1}),
        app_role="nobill_app",
    )
    running = build_server(settings, unreachable)
    try:
        _wait_for_status(running.port, NOT_SERVING)
    finally:
        running.stop(grace=0)
        unreachable.dispose()


def test_health_recovers_when_postgresql_answers_again(settings, database, monkeypatch) -> None:
    monkeypatch.setattr(server_module, "HEALTH_CHECK_SECONDS", 0.1)
    running = build_server(settings, database)
    try:
        monitor = running.monitors[0]
        down = iter([False] * 3)
        monkeypatch.setattr(monitor, "check", lambda: next(down, True))
        _wait_for_status(running.port, NOT_SERVING)
        _wait_for_status(running.port, SERVING)
    finally:
        running.stop(grace=0)


def test_health_says_not_serving_while_draining(settings, database, monkeypatch) -> None:
    from nobill.api.tenancy_servicer import TenancyServicer

    original = TenancyServicer.GetMyPermissions

    def slow(self, request, context):  # noqa: ANN001
        time.sleep(1.5)
        return original(self, request, context)

    monkeypatch.setattr(TenancyServicer, "GetMyPermissions", slow)
    running = build_server(settings, database)
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        owner = new_user(channel)
        org = owner.tenancy.CreateOrganization(tenancy_pb2.CreateOrganizationRequest(name="Drain")).organization
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=15)
        assert next(watch).status == SERVING
        in_flight = threading.Thread(
            target=lambda: owner.tenancy.GetMyPermissions(tenancy_pb2.GetMyPermissionsRequest(org_id=org.id))
        )
        in_flight.start()
        time.sleep(0.3)
        stopper = threading.Thread(target=running.stop, kwargs={"grace": 5})
        stopper.start()
        assert next(watch).status == NOT_SERVING
        in_flight.join(10)
        stopper.join(10)


def test_every_log_line_of_a_refused_call_carries_its_request_id(channel, monkeypatch, caplog) -> None:
    original = Authenticator.authenticate

    def noisy(self, authorization):  # noqa: ANN001
        logging.getLogger("nobill.auth.test").warning("checking a token")
        return original(self, authorization)

    monkeypatch.setattr(Authenticator, "authenticate", noisy)
    request_id = uuid.uuid4().hex
    with caplog.at_level(logging.INFO):
        with pytest.raises(grpc.RpcError) as refused:
            Client(channel, "not-a-token").tenancy.ListOrganizations(
                tenancy_pb2.ListOrganizationsRequest(), metadata=(("x-request-id", request_id),)
            )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    from nobill.logs import JsonFormatter

    lines = [JsonFormatter().format(record) for record in caplog.records if record.name.startswith("nobill")]
    assert any("checking a token" in line for line in lines)
    assert any("call failed" in line for line in lines)
    for line in lines:
        assert f'"request_id": "{request_id}"' in line, line


def test_the_usage_servers_health_follows_postgresql_too(settings, database, monkeypatch) -> None:
    from nobill.api.usage_server import start_usage_server

    monkeypatch.setattr(server_module, "HEALTH_CHECK_SECONDS", 0.1)
    running = start_usage_server(settings, database)
    try:
        reachable = threading.Event()  # PostgreSQL "down" until the test has seen NOT_SERVING
        monkeypatch.setattr(running.monitor, "check", reachable.is_set)
        _wait_for_status(running.port, NOT_SERVING)
        reachable.set()
        _wait_for_status(running.port, SERVING)
    finally:
        running.stop(grace=0)

"""Builds the gRPC server: NOBill services behind the interceptor, health and reflection.
UsageService is not here: it runs on the grpc.aio usage server (usage_server.py)."""

from __future__ import annotations

import errno
import logging
import socket
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from nobill.api.access import AccessRule, load_rules
from nobill.api.interceptor import NobillInterceptor
from nobill.api.limits import CallLimits, LimitSettings, limits_from
from nobill.api.registry import register_all
from nobill.audit import keys
from nobill.auth.authenticator import Authenticator
from nobill.auth.tokens import JwtSettings, TokenVerifier
from nobill.config import Settings
from nobill.errors import ConfigError
from nobill.db.database import Database
from nobill.logs import install_request_ids

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
HEALTH_CHECK_SECONDS = 2.0


class DatabaseHealth:
    """Reports NOT_SERVING while PostgreSQL cannot be reached (checked every few seconds on
    a pooled connection), SERVING again once it answers; load balancers stop routing here.
    `publish(status)` sets the status on the server's health servicer (sync or aio)."""

    def __init__(self, database: Database, publish: Callable[[int], None]) -> None:
        self._database = database
        self._publish = publish
        self._stop = threading.Event()
        self.serving = True
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)
        self._thread.start()

    def check(self) -> bool:
        """True when PostgreSQL answers (or the pool is merely busy)."""
        from sqlalchemy.exc import TimeoutError as PoolTimeout

        try:
            with self._database.engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
            return True
        except PoolTimeout:  # every connection is in use: busy, not down
            return True
        except Exception:
            return False

    def _run(self) -> None:
        while not self._stop.wait(HEALTH_CHECK_SECONDS):
            serving = self.check()
            if serving != self.serving:
                self.serving = serving
                log.warning("health changed", extra={"serving": serving, "reason": "postgresql reachable" if serving else "postgresql unreachable"})
                self._publish(health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING)

    def stop(self) -> None:
        self._stop.set()


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    monitors: list = field(default_factory=list)

    def stop(self, grace: float = 10.0) -> None:
        """Refuse new calls (health says NOT_SERVING), let in-flight ones finish for up to
        `grace` seconds."""
        for monitor in self.monitors:
            monitor.stop()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()


def token_verifier(settings: Settings) -> TokenVerifier:
    settings.require_jwt_keys()
    return TokenVerifier(
        JwtSettings(
            secret=settings.jwt_secret,
            jwks_file=settings.jwt_jwks_file,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway_seconds=settings.jwt_leeway_seconds,
            jwks_url=settings.jwt_jwks_url,
            max_lifetime_seconds=settings.jwt_max_lifetime_seconds,
        )
    )


def call_limits(settings: Settings) -> CallLimits:
    """Per-principal limits from the settings, counted in Redis when NOBILL_REDIS_URL is set."""
    return limits_from(
        LimitSettings(
            calls_per_second=settings.rate_limit_calls_per_second,
            concurrent_calls=settings.rate_limit_concurrent_calls,
            orgs_per_day=settings.rate_limit_orgs_per_day,
            namespace=settings.redis_namespace,
        ),
        settings.redis_url,
    )


def nobill_interceptor(
    settings: Settings, database: Database, rules: dict[str, AccessRule], *, authentication: bool = True
) -> NobillInterceptor:
    """Authentication, permissions, limits and tenant binding for every NOBill call; the
    usage server reuses the same one. Installs the audit keys the calls write with."""
    verifier = token_verifier(settings) if authentication else None
    keys.install(keys.from_settings(settings.audit_keys))  # ConfigError without NOBILL_AUDIT_KEY
    authenticator = (
        Authenticator(verifier, database, trusted_email_issuers=settings.jwt_trusted_email_issuers)
        if verifier is not None
        else None
    )
    return NobillInterceptor(rules=rules, database=database, authenticator=authenticator, limits=call_limits(settings))


def build_server(
    settings: Settings,
    database: Database,
    *,
    authentication: bool = True,
    reuse_port: bool = False,
    addr_source: str = "NOBILL_GRPC_ADDR",
) -> RunningServer:
    """A started server on settings.grpc_addr (port 0 picks a free port).

    `reuse_port`: share the port with sibling processes (SO_REUSEPORT); only
    `nobill serve --processes N` sets it, so an unrelated second instance is refused
    instead of silently taking half the calls. `addr_source` names the flag or variable
    the address came from, for the message when it cannot be used.
    `authentication=False` exists for the benchmark's baseline only; nothing in the CLI
    turns it off."""
    install_request_ids()
    rules = load_rules()  # raises ConfigError if any RPC declares no access rule
    if settings.redis_url:
        # Changes enqueue their follow-up jobs after commit (nobill/jobs/send.py).
        from nobill.jobs.broker import configure_broker

        configure_broker(settings.redis_url, namespace=settings.redis_namespace)
    interceptor = nobill_interceptor(settings, database, rules, authentication=authentication)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.grpc_threads, thread_name_prefix="grpc"),
        interceptors=[interceptor],
        options=[
            ("grpc.so_reuseport", 1 if reuse_port else 0),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_metadata_size", 32 * 1024),
        ],
        maximum_concurrent_rpcs=settings.grpc_threads * 8,
    )
    # UsageService is served by the grpc.aio usage server on its own port (usage_server.py).
    names = register_all(server, settings, on="main")

    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ["", *names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)

    try:
        port = server.add_insecure_port(settings.grpc_addr)
    except RuntimeError:  # grpc's "Failed to bind" (address in use, or not local)
        port = 0
    if port == 0:
        problem = bind_problem(settings.grpc_addr) or "the address is not available"
        raise ConfigError(addr_source, f"cannot listen on {settings.grpc_addr}: {problem}")
    server.start()
    def publish(status: int) -> None:
        for name in ["", *names]:
            health_servicer.set(name, status)

    monitor = DatabaseHealth(database, publish)
    return RunningServer(server, port, health_servicer, [monitor])


def bind_problem(addr: str) -> str:
    """Why `addr` cannot be listened on, in words a person can act on ("" if it can)."""
    host, _, port = addr.rpartition(":")
    try:
        infos = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
    except (socket.gaierror, ValueError):
        return f"cannot resolve the host {host!r}"
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return "the address is in use (is another NOBill running? stop it or choose another port)"
            if error.errno == errno.EADDRNOTAVAIL:
                return f"{host} is not an address of this machine"
            if error.errno == errno.EACCES:
                return "permission denied (ports below 1024 need privileges)"
            return error.strerror or str(error)
    return ""


def serve_until(stop: threading.Event, running: RunningServer, *, grace: float = 10.0) -> None:
    """Block until `stop` is set, then drain in-flight calls and stop."""
    stop.wait()
    log.info("shutting down", extra={"grace_seconds": grace})
    running.stop(grace)
    log.info("stopped")

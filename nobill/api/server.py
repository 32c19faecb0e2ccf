"""Builds the gRPC server: NOBill services behind the interceptor, health and reflection.
UsageService is not here: it runs on the grpc.aio usage server (usage_server.py)."""

from __future__ import annotations

import logging
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from nobill.api.access import load_rules, nobill_services
from nobill.api.audit_servicer import AuditServicer
from nobill.api.billing_servicer import BillingServicer
from nobill.api.interceptor import NobillInterceptor
from nobill.api.tenancy_servicer import TenancyServicer
from nobill.auth.authenticator import Authenticator
from nobill.auth.tokens import JwtSettings, TokenVerifier
from nobill.config import Settings
from nobill.errors import ConfigError
from nobill.stripe.gateway import StripeGateway
from nobill.db.database import Database
from nobill.v1 import audit_pb2_grpc, billing_pb2_grpc, tenancy_pb2_grpc

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 8 * 1024 * 1024


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer

    def stop(self, grace: float = 10.0) -> None:
        """Refuse new calls, let in-flight ones finish for up to `grace` seconds."""
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
        )
    )


def build_server(settings: Settings, database: Database, *, authentication: bool = True) -> RunningServer:
    """A started server on settings.grpc_addr (port 0 picks a free port).

    `authentication=False` exists for the benchmark's baseline only; nothing in the CLI
    turns it off."""
    rules = load_rules()  # raises ConfigError if any RPC declares no access rule
    if settings.redis_url:
        # Changes enqueue their follow-up jobs after commit (nobill/jobs/send.py).
        from nobill.jobs.broker import configure_broker

        configure_broker(settings.redis_url, namespace=settings.redis_namespace)
    authenticator = Authenticator(token_verifier(settings), database) if authentication else None
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.grpc_threads, thread_name_prefix="grpc"),
        interceptors=[NobillInterceptor(rules=rules, database=database, authenticator=authenticator)],
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_metadata_size", 32 * 1024),
        ],
        maximum_concurrent_rpcs=settings.grpc_threads * 8,
    )
    tenancy_pb2_grpc.add_TenancyServiceServicer_to_server(TenancyServicer(), server)
    billing_pb2_grpc.add_BillingServiceServicer_to_server(
        BillingServicer(settings, StripeGateway.from_settings(settings)), server
    )
    audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(), server)

    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    # UsageService is served by the grpc.aio usage server on its own port (usage_server.py).
    names = [service.full_name for service in nobill_services() if service.full_name != "nobill.v1.UsageService"]
    for name in ["", *names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)

    try:
        port = server.add_insecure_port(settings.grpc_addr)
    except RuntimeError:  # grpc's "Failed to bind" (address in use without SO_REUSEPORT, or not local)
        port = 0
    if port == 0:
        raise ConfigError("NOBILL_GRPC_ADDR", f"cannot listen on {settings.grpc_addr}: the address is in use or not available")
    server.start()
    return RunningServer(server, port, health_servicer)


def serve_until(stop: threading.Event, running: RunningServer, *, grace: float = 10.0) -> None:
    """Block until `stop` is set, then drain in-flight calls and stop."""
    stop.wait()
    log.info("shutting down", extra={"grace_seconds": grace})
    running.stop(grace)
    log.info("stopped")

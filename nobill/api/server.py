"""Builds the gRPC server: NOBill services behind the interceptor, health and reflection."""

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
from nobill.api.limits import CallLimits, LimitSettings, limits_from
from nobill.api.tenancy_servicer import TenancyServicer
from nobill.api.usage_servicer import UsageServicer
from nobill.audit import keys
from nobill.auth.authenticator import Authenticator
from nobill.auth.tokens import JwtSettings, TokenVerifier
from nobill.config import Settings
from nobill.errors import ConfigError
from nobill.db.database import Database
from nobill.v1 import audit_pb2_grpc, billing_pb2_grpc, tenancy_pb2_grpc, usage_pb2_grpc

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


def build_server(settings: Settings, database: Database, *, authentication: bool = True) -> RunningServer:
    """A started server on settings.grpc_addr (port 0 picks a free port).

    `authentication=False` exists for the benchmark's baseline only; nothing in the CLI
    turns it off."""
    rules = load_rules()  # raises ConfigError if any RPC declares no access rule
    verifier = token_verifier(settings) if authentication else None
    keys.install(keys.from_settings(settings.audit_keys))  # ConfigError without NOBILL_AUDIT_KEY
    authenticator = (
        Authenticator(verifier, database, trusted_email_issuers=settings.jwt_trusted_email_issuers)
        if verifier is not None
        else None
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.grpc_threads, thread_name_prefix="grpc"),
        interceptors=[
            NobillInterceptor(rules=rules, database=database, authenticator=authenticator, limits=call_limits(settings))
        ],
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_metadata_size", 32 * 1024),
        ],
        maximum_concurrent_rpcs=settings.grpc_threads * 8,
    )
    tenancy_pb2_grpc.add_TenancyServiceServicer_to_server(TenancyServicer(), server)
    billing_pb2_grpc.add_BillingServiceServicer_to_server(BillingServicer(), server)
    usage_pb2_grpc.add_UsageServiceServicer_to_server(UsageServicer(), server)
    audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(), server)

    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [service.full_name for service in nobill_services()]
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

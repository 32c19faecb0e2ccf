"""`nobill webhooks`: build the sidecar from settings and run it until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import threading

from nobill.config import Settings
from nobill.errors import ConfigError
from nobill.webhooks.core_client import INGEST_SCOPE, CoreClient, ServiceToken
from nobill.webhooks.sidecar import RunningSidecar, start_sidecar

log = logging.getLogger(__name__)


def service_token(settings: Settings) -> ServiceToken:
    """NOBILL_WEBHOOKS_TOKEN when set, else tokens minted from NOBILL_JWT_SECRET."""
    if settings.webhooks_token:
        return ServiceToken(token=settings.webhooks_token)
    if not settings.jwt_secret:
        raise ConfigError("NOBILL_WEBHOOKS_TOKEN", "set it (a service token with scope webhooks:ingest) or NOBILL_JWT_SECRET")
    from nobill.auth.tokens import mint_token

    secret, issuer, audience = settings.jwt_secret, settings.jwt_issuer, settings.jwt_audience

    def mint(lifetime: int) -> str:
        return mint_token(
            secret=secret, issuer=issuer, audience=audience,
            subject="webhooks-sidecar", service=True, scopes=[INGEST_SCOPE], ttl_seconds=lifetime,
        )

    return ServiceToken(mint=mint)


def start_from_settings(
    settings: Settings, *, core_addr: str | None = None, addr_source: str = "NOBILL_WEBHOOKS_ADDR"
) -> RunningSidecar:
    """Start the sidecar on NOBILL_WEBHOOKS_ADDR, forwarding to the core's gRPC address;
    `addr_source` names where the address came from, for the message when it is taken."""
    target = core_addr or settings.core_addr or settings.grpc_addr
    client = CoreClient(target, service_token(settings))
    try:
        return start_sidecar(settings.webhooks_addr, client)
    except OSError as error:
        raise ConfigError(addr_source, f"cannot listen on {settings.webhooks_addr}: {error.strerror or error}") from None


def run_webhooks(settings: Settings, stop: threading.Event, *, addr_source: str = "NOBILL_WEBHOOKS_ADDR") -> None:
    """Serve until `stop` is set, then drain in-flight deliveries."""
    running = start_from_settings(settings, addr_source=addr_source)
    log.info("webhook sidecar serving", extra={"url": running.url, "core": settings.core_addr or settings.grpc_addr})
    stop.wait()
    log.info("webhook sidecar stopping")
    running.stop()

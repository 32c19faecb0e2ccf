"""The sidecar's link to the core: one `grpc.aio` channel and the sidecar's service token."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from nobill.v1 import billing_pb2, billing_pb2_grpc

INGEST_SCOPE = "webhooks:ingest"
# Seconds the core has to store one event before the sidecar answers 503.
INGEST_TIMEOUT_SECONDS = 10.0
# NOTE: the core admits at most NOBILL_RATE_LIMIT_CONCURRENT_CALLS (16) calls of one caller
# per process; past that it refuses. Deliveries beyond this many wait here instead, so a
# burst from Stripe queues in the sidecar rather than bouncing back as 503s.
MAX_CONCURRENT_FORWARDS = 16


@dataclass(frozen=True)
class IngestOutcome:
    code: grpc.StatusCode
    message: str = ""
    event_id: str = ""
    event_type: str = ""
    duplicate: bool = False


class ServiceToken:
    """The bearer token the sidecar presents: a configured one, or one minted from the
    shared JWT secret and renewed well before it expires."""

    # NOTE: short-lived on purpose: a leaked minted token is useless within the hour.
    MINTED_LIFETIME_SECONDS = 3600
    RENEW_BEFORE_SECONDS = 600

    def __init__(self, *, token: str | None = None, mint: Callable[[int], str] | None = None) -> None:
        if (token is None) == (mint is None):
            raise ValueError("give exactly one of token or mint")
        self._fixed = token
        self._mint = mint
        self._minted = ""
        self._renew_at = 0.0

    def current(self) -> str:
        if self._fixed is not None:
            return self._fixed
        now = time.monotonic()
        if now >= self._renew_at:
            assert self._mint is not None
            self._minted = self._mint(self.MINTED_LIFETIME_SECONDS)
            self._renew_at = now + self.MINTED_LIFETIME_SECONDS - self.RENEW_BEFORE_SECONDS
        return self._minted


class CoreClient:
    """Calls `BillingService.IngestStripeEvent`; the channel is opened on the sidecar's loop."""

    def __init__(
        self, target: str | Callable[[], str | None], token: ServiceToken, *, timeout: float = INGEST_TIMEOUT_SECONDS
    ) -> None:
        # A callable target is read on first use: `nobill dev` starts the sidecar (whose URL
        # the Stripe webhook endpoint needs) before the core it forwards to.
        self._target = target
        self._token = token
        self._timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._stub: billing_pb2_grpc.BillingServiceAsyncStub | None = None
        self._forwarding: asyncio.Semaphore | None = None  # made on the sidecar's loop

    def _billing(self) -> billing_pb2_grpc.BillingServiceAsyncStub | None:
        if self._stub is None:
            target = self._target() if callable(self._target) else self._target
            if not target:
                return None
            self._channel = grpc.aio.insecure_channel(target)
            self._stub = billing_pb2_grpc.BillingServiceStub(self._channel)
        return self._stub

    async def ingest(self, payload: bytes, signature_header: str, *, request_id: str) -> IngestOutcome:
        """Hand one delivery to the core; the outcome's code says whether it is stored."""
        metadata = (("authorization", f"Bearer {self._token.current()}"), ("x-request-id", request_id))
        request = billing_pb2.IngestStripeEventRequest(payload=payload, signature_header=signature_header)
        billing = self._billing()
        if billing is None:
            return IngestOutcome(grpc.StatusCode.UNAVAILABLE, "the core is not started yet")
        if self._forwarding is None:
            self._forwarding = asyncio.Semaphore(MAX_CONCURRENT_FORWARDS)
        try:
            async with self._forwarding:
                response = await billing.IngestStripeEvent(request, metadata=metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            return IngestOutcome(error.code(), error.details() or "")
        return IngestOutcome(grpc.StatusCode.OK, "", response.event_id, response.event_type, response.duplicate)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stub = None

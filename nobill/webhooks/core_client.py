"""The sidecar's link to the core: one `grpc.aio` channel, the sidecar's service token, and
a micro-batcher.

Each HTTP delivery waits for its own outcome, but deliveries that arrive together travel
together: they queue here, and one flusher sends up to MAX_BATCH_DELIVERIES of them per
`BillingService.IngestStripeEvents` call, as soon as a call may go (at most
MAX_BATCHES_IN_FLIGHT at once; while one is on its way the next waits LINGER_SECONDS to
grow). The core's per-delivery result answers each delivery; a failed call answers all of
its deliveries alike. The core's work per call (authentication, a transaction, a commit, a
job message) is then paid once per batch instead of once per delivery.

A core from before batching answers UNIMPLEMENTED: the sidecar then forwards one delivery
per `IngestStripeEvent` call, as it used to, and tries a batch again a minute later."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from nobill.v1 import billing_pb2, billing_pb2_grpc

log = logging.getLogger(__name__)

INGEST_SCOPE = "webhooks:ingest"
# Seconds the core has to store one batch before its deliveries are answered 503.
INGEST_TIMEOUT_SECONDS = 10.0
# NOTE: the core admits at most NOBILL_RATE_LIMIT_CONCURRENT_CALLS (16) calls of one caller
# per process; past that it refuses. One-by-one forwarding (an old core) stays below it, so
# a burst from Stripe queues in the sidecar rather than bouncing back as 503s.
MAX_CONCURRENT_FORWARDS = 16
# Per call: well inside the core's limits (500 deliveries, 4 MiB of payloads).
MAX_BATCH_DELIVERIES = 100
MAX_BATCH_BYTES = 4 * 1024 * 1024
# Two calls in flight keep the core busy while the next batch gathers.
MAX_BATCHES_IN_FLIGHT = 2
LINGER_SECONDS = 0.002
# After UNIMPLEMENTED (a core from before batching), forward one by one for this long.
BATCH_RETRY_SECONDS = 60.0


@dataclass(frozen=True)
class IngestOutcome:
    code: grpc.StatusCode
    message: str = ""
    event_id: str = ""
    event_type: str = ""
    duplicate: bool = False
    # The x-request-id of the core call that carried the delivery (a batch's is shared).
    request_id: str = ""


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


@dataclass
class _Waiting:
    """A delivery queued for the next batch, and where its outcome goes."""

    payload: bytes
    signature_header: str
    request_id: str
    outcome: asyncio.Future[IngestOutcome]


_OK_RESULTS = {
    billing_pb2.STRIPE_DELIVERY_OUTCOME_STORED: False,
    billing_pb2.STRIPE_DELIVERY_OUTCOME_DUPLICATE: True,
}


def _outcome_of(result: billing_pb2.StripeDeliveryResult, request_id: str) -> IngestOutcome:
    if result.outcome in _OK_RESULTS:
        return IngestOutcome(grpc.StatusCode.OK, "", result.event_id, result.event_type, _OK_RESULTS[result.outcome], request_id)
    if result.outcome == billing_pb2.STRIPE_DELIVERY_OUTCOME_REJECTED:
        return IngestOutcome(grpc.StatusCode.INVALID_ARGUMENT, result.message, request_id=request_id)
    return IngestOutcome(grpc.StatusCode.INTERNAL, f"the core answered an unknown outcome {result.outcome}", request_id=request_id)


class CoreClient:
    """Forwards deliveries to the core; the channel, queue and flusher live on the
    sidecar's loop (made on first use)."""

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
        self._queue: collections.deque[_Waiting] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[None]] = set()  # batches in flight
        self._one_by_one_until = 0.0
        self.batches_sent = 0  # for tests and logs

    def _billing(self) -> billing_pb2_grpc.BillingServiceAsyncStub | None:
        if self._stub is None:
            target = self._target() if callable(self._target) else self._target
            if not target:
                return None
            self._channel = grpc.aio.insecure_channel(target)
            self._stub = billing_pb2_grpc.BillingServiceStub(self._channel)
        return self._stub

    def _metadata(self, request_id: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self._token.current()}"), ("x-request-id", request_id))

    async def ingest(self, payload: bytes, signature_header: str, *, request_id: str) -> IngestOutcome:
        """Hand one delivery to the core; the outcome's code says whether it is stored."""
        billing = self._billing()
        if billing is None:
            return IngestOutcome(grpc.StatusCode.UNAVAILABLE, "the core is not started yet")
        if time.monotonic() < self._one_by_one_until:
            return await self._ingest_one(billing, payload, signature_header, request_id)
        waiting = _Waiting(payload, signature_header, request_id, asyncio.get_running_loop().create_future())
        self._queue.append(waiting)
        self._start_flusher().set()
        try:
            # The call's own deadline answers first; this only bounds a wait in the queue.
            return await asyncio.wait_for(waiting.outcome, self._timeout + 1.0)
        except asyncio.TimeoutError:
            return IngestOutcome(grpc.StatusCode.DEADLINE_EXCEEDED, "the core did not answer in time")

    def _start_flusher(self) -> asyncio.Event:
        if self._wake is None:
            self._wake = asyncio.Event()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush(self._wake), name="webhook-batcher")
        return self._wake

    async def _flush(self, wake: asyncio.Event) -> None:
        """Send the queue as batches, at most MAX_BATCHES_IN_FLIGHT at once."""
        while True:
            while not self._queue or len(self._calls) >= MAX_BATCHES_IN_FLIGHT:
                wake.clear()
                await wake.wait()
            if self._calls and len(self._queue) < MAX_BATCH_DELIVERIES:
                # A batch is on its way: let this one grow a little before it follows.
                await asyncio.sleep(LINGER_SECONDS)
            batch = self._take()
            if batch:
                call = asyncio.get_running_loop().create_task(self._send(batch))
                self._calls.add(call)
                call.add_done_callback(self._call_done)

    def _call_done(self, call: asyncio.Task[None]) -> None:
        self._calls.discard(call)
        if self._wake is not None:
            self._wake.set()

    def _take(self) -> list[_Waiting]:
        """The next batch: oldest first, within the count and byte limits (one at least);
        deliveries whose HTTP request already gave up are dropped."""
        batch: list[_Waiting] = []
        size = 0
        while self._queue and len(batch) < MAX_BATCH_DELIVERIES:
            waiting = self._queue[0]
            if waiting.outcome.done():
                self._queue.popleft()
                continue
            if batch and size + len(waiting.payload) > MAX_BATCH_BYTES:
                break
            batch.append(self._queue.popleft())
            size += len(waiting.payload)
        return batch

    async def _send(self, batch: list[_Waiting]) -> None:
        request_id = uuid.uuid4().hex
        billing = self._billing()
        assert billing is not None, "deliveries queue only once the core is known"
        request = billing_pb2.IngestStripeEventsRequest(
            deliveries=[
                billing_pb2.StripeWebhookDelivery(payload=waiting.payload, signature_header=waiting.signature_header)
                for waiting in batch
            ]
        )
        self.batches_sent += 1
        try:
            response = await billing.IngestStripeEvents(request, metadata=self._metadata(request_id), timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.UNIMPLEMENTED:
                await self._forward_one_by_one(billing, batch)
                return
            _settle(batch, lambda _: IngestOutcome(error.code(), error.details() or "", request_id=request_id))
            return
        except Exception as error:  # noqa: BLE001 - every waiting delivery must be answered
            log.exception("forwarding a batch failed", extra={"request_id": request_id})
            _settle(batch, lambda _: IngestOutcome(grpc.StatusCode.INTERNAL, str(error), request_id=request_id))
            return
        if len(response.results) != len(batch):
            message = f"the core answered {len(response.results)} results for {len(batch)} deliveries"
            _settle(batch, lambda _: IngestOutcome(grpc.StatusCode.INTERNAL, message, request_id=request_id))
            return
        results = iter(response.results)
        _settle(batch, lambda _: _outcome_of(next(results), request_id))

    async def _forward_one_by_one(self, billing: billing_pb2_grpc.BillingServiceAsyncStub, batch: list[_Waiting]) -> None:
        if time.monotonic() >= self._one_by_one_until:
            log.warning("the core does not take batches (IngestStripeEvents); forwarding one delivery per call")
        self._one_by_one_until = time.monotonic() + BATCH_RETRY_SECONDS

        async def forward(waiting: _Waiting) -> None:
            outcome = await self._ingest_one(billing, waiting.payload, waiting.signature_header, waiting.request_id)
            if not waiting.outcome.done():
                waiting.outcome.set_result(outcome)

        await asyncio.gather(*(forward(waiting) for waiting in batch))

    async def _ingest_one(
        self, billing: billing_pb2_grpc.BillingServiceAsyncStub, payload: bytes, signature_header: str, request_id: str
    ) -> IngestOutcome:
        """One delivery per IngestStripeEvent call (a core from before batching)."""
        request = billing_pb2.IngestStripeEventRequest(payload=payload, signature_header=signature_header)
        if self._forwarding is None:
            self._forwarding = asyncio.Semaphore(MAX_CONCURRENT_FORWARDS)
        try:
            async with self._forwarding:
                response = await billing.IngestStripeEvent(request, metadata=self._metadata(request_id), timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            return IngestOutcome(error.code(), error.details() or "", request_id=request_id)
        return IngestOutcome(grpc.StatusCode.OK, "", response.event_id, response.event_type, response.duplicate, request_id)

    async def close(self) -> None:
        """Stop batching (the sidecar has drained its requests) and close the channel;
        anything still queued is answered UNAVAILABLE, so Stripe retries it."""
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        _settle(list(self._queue), lambda _: IngestOutcome(grpc.StatusCode.UNAVAILABLE, "the sidecar is stopping"))
        self._queue.clear()
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stub = None


def _settle(batch: list[_Waiting], outcome: Callable[[_Waiting], IngestOutcome]) -> None:
    """Answer each delivery of `batch` (in order) whose HTTP request still waits."""
    for waiting in batch:
        value = outcome(waiting)
        if not waiting.outcome.done():
            waiting.outcome.set_result(value)

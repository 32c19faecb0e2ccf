"""A batching usage recorder: buffers events, streams them to StreamUsage in batches,
resends unacknowledged batches (same keys, so they count once) after reconnecting, and
flushes on close.

    with UsageRecorder("nobill:50052", token) as recorder:
        recorder.record(org_id, "api_requests", 1, idempotency_key=request_id)
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from nobill.client.channels import BearerToken, TokenSource as Token
from nobill.v1 import usage_pb2, usage_pb2_grpc

log = logging.getLogger("nobill.client.usage")

_OK = 0
_RESEND = {4, 8, 14}  # DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNAVAILABLE: nothing was stored

# (idempotency_key, metric, quantity, seconds, nanos, properties); seconds None: no timestamp
# (the server stamps the time of receipt; presence, not a zero value, says so).
_Event = tuple[str, str, int, int | None, int, str]


@dataclass
class RecorderStats:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    batches_acked: int = 0
    batches_refused: int = 0  # refused as a whole (permission, plan, invalid): not resent
    streams: int = 0  # streams opened (more than one: the recorder reconnected)
    refusals: list[tuple[str, int, str]] = field(default_factory=list)  # (org_id, code, message), last 100


class UsageRecorder:
    """Thread-safe. `record()` returns at once (it blocks only when `max_buffered` events
    are waiting); a background thread streams batches of up to `batch_size` events, at
    most `max_in_flight` unacknowledged at a time, and sends a partial batch after
    `linger` seconds. `on_ack(request, response, seconds)` is called for every
    acknowledgement, with the time since the batch was (last) sent."""

    def __init__(
        self,
        target: str | grpc.Channel,
        token: Token,
        *,
        batch_size: int = 500,
        linger: float = 0.05,
        max_in_flight: int = 4,
        max_buffered: int = 200_000,
        credentials: grpc.ChannelCredentials | None = None,
        on_ack: Callable[[usage_pb2.StreamUsageRequest, usage_pb2.StreamUsageResponse, float], None] | None = None,
    ) -> None:
        if not 1 <= batch_size <= 10_000:
            raise ValueError("batch_size must be between 1 and 10,000")
        if isinstance(target, str):
            options = [("grpc.max_send_message_length", 8 * 1024 * 1024)]
            self._channel = (
                grpc.secure_channel(target, credentials, options=options) if credentials
                else grpc.insecure_channel(target, options=options)
            )
            self._own_channel = True
        else:
            self._channel, self._own_channel = target, False
        self._stub = usage_pb2_grpc.UsageServiceStub(self._channel)
        self._injector = BearerToken(token)
        self._batch_size = batch_size
        self._linger = linger
        self._max_in_flight = max_in_flight
        self._max_buffered = max_buffered
        self._on_ack = on_ack
        self._cond = threading.Condition()
        self._buffer: dict[str, list[_Event]] = defaultdict(list)
        self._buffered = 0
        self._first_buffered_at = 0.0
        self._unacked: OrderedDict[int, usage_pb2.StreamUsageRequest] = OrderedDict()
        self._sent_at: dict[int, float] = {}
        self._next_batch = 0
        self._closing = False
        self._broken = False
        self.stats = RecorderStats()
        self._thread = threading.Thread(target=self._run, name="usage-recorder", daemon=True)
        self._thread.start()

    # --- public ------------------------------------------------------------------

    def record(
        self,
        org_id: str,
        metric: str,
        quantity: int = 1,
        *,
        idempotency_key: str | None = None,
        timestamp: float | None = None,
        properties: str = "",
    ) -> str:
        """Buffer one event; returns its idempotency key (a new UUID unless given). Use a
        key derived from what the usage is about (a request id) so a retry counts once."""
        key = idempotency_key or uuid.uuid4().hex
        seconds, nanos = (None, 0) if timestamp is None else (int(timestamp), int((timestamp % 1) * 1e9))
        with self._cond:
            if self._closing:
                raise RuntimeError("the recorder is closed")
            while self._buffered >= self._max_buffered:
                self._cond.wait()
            if self._buffered == 0:
                self._first_buffered_at = time.monotonic()
            self._buffer[org_id].append((key, metric, quantity, seconds, nanos, properties))
            self._buffered += 1
            if self._buffered >= self._batch_size:
                self._cond.notify_all()
        return key

    def record_many(
        self, org_id: str, metric: str, idempotency_keys: list[str], quantity: int = 1, *, timestamp: float | None = None
    ) -> None:
        """Buffer one event per key (same org, metric, quantity and time): the cheap way to
        hand over many events at once."""
        seconds, nanos = (None, 0) if timestamp is None else (int(timestamp), int((timestamp % 1) * 1e9))
        events = [(key, metric, quantity, seconds, nanos, "") for key in idempotency_keys]
        with self._cond:
            if self._closing:
                raise RuntimeError("the recorder is closed")
            while self._buffered and self._buffered + len(events) > self._max_buffered:
                self._cond.wait()
            if self._buffered == 0:
                self._first_buffered_at = time.monotonic()
            self._buffer[org_id].extend(events)
            self._buffered += len(events)
            if self._buffered >= self._batch_size:
                self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every buffered event is acknowledged; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._first_buffered_at = 0.0  # send a partial batch now
            self._cond.notify_all()
            while self._buffered or self._unacked:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining if remaining is not None else 0.5)
        return True

    def close(self, timeout: float | None = 30.0) -> bool:
        """Flush, end the stream and stop; False if events were still unacknowledged."""
        flushed = self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=10)
        if self._own_channel:
            self._channel.close()
        return flushed

    @property
    def pending(self) -> int:
        """Events buffered or sent but not acknowledged yet."""
        with self._cond:
            return self._buffered + sum(len(request.events) for request in self._unacked.values())

    def __enter__(self) -> UsageRecorder:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- the sending thread --------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.1
        while True:
            with self._cond:
                # Open a stream only when there is something to send.
                while not (self._buffered or self._unacked or self._closing):
                    self._cond.wait()
                if self._closing and not (self._buffered or self._unacked):
                    return
            try:
                if self._stream_once():
                    backoff = 0.1
            except grpc.RpcError as error:
                log.warning("usage stream failed; reconnecting", extra={"code": str(error.code()), "details": error.details()})
            with self._cond:
                if self._closing and not (self._buffered or self._unacked):
                    return
            time.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, 5.0)

    def _stream_once(self) -> bool:
        """One stream until it breaks or the recorder closes; True if any batch was acked."""
        outgoing: queue.Queue = queue.Queue()
        with self._cond:
            self._broken = False
            self.stats.streams += 1
            resend = list(self._unacked.values())  # same batch ids, same keys
        for request in resend:
            outgoing.put(request)
        call = self._stub.StreamUsage(iter(outgoing.get, None), metadata=self._injector.metadata())
        acked = threading.Event()
        reader = threading.Thread(target=self._read_acks, args=(call, acked), name="usage-acks", daemon=True)
        reader.start()
        try:
            for request in resend:
                self._sent_at[request.batch_id] = time.perf_counter()
            while True:
                batch = self._next_request()
                if batch is None:
                    break
                self._sent_at[batch.batch_id] = time.perf_counter()
                outgoing.put(batch)
        finally:
            outgoing.put(None)
            with self._cond:
                broken = self._broken
            if broken:
                call.cancel()
            reader.join()
        return acked.is_set()

    def _next_request(self) -> usage_pb2.StreamUsageRequest | None:
        """The next batch to send, or None when the stream must end (broken, or closing
        with nothing left)."""
        with self._cond:
            while True:
                if self._broken:
                    return None
                if self._closing and not self._buffered:
                    if not self._unacked:
                        return None
                    self._cond.wait(0.5)
                    continue
                if self._buffered and len(self._unacked) < self._max_in_flight:
                    full = self._buffered >= self._batch_size
                    lingered = time.monotonic() - self._first_buffered_at >= self._linger
                    if full or lingered or self._closing:
                        return self._take_batch()
                    self._cond.wait(self._linger)
                    continue
                self._cond.wait(0.5)

    def _take_batch(self) -> usage_pb2.StreamUsageRequest:
        org_id = next(iter(self._buffer))
        events = self._buffer[org_id]
        taken, rest = events[: self._batch_size], events[self._batch_size:]
        if rest:
            self._buffer[org_id] = rest
        else:
            del self._buffer[org_id]
        self._buffered -= len(taken)
        if self._buffered:
            self._first_buffered_at = time.monotonic() - self._linger  # the rest is due too
        self._next_batch += 1
        request = usage_pb2.StreamUsageRequest(org_id=org_id, batch_id=self._next_batch)
        add = request.events.add
        for key, metric, quantity, seconds, nanos, props in taken:
            if seconds is not None:
                item = add(idempotency_key=key, metric=metric, quantity=quantity, properties=props)
                item.timestamp.seconds, item.timestamp.nanos = seconds, nanos
            else:
                add(idempotency_key=key, metric=metric, quantity=quantity, properties=props)
        self._unacked[request.batch_id] = request
        self._cond.notify_all()  # record() may wait for room
        return request

    def _read_acks(self, call: Any, acked: threading.Event) -> None:
        try:
            for response in call:
                with self._cond:
                    request = self._unacked.get(response.batch_id)
                    if request is None:
                        continue
                    if response.status_code in _RESEND:
                        self._broken = True  # reconnect, then resend it with the same keys
                        self._cond.notify_all()
                        return
                    del self._unacked[response.batch_id]
                    latency = time.perf_counter() - self._sent_at.pop(response.batch_id, time.perf_counter())
                    if response.status_code == _OK:
                        self.stats.accepted += response.accepted
                        self.stats.duplicates += response.duplicates
                        self.stats.rejected += len(response.rejected)
                        self.stats.batches_acked += 1
                    else:
                        self.stats.batches_refused += 1
                        self.stats.refusals = [*self.stats.refusals[-99:], (request.org_id, response.status_code, response.status_message)]
                        log.warning(
                            "usage batch refused",
                            extra={"org_id": request.org_id, "code": response.status_code, "details": response.status_message},
                        )
                    acked.set()
                    self._cond.notify_all()
                if self._on_ack is not None:
                    self._on_ack(request, response, latency)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                log.info("usage stream ended", extra={"code": str(error.code())})
        finally:
            with self._cond:
                self._broken = True
                self._cond.notify_all()

"""Webhook delivery: every event POSTed to each enabled endpoint that subscribed to it.

The body is the event's JSON; the `Stripe-Signature` header is computed as Stripe does:
`t=<unix time of the attempt>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed with the
endpoint's whsec_ secret>`. A 2xx answer is a success; any other answer, a timeout or
a refused connection is retried after the delays in `webhook_retry_schedule`, then
abandoned. `pending_webhooks` on the event counts endpoints not yet reached.

Chaos (`/_sandbox/webhooks/chaos`) reproduces what Stripe allows itself: each event
delivered k times, deliveries shuffled within a time window, a fixed delay, and first
attempts dropped at random and redelivered later.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import http.client
import itertools
import json
import logging
import random
import ssl
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from nobill.sandbox import errors
from nobill.sandbox.state import SandboxState

log = logging.getLogger("nobill.sandbox.webhooks")

USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"


def signature_header(secret: str, body: str, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def endpoint_wants(enabled_events: list[str], event_type: str) -> bool:
    return "*" in enabled_events or event_type in enabled_events


@dataclass(order=True)
class Delivery:
    due: float  # time.monotonic()
    sequence: int
    event_id: str = field(compare=False)
    endpoint_id: str = field(compare=False)
    attempts: int = field(compare=False, default=0)
    chaos_applied: bool = field(compare=False, default=False)


@dataclass
class Chaos:
    duplicate: int = 1
    shuffle_window: float = 0.0
    delay: float = 0.0
    drop_rate: float = 0.0
    redeliver_after: float = 5.0

    @staticmethod
    def parse(body: Any) -> "Chaos":
        if not isinstance(body, dict):
            raise errors.invalid_request("chaos settings must be a JSON object")
        chaos = Chaos()
        for name, value in body.items():
            if name == "seed":
                continue
            if name not in chaos.__dataclass_fields__:
                raise errors.invalid_request(f"Unknown chaos setting: {name}", param=name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise errors.invalid_request(f"Invalid {name}: {value!r}", param=name)
            setattr(chaos, name, value)
        if int(chaos.duplicate) != chaos.duplicate or not 1 <= chaos.duplicate <= 20:
            raise errors.invalid_request("duplicate must be a whole number from 1 to 20", param="duplicate")
        chaos.duplicate = int(chaos.duplicate)
        if chaos.drop_rate > 1:
            raise errors.invalid_request("drop_rate must be between 0 and 1", param="drop_rate")
        return chaos


class WebhookDispatcher:
    def __init__(self, state: SandboxState, *, workers: int = 4, log_size: int = 10_000) -> None:
        self.state = state
        self.chaos = Chaos()
        self._random = random.Random()
        self._heap: list[Delivery] = []
        self._sequence = itertools.count()
        self._condition = threading.Condition()
        self._outstanding = 0  # scheduled + in flight
        # Copies still outstanding per (event, endpoint), and whether one succeeded, so
        # that duplicates decrement `pending_webhooks` once.
        self._pairs: dict[tuple[str, str], list[int | bool]] = {}
        self.log: deque[dict[str, Any]] = deque(maxlen=log_size)
        self._stopping = False
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox-webhook")
        self._scheduler = threading.Thread(target=self._run, name="sandbox-webhook-scheduler", daemon=True)
        self._scheduler.start()
        state.on_event = self.on_event

    # -- intake (state lock held) ------------------------------------------------------

    def on_event(self, event: dict[str, Any]) -> None:
        for endpoint in self.state.webhook_endpoints.values():
            if endpoint.status != "enabled" or not endpoint_wants(endpoint.enabled_events, event["type"]):
                continue
            event["pending_webhooks"] += 1
            chaos = self.chaos
            for _ in range(chaos.duplicate):
                delay = chaos.delay + (self._random.uniform(0, chaos.shuffle_window) if chaos.shuffle_window else 0.0)
                self._schedule(event["id"], endpoint.id, delay)

    def _schedule(self, event_id: str, endpoint_id: str, delay: float, attempts: int = 0, chaos_applied: bool = False, *, new_copy: bool = True) -> None:
        with self._condition:
            if new_copy:
                pair = self._pairs.setdefault((event_id, endpoint_id), [0, False])
                pair[0] += 1  # type: ignore[operator]
                self._outstanding += 1
            heapq.heappush(
                self._heap,
                Delivery(time.monotonic() + delay, next(self._sequence), event_id, endpoint_id, attempts, chaos_applied),
            )
            self._condition.notify_all()

    def set_chaos(self, body: dict[str, Any]) -> None:
        chaos = Chaos.parse(body)
        with self._condition:
            if isinstance(body.get("seed"), int):
                self._random.seed(body["seed"])
            self.chaos = chaos

    def reset(self) -> None:
        """Forget scheduled deliveries (with `/_sandbox/reset`); in-flight ones finish."""
        with self._condition:
            self._outstanding -= len(self._heap)
            self._heap.clear()
            self._pairs.clear()
            self.log.clear()
            self.chaos = Chaos()
            self._condition.notify_all()

    # -- scheduling --------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._stopping and (not self._heap or self._heap[0].due > time.monotonic()):
                    timeout = None if not self._heap else max(0.0, self._heap[0].due - time.monotonic())
                    self._condition.wait(timeout)
                if self._stopping:
                    return
                delivery = heapq.heappop(self._heap)
            try:
                self._pool.submit(self._deliver, delivery)
            except RuntimeError:  # pool shut down while stopping
                return

    def _deliver(self, delivery: Delivery) -> None:
        try:
            self._attempt(delivery)
        except Exception:  # a bug here must not kill the worker thread
            log.exception("webhook delivery crashed", extra={"fields": {"event": delivery.event_id}})
            self._finish(delivery, succeeded=False)

    def _attempt(self, delivery: Delivery) -> None:
        with self.state.lock:
            endpoint = self.state.webhook_endpoints.get(delivery.endpoint_id)
            event = self.state.events.get(delivery.event_id)
            if endpoint is None or event is None or endpoint.status != "enabled":
                outcome = "endpoint_removed" if event is not None else "event_expired"
                self._record(delivery, outcome, None, None, 0.0)
                self._finish(delivery, succeeded=False)
                return
            url, secret, event_type = endpoint.url, endpoint.secret, event["type"]
            body = json.dumps(event, indent=2)
        chaos = self.chaos
        if not delivery.chaos_applied and chaos.drop_rate and self._random.random() < chaos.drop_rate:
            self._record(delivery, "dropped", None, None, 0.0, event_type)
            self._schedule(delivery.event_id, delivery.endpoint_id, chaos.redeliver_after, delivery.attempts, True, new_copy=False)
            return
        delivery.chaos_applied = True
        started = time.monotonic()
        status, error = _post(url, body, signature_header(secret, body, int(time.time())), self.state.settings.webhook_timeout)
        elapsed = time.monotonic() - started
        delivery.attempts += 1
        if status is not None and 200 <= status < 300:
            self._record(delivery, "delivered", status, None, elapsed, event_type)
            self._finish(delivery, succeeded=True)
            return
        schedule = self.state.settings.webhook_retry_schedule
        if delivery.attempts <= len(schedule):
            self._record(delivery, "failed_will_retry", status, error, elapsed, event_type)
            self._schedule(delivery.event_id, delivery.endpoint_id, schedule[delivery.attempts - 1], delivery.attempts, True, new_copy=False)
        else:
            self._record(delivery, "failed_gave_up", status, error, elapsed, event_type)
            self._finish(delivery, succeeded=False)

    def _finish(self, delivery: Delivery, *, succeeded: bool) -> None:
        key = (delivery.event_id, delivery.endpoint_id)
        first_success = False
        with self._condition:
            pair = self._pairs.get(key)
            if pair is not None:
                if succeeded and not pair[1]:
                    pair[1] = True
                    first_success = True
                pair[0] -= 1  # type: ignore[operator]
                if pair[0] <= 0:
                    del self._pairs[key]
        if first_success:
            with self.state.lock:
                event = self.state.events.get(delivery.event_id)
                if event is not None and event["pending_webhooks"] > 0:
                    event["pending_webhooks"] -= 1
        with self._condition:
            self._outstanding -= 1
            self._condition.notify_all()

    def _record(self, delivery: Delivery, outcome: str, status: int | None, error: str | None, elapsed: float, event_type: str | None = None) -> None:
        entry = {
            "event": delivery.event_id,
            "type": event_type,
            "endpoint": delivery.endpoint_id,
            "attempt": delivery.attempts,
            "outcome": outcome,
            "status": status,
            "error": error,
            "at": time.time(),
            "duration_ms": round(elapsed * 1000, 1),
        }
        self.log.append(entry)
        level = logging.INFO if outcome in ("delivered", "dropped") else logging.WARNING
        log.log(level, "webhook %s", outcome, extra={"fields": entry})

    # -- observation and shutdown ------------------------------------------------------

    def pending_count(self) -> int:
        with self._condition:
            return self._outstanding

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._outstanding > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(remaining)
            return True

    def scheduled(self) -> list[dict[str, Any]]:
        """Deliveries not yet made, for persisting across a restart."""
        with self._condition:
            now = time.monotonic()
            return [
                {"event": d.event_id, "endpoint": d.endpoint_id, "attempts": d.attempts, "delay": max(0.0, d.due - now)}
                for d in self._heap
            ]

    def restore(self, scheduled: list[dict[str, Any]]) -> None:
        for item in scheduled:
            self._schedule(item["event"], item["endpoint"], float(item.get("delay", 0)), int(item.get("attempts", 0)), True)

    def stop(self, timeout: float = 5.0) -> None:
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        self._scheduler.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)


def _post(url: str, body: str, signature: str, timeout: float) -> tuple[int | None, str | None]:
    parts = urlsplit(url)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    kwargs: dict[str, Any] = {"timeout": timeout}
    if parts.scheme == "https":
        kwargs["context"] = ssl.create_default_context()
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    payload = body.encode("utf-8")
    connection = connection_class(parts.hostname or "", parts.port, **kwargs)
    try:
        connection.request(
            "POST",
            path,
            body=payload,
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": USER_AGENT,
                "Stripe-Signature": signature,
                "Cache-Control": "no-cache",
                "Accept": "*/*; q=0.5, application/xml",
                "Content-Length": str(len(payload)),
            },
        )
        response = connection.getresponse()
        response.read()
        return response.status, None
    except (OSError, http.client.HTTPException) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        connection.close()

"""Per-principal limits: calls in flight (per server process), calls per second (across
processes, counted in Redis) and organizations created per user per day (Redis).

The per-second count is kept locally and pushed to Redis in batches (one pipelined round
trip per batch, at most every SYNC_SECONDS or every tenth of the limit), so the hot path
usually costs no network call. With one process the count is exact; with N processes a
principal can overshoot by at most N batches in a second.

When Redis is unreachable the limits fail OPEN to per-process limits: each process keeps
enforcing the per-second limit on what it sees itself, and organization creation is not
limited. Limits protect fairness between callers; refusing every call because the limit
store is down would turn a Redis outage into an API outage.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from nobill.auth.principals import Principal, ServicePrincipal, UserPrincipal
from nobill.errors import ResourceExhausted

log = logging.getLogger(__name__)

SYNC_SECONDS = 0.1
ORG_WINDOW_SECONDS = 24 * 3600
# Methods that create an organization, limited per user per day.
ORG_CREATING_METHODS = frozenset({"/nobill.v1.TenancyService/CreateOrganization"})
# NOTE: Stripe paces its webhook deliveries, not the sidecar that forwards them: a
# per-second cap would only turn a burst of events (a billing-cycle rollover) into 503s and
# retries. The in-flight limit still bounds what the sidecar may hold at once.
PER_SECOND_EXEMPT_METHODS = frozenset(
    {"/nobill.v1.BillingService/IngestStripeEvent", "/nobill.v1.BillingService/IngestStripeEvents"}
)
# How long to stop trying Redis after it failed (each try can cost a connect timeout).
_REDIS_BACKOFF_SECONDS = 5.0


class Exhausted(ResourceExhausted):
    """A limit was hit; `retry_after_seconds` says when trying again can succeed."""

    def __init__(self, message: str, *, retry_after_seconds: float) -> None:
        self.retry_after_seconds = max(0.001, retry_after_seconds)
        super().__init__(
            f"{message}; retry in {math.ceil(self.retry_after_seconds * 1000)} ms",
            retry_after=self.retry_after_seconds,  # sent as google.rpc.RetryInfo
            reason="RATE_LIMITED",
        )


@dataclass(frozen=True)
class LimitSettings:
    calls_per_second: int  # 0: off
    concurrent_calls: int  # 0: off
    orgs_per_day: int  # 0: off
    namespace: str = "nobill"


class _Window:
    """One principal's count in the current one-second window."""

    __slots__ = ("second", "unsynced", "global_count", "synced_at")

    def __init__(self, second: int) -> None:
        self.second = second
        self.unsynced = 0  # calls not yet added to Redis
        self.global_count = 0  # the window's count in Redis at the last sync (ours included)
        self.synced_at = 0.0


def principal_key(principal: Principal) -> str:
    if isinstance(principal, UserPrincipal):
        return f"user:{principal.user_id}"
    assert isinstance(principal, ServicePrincipal)
    return f"service:{principal.name}"


class CallLimits:
    """Admits or refuses calls per principal; `admit` returns the function that ends the call."""

    def __init__(self, settings: LimitSettings, redis_client: redis.Redis | None) -> None:
        self._settings = settings
        self._redis = redis_client
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}
        self._windows: dict[str, _Window] = {}
        self._redis_down_until = 0.0
        self._batch = max(1, settings.calls_per_second // 10)

    def admit(self, method: str, principal: Principal) -> Callable[[], None]:
        """Count the call against its principal; raise Exhausted if a limit is hit."""
        key = principal_key(principal)
        if self._settings.calls_per_second and method not in PER_SECOND_EXEMPT_METHODS:
            self._count_call(key)
        if method in ORG_CREATING_METHODS and self._settings.orgs_per_day and isinstance(principal, UserPrincipal):
            self._count_org_creation(key)
        limit = self._settings.concurrent_calls
        if not limit:
            return _nothing
        with self._lock:
            running = self._in_flight.get(key, 0)
            if running >= limit:
                raise Exhausted(f"more than {limit} calls of this caller in flight", retry_after_seconds=0.05)
            self._in_flight[key] = running + 1

        def release() -> None:
            with self._lock:
                left = self._in_flight.get(key, 1) - 1
                if left:
                    self._in_flight[key] = left
                else:
                    self._in_flight.pop(key, None)

        return release

    # --- calls per second --------------------------------------------------------------

    def _count_call(self, key: str) -> None:
        now = time.time()
        second = int(now)
        limit = self._settings.calls_per_second
        with self._lock:
            window = self._windows.get(key)
            if window is None or window.second != second:
                if len(self._windows) > 100_000:
                    self._windows.clear()
                window = self._windows[key] = _Window(second)
            window.unsynced += 1
            due = window.unsynced >= self._batch or now - window.synced_at >= SYNC_SECONDS
            if due:
                pending, window.unsynced = window.unsynced, 0
                window.synced_at = now
        if due:
            total = self._push(key, second, pending)
            with self._lock:
                if total is None:  # Redis unavailable: keep counting locally
                    window.global_count += pending
                else:
                    window.global_count = max(window.global_count, total)
        if window.global_count + window.unsynced > limit:
            raise Exhausted(f"more than {limit} calls per second from this caller", retry_after_seconds=second + 1 - now)

    def _push(self, key: str, second: int, count: int) -> int | None:
        """Add `count` to the principal's window in Redis; its new total, or None if Redis is down."""
        if self._redis is None or time.monotonic() < self._redis_down_until:
            return None
        redis_key = f"{self._settings.namespace}:limits:calls:{key}:{second}"
        try:
            pipeline = self._redis.pipeline(transaction=False)
            pipeline.incrby(redis_key, count)
            pipeline.expire(redis_key, 3)
            total, _ = pipeline.execute()
            return int(total)
        except redis.RedisError as error:
            self._redis_failed(error)
            return None

    # --- organizations per day -----------------------------------------------------------

    def _count_org_creation(self, key: str) -> None:
        if self._redis is None or time.monotonic() < self._redis_down_until:
            return
        limit = self._settings.orgs_per_day
        redis_key = f"{self._settings.namespace}:limits:orgs:{key}"
        try:
            pipeline = self._redis.pipeline(transaction=False)
            # The first creation starts the 24-hour window. NOTE: SET NX EX rather than
            # EXPIRE NX, which needs Redis 7 (the embedded Redis is 6.2).
            pipeline.set(redis_key, 0, ex=ORG_WINDOW_SECONDS, nx=True)
            pipeline.incr(redis_key)
            pipeline.ttl(redis_key)
            _, count, ttl = pipeline.execute()
        except redis.RedisError as error:
            self._redis_failed(error)
            return
        if int(count) > limit:
            raise Exhausted(
                f"this user has created {limit} organizations in the last 24 hours, the most allowed",
                retry_after_seconds=max(1, int(ttl)),
            )

    def _redis_failed(self, error: Exception) -> None:
        if time.monotonic() >= self._redis_down_until:
            log.warning(
                "Redis unavailable for call limits; limiting per process until it is back",
                extra={"error": str(error)},
            )
        self._redis_down_until = time.monotonic() + _REDIS_BACKOFF_SECONDS


def _nothing() -> None:
    return None


def limits_from(settings: LimitSettings, redis_url: str | None) -> CallLimits:
    """CallLimits on `redis_url` (None: per-process limits only)."""
    client = None
    if redis_url:
        # NOTE: short timeouts: a slow Redis must not hold calls; it only loosens the limits.
        client = redis.Redis.from_url(redis_url, socket_timeout=0.25, socket_connect_timeout=0.25)
    return CallLimits(settings, client)

"""Fault injection for the Stripe API (`/v1/...`): outages, random errors, latency, 429s.

Configured through `POST /_sandbox/faults` (see README.md). Each fault may be limited to
paths starting with `path_prefix` (e.g. `/v1/billing/meter_events`). The control API,
the hosted Checkout page and webhook delivery are never affected.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from nobill.sandbox import errors

ERROR_STATUSES = (500, 502, 503, 504)


@dataclass
class Decision:
    """What to do with one API request."""

    sleep: float = 0.0
    # Answer with this error instead of running the request.
    error: errors.StripeError | None = None
    # Close the connection without answering (instead of running the request).
    reset: bool = False
    # Run the request, then answer with `after_error` / reset instead of the response
    # (the change is made but the client never hears of it).
    after_error: errors.StripeError | None = None
    after_reset: bool = False


def _outage_error() -> errors.StripeError:
    return errors.api_error(503, "The Stripe sandbox is simulating an outage; the request was not processed.")


class Faults:
    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self.outage: dict[str, Any] | None = None
            self.error_rate: dict[str, Any] | None = None
            self.latency: dict[str, Any] | None = None
            self.rate_limit: dict[str, Any] | None = None
            self._tokens = 0.0
            self._refilled = time.monotonic()

    # -- configuration ------------------------------------------------------------------

    def configure(self, body: dict[str, Any]) -> None:
        """Set or clear (with null) each fault named in `body`; others are kept."""
        known = {"outage", "error_rate", "latency", "rate_limit", "seed"}
        for name in body:
            if name not in known:
                raise errors.invalid_request(f"Unknown fault: {name} (known: {', '.join(sorted(known))})", param=name)
        parsed = {name: _PARSERS[name](value) if value is not None else None for name, value in body.items() if name != "seed"}
        with self._lock:
            if body.get("seed") is not None:
                if not isinstance(body["seed"], int):
                    raise errors.invalid_request("seed must be an integer", param="seed")
                self._random.seed(body["seed"])
            for name, value in parsed.items():
                setattr(self, name, value)
            if "rate_limit" in parsed and parsed["rate_limit"] is not None:
                self._tokens = float(parsed["rate_limit"]["burst"])
                self._refilled = time.monotonic()

    def public(self) -> dict[str, Any]:
        with self._lock:
            outage = None
            if self.outage is not None:
                remaining = self.outage["until"] - time.monotonic()
                if remaining > 0:
                    outage = {k: v for k, v in self.outage.items() if k != "until"}
                    outage["remaining_seconds"] = round(remaining, 3)
            return {"outage": outage, "error_rate": self.error_rate, "latency": self.latency, "rate_limit": self.rate_limit}

    # -- per request --------------------------------------------------------------------

    def decide(self, path: str) -> Decision:
        decision = Decision()
        with self._lock:
            latency = self.latency
            if latency and path.startswith(latency["path_prefix"]):
                decision.sleep = max(0.0, (latency["ms"] + self._random.uniform(-1, 1) * latency["jitter_ms"]) / 1000)
            outage = self.outage
            if outage and path.startswith(outage["path_prefix"]):
                if time.monotonic() < outage["until"]:
                    if outage["mode"] == "reset":
                        decision.reset = True
                    else:
                        decision.error = _outage_error()
                    return decision
                self.outage = None
            limit = self.rate_limit
            if limit and path.startswith(limit["path_prefix"]):
                now = time.monotonic()
                self._tokens = min(float(limit["burst"]), self._tokens + (now - self._refilled) * limit["requests_per_second"])
                self._refilled = now
                if self._tokens < 1:
                    decision.error = errors.rate_limited()
                    return decision
                self._tokens -= 1
            failing = self.error_rate
            if failing and path.startswith(failing["path_prefix"]) and self._random.random() < failing["rate"]:
                error = None if failing["status"] == "reset" else errors.api_error(failing["status"])
                if failing["after_commit"]:
                    decision.after_error, decision.after_reset = error, error is None
                else:
                    decision.error, decision.reset = error, error is None
        return decision


def _number(body: dict[str, Any], name: str, default: float | None = None, *, minimum: float = 0, maximum: float | None = None) -> float:
    value = body.get(name, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < minimum or (maximum is not None and value > maximum):
        raise errors.invalid_request(f"Invalid {name}: {value!r}", param=name)
    return float(value)


def _prefix(body: dict[str, Any]) -> str:
    prefix = body.get("path_prefix", "/v1/")
    if not isinstance(prefix, str) or not prefix.startswith("/v1"):
        raise errors.invalid_request("path_prefix must start with /v1", param="path_prefix")
    return prefix


def _check_keys(body: Any, allowed: set[str], fault: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise errors.invalid_request(f"{fault} must be an object or null", param=fault)
    for key in body:
        if key not in allowed:
            raise errors.invalid_request(f"Unknown field {fault}.{key}", param=f"{fault}.{key}")
    return body


def _parse_outage(body: Any) -> dict[str, Any]:
    body = _check_keys(body, {"seconds", "mode", "path_prefix"}, "outage")
    mode = body.get("mode", "503")
    if mode not in ("503", "reset"):
        raise errors.invalid_request("outage.mode must be '503' or 'reset'", param="outage.mode")
    seconds = _number(body, "seconds")
    return {"mode": mode, "seconds": seconds, "path_prefix": _prefix(body), "until": time.monotonic() + seconds}


def _parse_error_rate(body: Any) -> dict[str, Any]:
    body = _check_keys(body, {"rate", "status", "after_commit", "path_prefix"}, "error_rate")
    status = body.get("status", 500)
    if status not in ERROR_STATUSES and status != "reset":
        raise errors.invalid_request(f"error_rate.status must be one of {ERROR_STATUSES} or 'reset'", param="error_rate.status")
    after_commit = body.get("after_commit", False)
    if not isinstance(after_commit, bool):
        raise errors.invalid_request("error_rate.after_commit must be a boolean", param="error_rate.after_commit")
    return {"rate": _number(body, "rate", maximum=1), "status": status, "after_commit": after_commit, "path_prefix": _prefix(body)}


def _parse_latency(body: Any) -> dict[str, Any]:
    body = _check_keys(body, {"ms", "jitter_ms", "path_prefix"}, "latency")
    return {"ms": _number(body, "ms", maximum=60_000), "jitter_ms": _number(body, "jitter_ms", 0, maximum=60_000), "path_prefix": _prefix(body)}


def _parse_rate_limit(body: Any) -> dict[str, Any]:
    body = _check_keys(body, {"requests_per_second", "burst", "path_prefix"}, "rate_limit")
    rate = _number(body, "requests_per_second")
    burst = _number(body, "burst", max(1.0, rate), minimum=1)
    return {"requests_per_second": rate, "burst": burst, "path_prefix": _prefix(body)}


_PARSERS = {
    "outage": _parse_outage,
    "error_rate": _parse_error_rate,
    "latency": _parse_latency,
    "rate_limit": _parse_rate_limit,
}

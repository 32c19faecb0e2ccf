"""`Idempotency-Key` for POST requests, as Stripe implements it.

The first request with a key runs and its answer is kept for 24 hours; a retry with the
same key and the same parameters gets the same answer back (`Idempotent-Replayed: true`);
the same key with other parameters, or on another endpoint, is an `idempotency_error`.
Only answers from requests that started executing are kept (successes and card errors):
a request rejected by validation leaves the key unused, as on Stripe. While the first
request is still running, a second one with its key gets a 409.

Keys are scoped to the API key, so tests using different keys never collide. At most the
50,000 most recent answers are kept (stripe-python sends a key with every POST).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from nobill.sandbox import errors

TTL_SECONDS = 24 * 3600
MAX_KEY_LENGTH = 255


@dataclass
class StoredResponse:
    endpoint: str  # "POST /v1/customers"
    fingerprint: str
    status: int
    body: bytes
    request_id: str
    stored_at: float


def fingerprint(params: dict[str, Any]) -> str:
    """Parameters compared for equality regardless of their order on the wire."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


class IdempotencyStore:
    def __init__(self, max_entries: int = 50_000) -> None:
        self._lock = threading.Lock()
        self._responses: OrderedDict[tuple[str, str], StoredResponse] = OrderedDict()
        self._in_flight: dict[tuple[str, str], tuple[str, str]] = {}
        self._max_entries = max_entries

    def clear(self) -> None:
        with self._lock:
            self._responses.clear()
            self._in_flight.clear()

    def begin(self, api_key: str, key: str, endpoint: str, params_fingerprint: str) -> StoredResponse | None:
        """Claim `key` for this request, or return the stored answer to replay."""
        if len(key) > MAX_KEY_LENGTH:
            raise errors.invalid_request(
                f"Idempotency keys can be at most {MAX_KEY_LENGTH} characters long.", param="Idempotency-Key"
            )
        scoped = (api_key, key)
        with self._lock:
            self._expire()
            stored = self._responses.get(scoped)
            if stored is not None:
                if stored.endpoint != endpoint:
                    raise errors.idempotency_other_endpoint(key, stored.endpoint, endpoint)
                if stored.fingerprint != params_fingerprint:
                    raise errors.idempotency_mismatch(key)
                return stored
            if scoped in self._in_flight:
                raise errors.idempotency_in_use(key)
            self._in_flight[scoped] = (endpoint, params_fingerprint)
            return None

    def finish(self, api_key: str, key: str, response: StoredResponse | None) -> None:
        """Release the claim; keep `response` for replays unless it is None."""
        scoped = (api_key, key)
        with self._lock:
            self._in_flight.pop(scoped, None)
            if response is not None:
                self._responses[scoped] = response
                while len(self._responses) > self._max_entries:
                    self._responses.popitem(last=False)

    def _expire(self) -> None:
        horizon = time.time() - TTL_SECONDS
        while self._responses:
            oldest = next(iter(self._responses.values()))
            if oldest.stored_at >= horizon:
                break
            self._responses.popitem(last=False)

"""The front door of the Stripe API (`/v1/...`): faults, authentication, idempotency,
routing, and Stripe's JSON answers and headers."""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from nobill.sandbox import api_versions, errors, ids, routing
from nobill.sandbox.faults import Faults
from nobill.sandbox.idempotency import IdempotencyStore, StoredResponse, fingerprint
from nobill.sandbox.settings import API_VERSION
from nobill.sandbox.state import RequestInfo, SandboxState
from nobill.sandbox.wire_form import decode

log = logging.getLogger("nobill.sandbox.api")

# Secret keys and restricted keys of test mode; the sandbox grants restricted keys every
# permission (it does not model per-resource restrictions).
TEST_KEY_PREFIXES = ("sk_test_", "rk_test_")


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    # Close the connection without answering (simulated network failure).
    reset: bool = False
    content_type: str = "application/json"


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


# Stripe's own key prefixes (sk_live_, rk_test_, pk_live_...): public parts of a key.
_KEY_PREFIX = re.compile(r"(?:sk|rk|pk)_(?:test|live)_")
# A secret shows its last four characters only when this many more stay hidden.
_HIDDEN_AT_LEAST = 12


def _mask(key: str) -> str:
    """The key as Stripe shows a refused one (`sk_live_********************1234`): a known
    prefix and the last four characters of a long secret, never more; a fixed run of
    asterisks, so not even the secret's length shows."""
    match = _KEY_PREFIX.match(key)
    prefix = match.group(0) if match else ""
    secret = key[len(prefix) :]
    tail = secret[-4:] if len(secret) >= _HIDDEN_AT_LEAST + 4 else ""
    return prefix + "*" * 20 + tail


def api_key_from(headers: Mapping[str, str]) -> str:
    """The secret key from `Authorization: Bearer sk_test_...` (or Basic auth, as curl -u sends).

    NOTE: Stripe answers a missing or wrong key with HTTP 401 and an error of type
    `invalid_request_error`; stripe-python raises `stripe.AuthenticationError` for it.
    """
    header = headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    key = ""
    if scheme.lower() == "bearer":
        key = credentials.strip()
    elif scheme.lower() == "basic":
        try:
            key = base64.b64decode(credentials).decode("utf-8").split(":", 1)[0]
        except (ValueError, UnicodeDecodeError):
            key = ""
    if not key:
        raise errors.invalid_request(
            "You did not provide an API key. You need to provide your API key in the Authorization header, "
            "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication "
            "for details, or we can help at https://support.stripe.com/.",
            status=401,
        )
    if not any(key.startswith(prefix) and len(key) > len(prefix) for prefix in TEST_KEY_PREFIXES):
        raise errors.invalid_request(
            f"Invalid API Key provided: {_mask(key)} (the NOBill Stripe sandbox accepts any test-mode secret key, "
            "sk_test_..., or restricted key, rk_test_...)",
            status=401,
        )
    return key


class ApiGateway:
    def __init__(self, state: SandboxState, faults: Faults, idempotency: IdempotencyStore) -> None:
        self.state = state
        self.faults = faults
        self.idempotency = idempotency
        routing.load_routes()

    def handle(self, method: str, path: str, query: str, body: bytes, headers: Mapping[str, str]) -> Response:
        started = time.perf_counter()
        request_id = ids.new_id("req")
        decision = self.faults.decide(path)
        if decision.sleep:
            time.sleep(decision.sleep)
        if decision.reset:
            return Response(reset=True)
        if decision.error is not None:
            return self._error(decision.error, request_id, headers)
        try:
            response = self._serve(method, path, query, body, headers, request_id)
        except errors.StripeError as error:
            response = self._error(error, request_id, headers)
        except Exception:
            log.exception("sandbox bug while serving %s %s", method, path, extra={"fields": {"request_id": request_id}})
            response = self._error(errors.api_error(500, "The Stripe sandbox failed; see its log."), request_id, headers)
        if decision.after_reset:
            return Response(reset=True)
        if decision.after_error is not None:
            return self._error(decision.after_error, request_id, headers)
        log.debug(
            "%s %s %d",
            method,
            path,
            response.status,
            extra={"fields": {"request_id": request_id, "ms": round((time.perf_counter() - started) * 1000, 2)}},
        )
        return response

    def _serve(self, method: str, path: str, query: str, body: bytes, headers: Mapping[str, str], request_id: str) -> Response:
        api_key = api_key_from(headers)
        api_versions.check(headers.get("Stripe-Version"))
        if headers.get("Stripe-Account") or headers.get("Stripe-Context"):
            raise errors.invalid_request("The NOBill Stripe sandbox does not simulate Connect (Stripe-Account / Stripe-Context).")
        found, path_args = routing.find(method, path)
        try:
            raw = decode(body.decode("utf-8") if method == "POST" else query)
        except UnicodeDecodeError:
            raise errors.invalid_request("The request body is not valid UTF-8.") from None
        idempotency_key = headers.get("Idempotency-Key") if method == "POST" else None
        request = RequestInfo(request_id, idempotency_key, self.state.base_url)
        if idempotency_key is None:
            result = routing.execute(self.state, found, path_args, raw, request)
            return self._json(200, result, request_id, headers)

        endpoint = f"{method} {path}"
        stored = self.idempotency.begin(api_key, idempotency_key, endpoint, fingerprint(raw))
        if stored is not None:
            return Response(
                stored.status,
                stored.body,
                self._headers(request_id, headers) + [("Idempotent-Replayed", "true"), ("Original-Request", stored.request_id)],
            )
        keep: StoredResponse | None = None
        try:
            try:
                result = routing.execute(self.state, found, path_args, raw, request)
                response = self._json(200, result, request_id, headers)
                response.headers.append(("Original-Request", request_id))
            except errors.StripeError as error:
                response = self._error(error, request_id, headers)
                # Card errors happen after the request started executing: Stripe keeps them.
                if error.status != 402:
                    return response
            keep = StoredResponse(endpoint, fingerprint(raw), response.status, response.body, request_id, time.time())
            return response
        finally:
            self.idempotency.finish(api_key, idempotency_key, keep)

    def _headers(self, request_id: str, headers: Mapping[str, str]) -> list[tuple[str, str]]:
        result = [
            ("Request-Id", request_id),
            ("Stripe-Version", headers.get("Stripe-Version") or API_VERSION),
            ("Access-Control-Allow-Origin", "*"),
            ("Cache-Control", "no-cache, no-store"),
        ]
        if headers.get("Idempotency-Key"):
            result.append(("Idempotency-Key", headers["Idempotency-Key"]))
        return result

    def _json(self, status: int, value: Any, request_id: str, headers: Mapping[str, str]) -> Response:
        return Response(status, json_bytes(value), self._headers(request_id, headers))

    def _error(self, error: errors.StripeError, request_id: str, headers: Mapping[str, str]) -> Response:
        extra = self._headers(request_id, headers)
        if error.should_retry is not None:
            extra.append(("Stripe-Should-Retry", "true" if error.should_retry else "false"))
        return Response(error.status, json_bytes(error.body(request_id)), extra)

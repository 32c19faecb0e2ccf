"""Webhook signature verification (Stripe's scheme) and event parsing."""

from __future__ import annotations

import json
import re
import time
from typing import Any

TOLERANCE_SECONDS = 300
# Stripe's events are a few KiB; the sidecar refuses more than this too (413).
MAX_PAYLOAD_BYTES = 1024 * 1024


class InvalidWebhook(ValueError):
    """Missing, malformed, stale or forged signature, or a body that is not a Stripe event.
    `reason` says which, stably (one of REASONS), for a batch's per-delivery results."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


SIGNATURE_MISSING = "SIGNATURE_MISSING"
SIGNATURE_INVALID = "SIGNATURE_INVALID"
TIMESTAMP_OUTSIDE_TOLERANCE = "TIMESTAMP_OUTSIDE_TOLERANCE"
NOT_A_STRIPE_EVENT = "NOT_A_STRIPE_EVENT"
PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
NO_SIGNING_SECRET = "NO_SIGNING_SECRET"
REASONS = (SIGNATURE_MISSING, SIGNATURE_INVALID, TIMESTAMP_OUTSIDE_TOLERANCE, NOT_A_STRIPE_EVENT, PAYLOAD_TOO_LARGE, NO_SIGNING_SECRET)

# JSON escapes PostgreSQL's jsonb refuses (NUL, and surrogates, which are fine in a valid
# pair): only when one appears is the parsed event searched for what it decodes to.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def verify_event(payload: bytes, signature_header: str, secrets: tuple[str, ...], *, tolerance: int = TOLERANCE_SECONDS) -> dict[str, Any]:
    """The event a signed webhook body carries. Any of `secrets` may have signed it
    (rotation); the timestamp must be within `tolerance` seconds of now, either way."""
    import stripe

    if not secrets:
        raise InvalidWebhook("no webhook signing secret is configured (NOBILL_STRIPE_WEBHOOK_SECRETS)", NO_SIGNING_SECRET)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidWebhook(f"the body is larger than {MAX_PAYLOAD_BYTES} bytes", PAYLOAD_TOO_LARGE)
    if not signature_header:
        raise InvalidWebhook("missing Stripe-Signature header", SIGNATURE_MISSING)
    if len(signature_header) > 8192:
        raise InvalidWebhook("the Stripe-Signature header is too long", SIGNATURE_INVALID)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidWebhook("the body is not UTF-8", NOT_A_STRIPE_EVENT) from None
    last_error = "no signature matched"
    for secret in secrets:
        try:
            # No tolerance here: the timestamp is checked below, both ways, once the
            # signature is known to be genuine (so a stale event is told apart from a forged one).
            stripe.WebhookSignature.verify_header(text, signature_header, secret, None)
            break
        except stripe.SignatureVerificationError as error:
            last_error = str(error.user_message or error)
    else:
        raise InvalidWebhook(f"bad signature: {last_error}", SIGNATURE_INVALID)
    # stripe-python checks only the past; a timestamp far ahead is as suspect as a stale one.
    timestamps = [part[2:] for part in signature_header.split(",") if part.startswith("t=")]
    if not timestamps or not timestamps[0].isdigit():
        raise InvalidWebhook("bad signature: the timestamp is not a number", SIGNATURE_INVALID)
    if abs(int(timestamps[0]) - time.time()) > tolerance:
        raise InvalidWebhook("bad signature: timestamp outside the tolerance zone", TIMESTAMP_OUTSIDE_TOLERANCE)
    try:
        # Strict JSON, as PostgreSQL's jsonb reads it: Python's NaN and Infinity are refused.
        event = _STRICT_JSON.decode(text)
    except (ValueError, RecursionError):
        raise InvalidWebhook("the body is not JSON", NOT_A_STRIPE_EVENT) from None
    if (
        not isinstance(event, dict)
        or event.get("object") != "event"
        or not isinstance(event.get("id"), str)
        or not event["id"].startswith("evt_")
        or len(event["id"]) > 255
        or not isinstance(event.get("type"), str)
        or not isinstance(event.get("data"), dict)
        or not isinstance(event["data"].get("object"), dict)
    ):
        raise InvalidWebhook("the body is not a Stripe event", NOT_A_STRIPE_EVENT)
    if _SUSPECT_ESCAPE.search(text) and _has_unstorable_text(event):
        # Stored as jsonb, which refuses these: refused here, so it cannot fail a whole batch.
        raise InvalidWebhook("the event holds a NUL character or a lone surrogate, which cannot be stored", NOT_A_STRIPE_EVENT)
    return event


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


_STRICT_JSON = json.JSONDecoder(parse_constant=_not_json)


def _has_unstorable_text(value: Any) -> bool:
    if isinstance(value, str):
        return _UNSTORABLE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_unstorable_text(key) or _has_unstorable_text(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_unstorable_text(item) for item in value)
    return False


def sign(payload: bytes, secret: str, *, timestamp: int | None = None) -> str:
    """A Stripe-Signature header for `payload` (tests and benchmarks)."""
    import stripe

    return stripe.WebhookSignature.generate_signature_header(payload.decode("utf-8"), secret, timestamp)

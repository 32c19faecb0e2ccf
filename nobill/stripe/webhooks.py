"""Webhook signature verification (Stripe's scheme) and event parsing."""

from __future__ import annotations

import json
import time
from typing import Any

TOLERANCE_SECONDS = 300
# Stripe's events are a few KiB; the sidecar refuses more than this too (413).
MAX_PAYLOAD_BYTES = 1024 * 1024


class InvalidWebhook(ValueError):
    """Missing, malformed, stale or forged signature, or a body that is not a Stripe event."""


def verify_event(payload: bytes, signature_header: str, secrets: tuple[str, ...], *, tolerance: int = TOLERANCE_SECONDS) -> dict[str, Any]:
    """The event a signed webhook body carries. Any of `secrets` may have signed it
    (rotation); the timestamp must be within `tolerance` seconds of now."""
    import stripe

    if not secrets:
        raise InvalidWebhook("no webhook signing secret is configured (NOBILL_STRIPE_WEBHOOK_SECRETS)")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidWebhook(f"the body is larger than {MAX_PAYLOAD_BYTES} bytes")
    if not signature_header:
        raise InvalidWebhook("missing Stripe-Signature header")
    if len(signature_header) > 8192:
        raise InvalidWebhook("the Stripe-Signature header is too long")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidWebhook("the body is not UTF-8") from None
    last_error = "no signature matched"
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(text, signature_header, secret, tolerance)
            break
        except stripe.SignatureVerificationError as error:
            last_error = str(error.user_message or error)
    else:
        raise InvalidWebhook(f"bad signature: {last_error}")
    # stripe-python checks only the past; a timestamp far ahead is as suspect as a stale one.
    timestamps = [part[2:] for part in signature_header.split(",") if part.startswith("t=")]
    if not timestamps or not timestamps[0].isdigit() or int(timestamps[0]) > time.time() + tolerance:
        raise InvalidWebhook("bad signature: timestamp outside the tolerance zone")
    try:
        event = json.loads(text)
    except ValueError:
        raise InvalidWebhook("the body is not JSON") from None
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
        raise InvalidWebhook("the body is not a Stripe event")
    return event


def sign(payload: bytes, secret: str, *, timestamp: int | None = None) -> str:
    """A Stripe-Signature header for `payload` (tests and benchmarks)."""
    import stripe

    return stripe.WebhookSignature.generate_signature_header(payload.decode("utf-8"), secret, timestamp)

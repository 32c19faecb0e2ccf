"""Stripe's webhook signature scheme, verified with several secrets (rotation)."""

from __future__ import annotations

import json
import time

import pytest

from nobill.stripe.webhooks import InvalidWebhook, sign, verify_event

EVENT = {"id": "evt_1", "object": "event", "type": "invoice.paid", "data": {"object": {"id": "in_1", "object": "invoice"}}}


def test_a_signature_from_any_configured_secret_verifies() -> None:
    payload = json.dumps(EVENT).encode()
    for secret in ("whsec_old", "whsec_new"):
        assert verify_event(payload, sign(payload, secret), ("whsec_old", "whsec_new"))["id"] == "evt_1"


def test_the_tolerance_is_300_seconds_either_way() -> None:
    payload = json.dumps(EVENT).encode()
    now = int(time.time())
    assert verify_event(payload, sign(payload, "whsec_a", timestamp=now - 290), ("whsec_a",))
    for moment in (now - 310, now + 310):
        with pytest.raises(InvalidWebhook):
            verify_event(payload, sign(payload, "whsec_a", timestamp=moment), ("whsec_a",))


def test_no_secret_configured_rejects_everything() -> None:
    payload = json.dumps(EVENT).encode()
    with pytest.raises(InvalidWebhook, match="NOBILL_STRIPE_WEBHOOK_SECRETS"):
        verify_event(payload, sign(payload, "whsec_a"), ())


def test_a_signature_header_with_several_v1_values_passes_if_one_matches() -> None:
    payload = json.dumps(EVENT).encode()
    header = sign(payload, "whsec_a")
    timestamp, good = header.split(",")
    assert verify_event(payload, f"{timestamp},v1={'0' * 64},{good}", ("whsec_a",))

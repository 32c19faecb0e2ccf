"""Stripe's webhook signature scheme, verified with several secrets (rotation)."""

from __future__ import annotations

import json
import time

import pytest

from nobill.stripe import webhooks
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


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("unsigned", webhooks.SIGNATURE_MISSING),
        ("forged", webhooks.SIGNATURE_INVALID),
        ("no_v1", webhooks.SIGNATURE_INVALID),
        ("garbage_header", webhooks.SIGNATURE_INVALID),
        ("stale", webhooks.TIMESTAMP_OUTSIDE_TOLERANCE),
        ("future", webhooks.TIMESTAMP_OUTSIDE_TOLERANCE),
        ("forged_and_stale", webhooks.SIGNATURE_INVALID),
        ("not_json", webhooks.NOT_A_STRIPE_EVENT),
        ("not_utf8", webhooks.NOT_A_STRIPE_EVENT),
        ("not_an_event", webhooks.NOT_A_STRIPE_EVENT),
        ("nul", webhooks.NOT_A_STRIPE_EVENT),
        ("lone_surrogate", webhooks.NOT_A_STRIPE_EVENT),
        ("nan", webhooks.NOT_A_STRIPE_EVENT),  # Python reads NaN; jsonb would refuse it
        ("deeply_nested", webhooks.NOT_A_STRIPE_EVENT),
        ("oversized", webhooks.PAYLOAD_TOO_LARGE),
        ("no_secret", webhooks.NO_SIGNING_SECRET),
    ],
)
def test_each_refusal_says_why(case: str, reason: str) -> None:
    secrets = ("whsec_a",)
    now = int(time.time())
    payload = json.dumps(EVENT).encode()
    header = None
    if case == "not_json":
        payload = b"{not json"
    elif case == "not_utf8":
        payload = b"\xff\xfe"
    elif case == "not_an_event":
        payload = json.dumps({"id": "cus_1", "object": "customer"}).encode()
    elif case == "nul":
        payload = json.dumps({**EVENT, "data": {"object": {"id": "in_1", "name": "a\u0000b"}}}).encode()
    elif case == "lone_surrogate":
        payload = json.dumps({**EVENT, "data": {"object": {"id": "in_1", "name": "\ud800"}}}).encode()
    elif case == "nan":
        payload = json.dumps({**EVENT, "data": {"object": {"id": "in_1", "amount": float("nan")}}}).encode()
    elif case == "deeply_nested":
        payload = b"[" * 100_000 + b"]" * 100_000
    elif case == "oversized":
        payload = json.dumps({**EVENT, "padding": "x" * (1024 * 1024)}).encode()
    elif case == "no_secret":
        secrets = ()
    if case == "unsigned":
        header = ""
    elif case == "forged":
        header = sign(payload, "whsec_other")
    elif case == "no_v1":
        header = sign(payload, "whsec_a").split(",")[0]
    elif case == "garbage_header":
        header = "t=abc,v1=nothex"
    elif case == "stale":
        header = sign(payload, "whsec_a", timestamp=now - 301)
    elif case == "future":
        header = sign(payload, "whsec_a", timestamp=now + 301)
    elif case == "forged_and_stale":
        header = sign(payload, "whsec_other", timestamp=now - 301)
    elif case == "not_utf8":
        header = "t=1,v1=00"
    if header is None:
        header = sign(payload, "whsec_a")
    with pytest.raises(InvalidWebhook) as refused:
        verify_event(payload, header, secrets)
    assert refused.value.reason == reason
    assert refused.value.reason in webhooks.REASONS


def test_a_surrogate_pair_and_an_escaped_backslash_are_fine() -> None:
    event = {**EVENT, "data": {"object": {"id": "in_1", "name": "\U0001F600 and \\\\u0000 as text"}}}
    payload = json.dumps(event).encode()
    assert verify_event(payload, sign(payload, "whsec_a"), ("whsec_a",))["data"]["object"]["name"] == event["data"]["object"]["name"]

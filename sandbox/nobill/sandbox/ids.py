"""Object ids with Stripe's prefixes and lengths (`cus_` + 14, `sub_` + 24, `cs_test_` + 58, ...)."""

from __future__ import annotations

import random

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# NOTE: ids only need to be unique, not secret; a SystemRandom-seeded PRNG is far faster
# than `secrets` per call. Webhook secrets use `secret()` below, which is cryptographic.
_random = random.Random()

# Prefix → length of the random part, as Stripe's ids look today.
_LENGTHS = {
    "cus": 14,
    "prod": 14,
    "si": 14,
    "price": 24,
    "sub": 24,
    "in": 24,
    "il": 24,
    "ii": 24,
    "li": 24,
    "evt": 24,
    "we": 24,
    "clock": 24,
    "pm": 24,
    "req": 14,
    "mtr_test": 32,
    "mtrusg": 24,
    "cs_test": 58,
}


def new_id(prefix: str) -> str:
    return f"{prefix}_{''.join(_random.choices(_ALPHABET, k=_LENGTHS.get(prefix, 24)))}"


def secret(prefix: str = "whsec", length: int = 32) -> str:
    import secrets

    return f"{prefix}_{''.join(secrets.choice(_ALPHABET) for _ in range(length))}"


def invoice_prefix() -> str:
    """Customers' invoice prefixes are 8 upper-case hex-ish characters (e.g. `7FE1103A`)."""
    return "".join(_random.choices("0123456789ABCDEF", k=8))

"""Object ids: a type prefix plus a ULID (time-ordered, 26 Crockford base32 characters)."""

from __future__ import annotations

import os
import re
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
PREFIXES = ("org", "usr")
_PATTERNS = {prefix: re.compile(rf"^{prefix}_[0-9A-HJKMNP-TV-Z]{{26}}$") for prefix in PREFIXES}


def new_id(prefix: str) -> str:
    """A new id such as org_01JD3Q8Z6Y5X4W3V2T1S0R9Q8P; sorts by creation time."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"


def is_valid(prefix: str, value: str) -> bool:
    return bool(_PATTERNS[prefix].fullmatch(value))

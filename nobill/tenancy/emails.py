"""Email validation and normalisation for membership invitations."""

from __future__ import annotations

import re
import unicodedata

from nobill.errors import InvalidArgument

_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)


def normalize(email: str, *, field: str = "email") -> str:
    """Trimmed, lower-cased address; InvalidArgument if it is not a plausible address."""
    value = unicodedata.normalize("NFKC", email).strip()
    if not value:
        raise InvalidArgument("email is required", field=field)
    if len(value) > 254:
        raise InvalidArgument("email must be at most 254 characters", field=field)
    if not _EMAIL.fullmatch(value) or ".." in value.split("@")[0]:
        raise InvalidArgument(f"{value!r} is not a valid email address", field=field)
    # NOTE: local parts are case-sensitive in theory, never in practice; one person
    # typing their address two ways must not become two users.
    return value.lower()


def normalize_or_none(email: str | None) -> str | None:
    """For emails from tokens: a bad one is dropped rather than failing the call."""
    if not email:
        return None
    try:
        return normalize(email)
    except InvalidArgument:
        return None

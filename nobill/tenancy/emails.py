"""Email validation and normalisation for membership invitations and their claims.

The normalisation is deliberately conservative, because an invitation is claimed by the
first verified token whose address matches it:
- surrounding whitespace is removed and the domain is lower-cased (DNS names are
  case-insensitive);
- the local part is kept exactly as written: no case folding (RFC 5321 leaves it to the
  receiving server) and no Unicode compatibility folding;
- only ASCII addresses are accepted, so a full-width or homoglyph spelling of an address
  is refused, never folded into the address it imitates.
"""

from __future__ import annotations

import re

from nobill.errors import InvalidArgument

_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)


def normalize(email: str, *, field: str = "email") -> str:
    """The address with surrounding whitespace removed and its domain lower-cased;
    InvalidArgument if it is not a plausible ASCII address."""
    value = email.strip()
    if not value:
        raise InvalidArgument("email is required", field=field)
    if len(value) > 254:
        raise InvalidArgument("email must be at most 254 characters", field=field)
    if not value.isascii():
        raise InvalidArgument("email must be an ASCII address (internationalised addresses are not accepted)", field=field)
    if not _EMAIL.fullmatch(value) or ".." in value.split("@")[0]:
        raise InvalidArgument(f"{value!r} is not a valid email address", field=field)
    local, _, domain = value.rpartition("@")
    return f"{local}@{domain.lower()}"


def normalize_or_none(email: str | None) -> str | None:
    """For emails from tokens: a bad one is dropped rather than failing the call."""
    if not email:
        return None
    try:
        return normalize(email)
    except InvalidArgument:
        return None


def lookalike_key(email: str) -> str:
    """What two addresses share when they differ only in letter case: used to refuse a
    second member whose address imitates an existing member's."""
    return email.lower()

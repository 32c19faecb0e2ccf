"""Page tokens: opaque to callers, bound to the query they came from."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from nobill.errors import InvalidArgument


def clamp_page_size(requested: int, *, default: int = 50, maximum: int = 500) -> int:
    """AIP-158: 0 means the default, larger than the maximum is lowered to it."""
    if requested < 0:
        raise InvalidArgument("page_size must not be negative", field="page_size")
    if requested == 0:
        return default
    return min(requested, maximum)


def fingerprint(*parts: Any) -> str:
    """Identifies a query's filters, so a token is refused for a different query."""
    return hashlib.sha256(json.dumps(parts, default=str, sort_keys=True).encode()).hexdigest()[:16]


def encode(position: Any, query: str) -> str:
    raw = json.dumps({"p": position, "q": query}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, query: str) -> Any | None:
    """The position stored in `token`, or None for an empty token (the first page)."""
    if not token:
        return None
    if len(token) > 1024:
        raise InvalidArgument("page_token is not valid", field="page_token")
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidArgument("page_token is not valid", field="page_token") from None
    if not isinstance(payload, dict) or "p" not in payload:
        raise InvalidArgument("page_token is not valid", field="page_token")
    position = payload["p"]
    if position is None or isinstance(position, bool):
        raise InvalidArgument("page_token is not valid", field="page_token")
    if isinstance(position, str) and (len(position) > 256 or not position.isprintable()):
        raise InvalidArgument("page_token is not valid", field="page_token")
    if isinstance(position, int) and not 0 <= position < 2**63:
        raise InvalidArgument("page_token is not valid", field="page_token")
    if payload.get("q") != query:
        raise InvalidArgument("page_token belongs to a different query; start again without it", field="page_token")
    return payload["p"]


def fetch_page(
    uow: Any,
    statement: Any,
    *,
    key: Any,
    key_type: type,
    page_size: int,
    page_token: str,
    query: str,
    descending: bool = False,
) -> tuple[list[Any], str]:
    """Keyset pagination: rows of `statement` ordered by the unique column `key`, after
    the position in `page_token`; returns (rows, next page token or "")."""
    size = clamp_page_size(page_size)
    after = decode(page_token, query)
    if after is not None:
        if not isinstance(after, key_type):
            raise InvalidArgument("page_token is not valid", field="page_token")
        statement = statement.where(key < after if descending else key > after)
    statement = statement.order_by(key.desc() if descending else key.asc()).limit(size + 1)
    rows = uow.execute(statement).all()
    page = rows[:size]
    return page, encode(getattr(page[-1], key.key), query) if len(rows) > size else ""

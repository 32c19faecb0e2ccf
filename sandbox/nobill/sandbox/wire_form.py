"""Decoding Stripe's form encoding: `a[b][0][c]=x`, `expand[]=y`, `metadata[k]=v`.

The result is a tree of dicts and strings. Indexed segments (`items[0]`) stay dict keys
("0"), because only the endpoint's parameter schema knows whether `x[0]` is an array
element or a metadata key named "0"; `params.py` turns them into lists where arrays are
expected. `x[]=a&x[]=b` (how stripe-python repeats `expand` on list pages) gives a list.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from nobill.sandbox import errors


def split_key(key: str) -> list[str]:
    """`items[0][price]` → `["items", "0", "price"]`; `expand[]` → `["expand", ""]`."""
    head, bracket, rest = key.partition("[")
    if not bracket:
        return [key]
    parts = [head]
    remaining = "[" + rest
    while remaining:
        if not remaining.startswith("[") or "]" not in remaining:
            # Not bracket notation after all (e.g. `a[b`): keep the raw key so it is
            # reported as an unknown parameter under the name the caller sent.
            return [key]
        segment, _, remaining = remaining[1:].partition("]")
        parts.append(segment)
    return parts


def render_key(parts: list[str]) -> str:
    """The inverse of `split_key`, used to name a parameter in an error (`items[0][price]`)."""
    return parts[0] + "".join(f"[{p}]" for p in parts[1:])


def decode(encoded: str) -> dict[str, Any]:
    """Decode a query string or an `application/x-www-form-urlencoded` body."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(encoded, keep_blank_values=True):
        _insert(root, split_key(key), value)
    return root


def _insert(root: dict[str, Any], parts: list[str], value: str) -> None:
    node: Any = root
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        name = render_key(parts[: depth + 1])
        if part == "" and depth > 0:
            # `x[]` appends; Stripe only uses it for arrays of strings.
            if not last:
                raise errors.invalid_request("Invalid array", param=render_key(parts[:depth]))
            node.append(value)
            return
        if not isinstance(node, dict):
            raise errors.invalid_request("Invalid hash", param=render_key(parts[:depth]))
        if last:
            existing = node.get(part)
            if isinstance(existing, (dict, list)):
                raise errors.invalid_request("Invalid hash", param=name)
            node[part] = value
            return
        following = parts[depth + 1]
        child = node.get(part)
        if child is None:
            child = [] if following == "" else {}
            node[part] = child
        elif isinstance(child, str):
            raise errors.invalid_request("Invalid hash" if following else "Invalid array", param=name)
        elif following == "" and not isinstance(child, list):
            raise errors.invalid_request("Invalid array", param=name)
        elif following != "" and isinstance(child, list):
            raise errors.invalid_request("Invalid hash", param=name)
        node = child

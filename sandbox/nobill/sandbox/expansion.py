"""`expand[]`: replace ids with the objects they name, along dotted paths such as
`latest_invoice`, `data.customer`, `items.data.price.product` or `line_items`."""

from __future__ import annotations

import copy
from typing import Any

from nobill.sandbox import errors, objects
from nobill.sandbox.state import SandboxState

# Fields whose value is an id that Stripe can expand into the object.
EXPANDABLE_FIELDS = frozenset(
    {
        "customer",
        "default_price",
        "invoice",
        "latest_invoice",
        "price",
        "product",
        "subscription",
        "subscription_item",
        "test_clock",
    }
)
MAX_DEPTH = 4


def cannot_expand(path: str) -> errors.StripeError:
    return errors.invalid_request(f"This property cannot be expanded ({path}).")


def expand(state: SandboxState, rendered: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """Return a copy of `rendered` with each path expanded (the original may be shared)."""
    if not paths:
        return rendered
    result = copy.deepcopy(rendered)
    for index, path in enumerate(paths):
        segments = path.split(".")
        if len(segments) > MAX_DEPTH:
            raise errors.invalid_request(
                f"You cannot expand more than {MAX_DEPTH} levels of a property. Property: {path}",
                param=f"expand[{index}]",
            )
        _expand_path(state, result, segments, path)
    return result


def _expand_path(state: SandboxState, node: Any, segments: list[str], path: str) -> None:
    if not segments:
        return
    head, rest = segments[0], segments[1:]
    if not isinstance(node, dict):
        raise cannot_expand(path)
    if node.get("object") == "list" and head == "data":
        for item in node["data"]:
            _expand_path(state, item, rest, path)
        return
    if node.get("object") == "checkout.session" and head == "line_items":
        # An includable property: absent unless expanded.
        if not isinstance(node.get("line_items"), dict):
            node["line_items"] = _checkout_line_items(state, node["id"])
        _expand_path(state, node["line_items"], rest, path)
        return
    if head not in node:
        raise cannot_expand(path)
    value = node[head]
    if value is None:
        return  # Stripe leaves a null reference null.
    if isinstance(value, str):
        if head not in EXPANDABLE_FIELDS:
            raise cannot_expand(path)
        node[head] = objects.render_by_id(state, value)
        value = node[head]
    elif not rest and head not in EXPANDABLE_FIELDS:
        raise cannot_expand(path)
    _expand_path(state, value, rest, path)


def _checkout_line_items(state: SandboxState, session_id: str) -> dict[str, Any]:
    session = state.checkout_sessions[session_id]
    items = [objects.checkout_line_item(state, session, i) for i in range(len(session.line_items))]
    return objects.list_object(items[:10], f"/v1/checkout/sessions/{session_id}/line_items", has_more=len(items) > 10)

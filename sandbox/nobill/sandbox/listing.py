"""Stripe's list objects: newest first, `limit` (1-100, default 10), `starting_after`,
`ending_before`, `has_more`, and the list's `url`."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, TypeVar

from nobill.sandbox import errors
from nobill.sandbox.objects import list_object

T = TypeVar("T")


def paginate(
    rows: Iterable[T],
    params: Mapping[str, Any],
    *,
    url: str,
    render: Callable[[T], dict[str, Any]],
    id_of: Callable[[T], str] = lambda row: row.id,  # type: ignore[attr-defined]
    collection: Mapping[str, Any] | None = None,
    resource: str = "object",
) -> dict[str, Any]:
    """Page through `rows`, which must already be newest first and filtered.

    `collection` (id → record, in creation order) lets a cursor name an object that the
    filters exclude, as Stripe allows; a cursor that names nothing is `resource_missing`.
    """
    limit = params.get("limit", 10)
    starting_after = params.get("starting_after")
    ending_before = params.get("ending_before")
    if starting_after and ending_before:
        raise errors.invalid_request(
            "You may only specify one of these parameters: ending_before, starting_after.", param="ending_before"
        )
    ordered = list(rows)
    cursor = starting_after or ending_before
    if cursor:
        index = _cursor_index(ordered, cursor, id_of, collection, resource, "starting_after" if starting_after else "ending_before")
        if starting_after:
            page_source = ordered[index:]
            page = page_source[:limit]
            has_more = len(page_source) > limit
        else:
            newer = ordered[:index]
            page = newer[-limit:]
            has_more = len(newer) > limit
    else:
        page = ordered[:limit]
        has_more = len(ordered) > limit
    return list_object([render(row) for row in page], url, has_more)


def _cursor_index(
    ordered: list[T],
    cursor: str,
    id_of: Callable[[T], str],
    collection: Mapping[str, Any] | None,
    resource: str,
    param: str,
) -> int:
    """Where the page starts: the index of the first row older than the cursor for
    `starting_after` (or of the cursor itself for `ending_before`)."""
    ids = [id_of(row) for row in ordered]
    if cursor in ids:
        position = ids.index(cursor)
        return position + 1 if param == "starting_after" else position
    if collection is None or cursor not in collection:
        raise errors.no_such(resource, cursor, param=param)
    # The cursor exists but is filtered out: compare creation order.
    creation = {object_id: n for n, object_id in enumerate(collection)}
    cursor_rank = creation[cursor]
    for position, object_id in enumerate(ids):
        if creation.get(object_id, -1) < cursor_rank:
            return position
    return len(ids)


def newest_first(collection: Mapping[str, T], keep: Callable[[T], bool] = lambda row: True) -> list[T]:
    return [row for row in reversed(list(collection.values())) if keep(row)]

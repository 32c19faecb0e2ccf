"""Search (`GET /v1/customers/search`, `/v1/products/search`, `/v1/prices/search`) with
Stripe's search query language (https://docs.stripe.com/search#search-query-language):

    email:'a@example.com'            exact match (case-insensitive)
    name~'acme'                      substring (at least 3 characters)
    metadata['org_id']:'o_123'       metadata by key
    -status:'x', created>1700000000  negation; numeric comparisons >, <, >=, <=
    field:null                       the field is not set
    a AND b, a OR b                  up to 10 clauses, AND and OR not mixed

Answers are `search_result` objects with `has_more` and an opaque `next_page` to pass
back as `page`, newest first.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Callable

from nobill.sandbox import errors, objects
from nobill.sandbox.params import Int, Str, endpoint
from nobill.sandbox.routing import Call, route
from nobill.sandbox.state import SandboxState

MAX_CLAUSES = 10
SEARCH = endpoint({"limit": Int(minimum=1, maximum=100), "page": Str(), "query": Str(max_length=10_000)}, required=("query",))

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<and>AND\b) | (?P<or>OR\b)
      | (?P<clause>(?P<neg>-)?(?P<field>metadata\[(?:'[^']*'|"[^"]*")\]|[a-z_]+)
                   (?P<op>>=|<=|:|~|>|<)
                   (?P<value>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|-?\d+|null))
    )""",
    re.VERBOSE,
)


@dataclass
class Clause:
    field: str  # a field name, or `metadata` with `key`
    key: str | None
    op: str
    value: str | int | None
    negate: bool


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def parse(query: str, fields: dict[str, str]) -> tuple[str, list[Clause]]:
    """Parse a query into its joining word ("AND"/"OR") and clauses; `fields` maps each
    searchable field to its kind (`string`, `number`, `boolean`, `metadata`)."""
    clauses: list[Clause] = []
    joins: set[str] = set()
    position, expect_clause = 0, True
    text = query.strip()
    if not text:
        raise _invalid("the query is empty")
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise _invalid(f"unexpected text at character {position + 1}: {text[position:position + 20]!r}")
        position = match.end()
        if match.group("clause"):
            if not expect_clause:
                raise _invalid("clauses must be joined with AND or OR")
            clauses.append(_clause(match, fields))
            expect_clause = False
        else:
            if expect_clause:
                raise _invalid("AND/OR must stand between two clauses")
            joins.add("AND" if match.group("and") else "OR")
            expect_clause = True
    if expect_clause:
        raise _invalid("the query ends with AND/OR")
    if len(joins) > 1:
        raise _invalid("a query cannot combine AND and OR")
    if len(clauses) > MAX_CLAUSES:
        raise _invalid(f"a query can have at most {MAX_CLAUSES} clauses")
    return (joins.pop() if joins else "AND"), clauses


def _clause(match: re.Match[str], fields: dict[str, str]) -> Clause:
    raw_field, op, raw_value = match.group("field"), match.group("op"), match.group("value")
    key = None
    if raw_field.startswith("metadata["):
        key, field_name = _unquote(raw_field[len("metadata["):-1]), "metadata"
    else:
        field_name = raw_field
    kind = fields.get(field_name)
    if kind is None:
        supported = ", ".join(sorted(fields))
        raise _invalid(f"`{field_name}` is not a searchable field here (supported: {supported})")
    if kind == "metadata" and key is None:
        raise _invalid("search metadata by key: metadata['key']:'value'")
    value: str | int | None
    if raw_value == "null":
        value = None
        if op != ":":
            raise _invalid("null can only be matched with ':'")
    elif raw_value[0] in "'\"":
        value = _unquote(raw_value)
    else:
        value = int(raw_value)
    if op in (">", "<", ">=", "<=") and (kind != "number" or not isinstance(value, int)):
        raise _invalid(f"`{field_name}` cannot be compared with {op}; only numeric fields such as created can")
    if kind == "number" and op in (":",) and value is not None and not isinstance(value, int):
        raise _invalid(f"`{field_name}` takes a number")
    if kind != "number" and isinstance(value, int):
        raise _invalid(f"values of `{field_name}` must be quoted strings")
    if op == "~" and (kind not in ("string", "metadata") or not isinstance(value, str) or len(value) < 3):
        raise _invalid("substring search (~) needs a string field and at least 3 characters")
    return Clause(field_name, key, op, value, bool(match.group("neg")))


def _invalid(reason: str) -> errors.StripeError:
    return errors.invalid_request(f"We were unable to parse your search query: {reason}.", param="query")


def _matches(clause: Clause, values: dict[str, Any]) -> bool:
    actual = values.get(clause.field) if clause.key is None else (values.get("metadata") or {}).get(clause.key)
    if clause.value is None:
        result = actual is None
    elif actual is None:
        result = False
    elif clause.op == ":":
        if isinstance(actual, bool):
            result = str(actual).lower() == str(clause.value).lower()
        elif isinstance(actual, int):
            result = actual == clause.value
        else:
            result = str(actual).lower() == str(clause.value).lower()
    elif clause.op == "~":
        result = str(clause.value).lower() in str(actual).lower()
    else:
        number = int(actual)
        bound = int(clause.value)
        result = {">": number > bound, "<": number < bound, ">=": number >= bound, "<=": number <= bound}[clause.op]
    return result != clause.negate


def _page_token(query: str, offset: int) -> str:
    digest = hashlib.sha256(query.encode()).hexdigest()[:12]
    return base64.urlsafe_b64encode(json.dumps({"q": digest, "o": offset}).encode()).decode().rstrip("=")


def _page_offset(query: str, token: str | None) -> int:
    if token is None:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if data["q"] == hashlib.sha256(query.encode()).hexdigest()[:12] and isinstance(data["o"], int) and data["o"] >= 0:
            return int(data["o"])
    except (ValueError, KeyError, TypeError):
        pass
    raise errors.invalid_request("Invalid page: it does not belong to this query (pass `next_page` back unchanged).", param="page")


def search(
    call: Call,
    rows: list[Any],
    fields: dict[str, str],
    values_of: Callable[[Any], dict[str, Any]],
    render: Callable[[Any], dict[str, Any]],
    url: str,
) -> dict[str, Any]:
    params = call.params
    query = params["query"]
    join, clauses = parse(query, fields)
    combine = all if join == "AND" else any
    found = [row for row in rows if combine(_matches(clause, values_of(row)) for clause in clauses)]
    offset = _page_offset(query, params.get("page"))
    limit = params.get("limit", 10)
    page = found[offset:offset + limit]
    has_more = len(found) > offset + limit
    return {
        "object": "search_result",
        "data": [render(row) for row in page],
        "has_more": has_more,
        "next_page": _page_token(query, offset + limit) if has_more else None,
        "url": url,
    }


def _newest(collection: dict[str, Any]) -> list[Any]:
    return [row for row in reversed(list(collection.values())) if not getattr(row, "deleted", False)]


CUSTOMER_FIELDS = {"created": "number", "email": "string", "metadata": "metadata", "name": "string", "phone": "string"}
PRODUCT_FIELDS = {
    "active": "boolean",
    "created": "number",
    "description": "string",
    "metadata": "metadata",
    "name": "string",
    "shippable": "boolean",
    "url": "string",
}
PRICE_FIELDS = {
    "active": "boolean",
    "currency": "string",
    "lookup_key": "string",
    "metadata": "metadata",
    "product": "string",
    "type": "string",
}


def _values(record: Any, fields: dict[str, str]) -> dict[str, Any]:
    return {name: getattr(record, name, None) for name in fields}


@route("GET", "/v1/customers/search", SEARCH)
def search_customers(call: Call) -> dict[str, Any]:
    state: SandboxState = call.state
    return search(
        call, _newest(state.customers), CUSTOMER_FIELDS, lambda r: _values(r, CUSTOMER_FIELDS), lambda r: objects.customer(state, r), "/v1/customers/search"
    )


@route("GET", "/v1/products/search", SEARCH)
def search_products(call: Call) -> dict[str, Any]:
    state: SandboxState = call.state
    return search(
        call, _newest(state.products), PRODUCT_FIELDS, lambda r: _values(r, PRODUCT_FIELDS), lambda r: objects.product(state, r), "/v1/products/search"
    )


@route("GET", "/v1/prices/search", SEARCH)
def search_prices(call: Call) -> dict[str, Any]:
    state: SandboxState = call.state
    return search(
        call, _newest(state.prices), PRICE_FIELDS, lambda r: _values(r, PRICE_FIELDS), lambda r: objects.price(state, r), "/v1/prices/search"
    )

"""The Stripe API routes the sandbox serves, and how one call is executed.

Each resource module declares its endpoints with `@route(method, path, schema)`. A call
is validated against the schema before the state lock is taken, then the handler runs
with the lock held, and `expand[]` is applied to what it returns.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any, Callable

from nobill.sandbox import errors
from nobill.sandbox.expansion import expand
from nobill.sandbox.params import Hash
from nobill.sandbox.state import RequestInfo, SandboxState

# Modules whose import registers routes, in the order their routes are matched.
ROUTE_MODULES = (
    "nobill.sandbox.search",
    "nobill.sandbox.payment_methods",
    "nobill.sandbox.customers",
    "nobill.sandbox.catalog",
    "nobill.sandbox.meters",
    "nobill.sandbox.checkout",
    "nobill.sandbox.subscriptions",
    "nobill.sandbox.previews",
    "nobill.sandbox.invoices",
    "nobill.sandbox.invoice_items",
    "nobill.sandbox.clocks",
    "nobill.sandbox.webhook_endpoints",
    "nobill.sandbox.events",
    "nobill.sandbox.billing_portal",
)


@dataclass
class Call:
    state: SandboxState
    params: dict[str, Any]
    path_args: dict[str, str]
    request: RequestInfo


Handler = Callable[[Call], dict[str, Any]]


@dataclass
class Route:
    method: str
    template: str
    pattern: re.Pattern[str]
    schema: Hash
    handler: Handler


ROUTES: list[Route] = []


def route(method: str, template: str, schema: Hash) -> Callable[[Handler], Handler]:
    regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "$"

    def register(handler: Handler) -> Handler:
        ROUTES.append(Route(method, template, re.compile(regex), schema, handler))
        return handler

    return register


def load_routes() -> list[Route]:
    for module in ROUTE_MODULES:
        importlib.import_module(module)
    return ROUTES


def find(method: str, path: str) -> tuple[Route, dict[str, str]]:
    """The route for a call; routes are matched in registration order, so fixed paths
    such as `/v1/customers/search` are registered before `/v1/customers/{customer}`."""
    for candidate in ROUTES:
        if candidate.method != method:
            continue
        match = candidate.pattern.match(path)
        if match:
            return candidate, match.groupdict()
    for endpoint_method, pattern, template in _stripe_endpoints():
        if endpoint_method == method and pattern.match(path):
            raise errors.invalid_request(
                f"The NOBill Stripe sandbox does not simulate {method} {template} (it is a real Stripe endpoint; "
                "extend nobill/sandbox if NOBill needs it)."
            )
    raise errors.unrecognized_url(method, path)


_COMPILED: list[tuple[str, re.Pattern[str], str]] = []


def _stripe_endpoints() -> list[tuple[str, re.Pattern[str], str]]:
    """Stripe's real endpoints as (method, pattern, template), compiled on first use."""
    if not _COMPILED:
        from nobill.sandbox.stripe_endpoints import STRIPE_V1_ENDPOINTS

        for entry in STRIPE_V1_ENDPOINTS:
            method, template = entry.split(" ", 1)
            _COMPILED.append((method, re.compile("^" + re.sub(r"\{\w+\}", "[^/]+", template) + "$"), template))
    return _COMPILED


def execute(state: SandboxState, found: Route, path_args: dict[str, str], raw_params: dict[str, Any], request: RequestInfo) -> dict[str, Any]:
    params = found.schema.parse(raw_params, [])
    with state.lock:
        state.request = request
        try:
            result = found.handler(Call(state, params, path_args, request))
            if params.get("expand"):
                result = expand(state, result, params["expand"])
            return result
        finally:
            state.request = None

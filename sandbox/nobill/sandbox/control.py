"""The control API (`/_sandbox/...`): JSON over plain HTTP, no API key, for tests and the
dev demo. Every endpoint is listed in README.md."""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qs

from nobill.sandbox import errors, objects
from nobill.sandbox.billing_portal import perform
from nobill.sandbox.checkout import complete_session
from nobill.sandbox.due_work import settle
from nobill.sandbox.gateway import Response, json_bytes
from nobill.sandbox.payment_methods import set_payment_behavior
from nobill.sandbox.settings import API_VERSION

if TYPE_CHECKING:
    from nobill.sandbox.server import Sandbox

Handler = Callable[["Sandbox", dict[str, str], dict[str, Any], dict[str, list[str]]], Any]
_ROUTES: list[tuple[str, re.Pattern[str], Handler]] = []


def control(method: str, template: str) -> Callable[[Handler], Handler]:
    pattern = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "$")

    def register(handler: Handler) -> Handler:
        _ROUTES.append((method, pattern, handler))
        return handler

    return register


def handle(sandbox: "Sandbox", method: str, path: str, query: str, body: bytes) -> Response:
    try:
        for route_method, pattern, handler in _ROUTES:
            match = pattern.match(path)
            if match and route_method == method:
                payload = _json_body(body)
                result = handler(sandbox, match.groupdict(), payload, parse_qs(query))
                return Response(200, json_bytes(result))
        raise errors.invalid_request(f"Unknown control endpoint: {method} {path} (see nobill/sandbox/README.md)", status=404)
    except errors.StripeError as error:
        return Response(error.status, json_bytes(error.body()))


def _json_body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except ValueError:
        raise errors.invalid_request("The control API expects a JSON object body.") from None
    if not isinstance(value, dict):
        raise errors.invalid_request("The control API expects a JSON object body.")
    return value


def _number(payload: dict[str, Any], name: str, default: float) -> float:
    value = payload.get(name, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise errors.invalid_request(f"Invalid {name}: {value!r}", param=name)
    return float(value)


# -- endpoints ------------------------------------------------------------------------


@control("GET", "/_sandbox/health")
def health(sandbox: "Sandbox", args: dict[str, str], payload: dict[str, Any], query: dict[str, list[str]]) -> Any:
    return {"status": "ok", "url": sandbox.url, "api_version": API_VERSION}


@control("POST", "/_sandbox/reset")
def reset(sandbox: "Sandbox", args: dict[str, str], payload: dict[str, Any], query: dict[str, list[str]]) -> Any:
    sandbox.reset()
    return {"reset": True}


@control("POST", "/_sandbox/checkout/sessions/{session}/complete")
def complete_checkout(sandbox: "Sandbox", args: dict[str, str], payload: dict[str, Any], query: dict[str, list[str]]) -> Any:
    state = sandbox.state
    with state.lock:
        session = state.get_checkout_session(args["session"], status=404)
        return complete_session(
            state, session, payload.get("outcome", "succeeded"), email=payload.get("email"), name=payload.get("name")
        )


@control("POST", "/_sandbox/billing_portal/sessions/{session}/actions")
def portal_action(sandbox: "Sandbox", args: dict[str, str], payload: dict[str, Any], query: dict[str, list[str]]) -> Any:
    """Do what a customer does in the billing portal (see billing_portal.perform)."""
    with sandbox.state.lock:
        return perform(sandbox.state, args["session"], str(payload.get("action", "")), payload)


@control("POST", "/_sandbox/customers/{customer}/payment_behavior")
def payment_behavior(sandbox: "Sandbox", args: dict[str, str], payload: dict[str, Any], query: dict[str, list[str]]) -> Any:
    behavior = payload.get("behavior")
    if behavior not in ("succeed", "decline"):
        raise errors.invalid_request("behavior must be 'succeed' or 'decline'", param="behavior")
    state = sandbox.state
    with state.lock:
        customer = state.get_customer(args["customer"], status=404)
        set_payment_behavior(state, customer, behavior, state.now(customer.test_clock))
        return objects.customer(state, customer)


@control("GET", "/_sandbox/faults")
def get_faults(sandbox: "Sandbox", args: dict[str, str], payload: dict[str, Any], query: dict[str, list[str]]) -> Any:
    return sandbox.faults.public()


@control("POST", "/_sandbox/faults")
def set_faults(sandbox: "Sandbox", args: dict[str, str], payload: dict[str, Any], query: dict[str, list[str]]) -> Any:
    sandbox.faults.configure(payload)
    return sandbox.faults.public()


@control("DELETE", "/_sandbox/faults")
def clear_faults(sandbox: "Sandbox", args: dict[str, str], payload: dict[str, Any], query: dict[str, list[str]]) -> Any:
    sandbox.faults.clear()
    return sandbox.faults.public()


@control("GET", "/_sandbox/webhooks/chaos")
def get_chaos(sandbox: "Sandbox", args: dict[str, str], payload: dict[str, Any], query: dict[str, list[str]]) -> Any:
    return vars(sandbox.webhooks.chaos)


@control("POST", "/_sandbox/webhooks/chaos")
def set_chaos(sandbox: "Sandbox", args: dict[str, str], payload: dict[str, Any], query: dict[str, list[str]]) -> Any:
    sandbox.webhooks.set_chaos(payload)
    return vars(sandbox.webhooks.chaos)


@control("DELETE", "/_sandbox/webhooks/chaos")
def clear_chaos(sandbox: "Sandbox", args: dict[str, str], payload: dict[str, Any], query: dict[str, list[str]]) -> Any:
    sandbox.webhooks.set_chaos({})
    return vars(sandbox.webhooks.chaos)


@control("POST", "/_sandbox/webhooks/wait")
def wait_for_webhooks(sandbox: "Sandbox", args: dict[str, str], payload: dict[str, Any], query: dict[str, list[str]]) -> Any:
    # Clocks still advancing will send more events: wait for them first.
    deadline = time.monotonic() + _number(payload, "timeout", 10.0)
    while _advancing_clocks(sandbox) and time.monotonic() < deadline:
        time.sleep(0.01)
    idle = not _advancing_clocks(sandbox) and sandbox.webhooks.wait_idle(max(0.0, deadline - time.monotonic()))
    return {"idle": idle, "pending": sandbox.webhooks.pending_count()}


def _advancing_clocks(sandbox: "Sandbox") -> bool:
    with sandbox.state.lock:
        return any(clock.status == "advancing" for clock in sandbox.state.test_clocks.values())


@control("GET", "/_sandbox/webhooks/deliveries")
def list_deliveries(sandbox: "Sandbox", args: dict[str, str], payload: dict[str, Any], query: dict[str, list[str]]) -> Any:
    wanted = {name: values[0] for name, values in query.items() if name in ("event", "endpoint", "outcome", "type")}
    rows = [row for row in list(sandbox.webhooks.log) if all(row.get(k) == v for k, v in wanted.items())]
    return {"data": rows, "pending": sandbox.webhooks.pending_count()}


@control("GET", "/_sandbox/settings")
def get_settings(sandbox: "Sandbox", args: dict[str, str], payload: dict[str, Any], query: dict[str, list[str]]) -> Any:
    return sandbox.state.settings.public()


@control("POST", "/_sandbox/settings")
def update_settings(sandbox: "Sandbox", args: dict[str, str], payload: dict[str, Any], query: dict[str, list[str]]) -> Any:
    with sandbox.state.lock:
        sandbox.state.settings.update(payload)
    return sandbox.state.settings.public()


@control("POST", "/_sandbox/tick")
def tick(sandbox: "Sandbox", args: dict[str, str], payload: dict[str, Any], query: dict[str, list[str]]) -> Any:
    state = sandbox.state
    with state.lock:
        return {"steps": settle(state, None, state.real_now())}


@control("POST", "/_sandbox/state/save")
def save_state(sandbox: "Sandbox", args: dict[str, str], payload: dict[str, Any], query: dict[str, list[str]]) -> Any:
    if sandbox.state_file is None:
        raise errors.invalid_request("This sandbox was started without a state file.")
    sandbox.save()
    return {"saved": str(sandbox.state_file)}

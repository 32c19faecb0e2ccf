"""Fixtures for the Stripe sandbox tests: one sandbox per session (reset before each test),
the real `stripe` client pointed at it, a control-API helper, a local webhook receiver,
a small catalog and a test clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import stripe

from nobill.sandbox.server import SandboxHandle, start_sandbox
from sandbox_helpers import Catalog, Delivery, WebhookReceiver, call_control, fast_settings, new_client


# -- the sandbox ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxHandle]:
    with start_sandbox("127.0.0.1", 0, settings=fast_settings(), autosave_interval=None) as handle:
        yield handle


@pytest.fixture
def sandbox(sandbox_server: SandboxHandle) -> SandboxHandle:
    """The session's sandbox, reset to empty (objects, faults, chaos, settings)."""
    status, _ = call_control(sandbox_server.url, "POST", "/_sandbox/reset")
    assert status == 200
    return sandbox_server


@pytest.fixture
def client(sandbox: SandboxHandle) -> stripe.StripeClient:
    return new_client(sandbox.url)


@pytest.fixture
def control(sandbox: SandboxHandle) -> Callable[..., Any]:
    """`control("POST", "/_sandbox/...", {...})` → JSON; fails the test on a non-2xx answer
    unless `expect=<status>` is given."""

    def call(method: str, path: str, body: dict[str, Any] | None = None, *, expect: int = 200) -> Any:
        status, payload = call_control(sandbox.url, method, path, body)
        assert status == expect, f"{method} {path} answered {status}: {payload}"
        return payload

    return call


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if receiver.hang_seconds:
                time.sleep(receiver.hang_seconds)
            with receiver.lock:
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.answers.append(status)
                if status < 300:
                    receiver.deliveries.append(Delivery(body, dict(self.headers), time.monotonic()))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/stripe/webhooks"
    yield receiver
    server.shutdown()
    server.server_close()


# -- a catalog and a test clock --------------------------------------------------------


@pytest.fixture
def catalog(client: stripe.StripeClient) -> Catalog:
    meter = client.v1.billing.meters.create(
        {"display_name": "API calls", "event_name": "api_calls", "default_aggregation": {"formula": "sum"}}
    )
    product = client.v1.products.create({"name": "Pro"})
    base = client.v1.prices.create(
        {"product": product.id, "currency": "usd", "unit_amount": 2000, "recurring": {"interval": "month"}, "lookup_key": "pro_base"}
    )
    seat = client.v1.prices.create(
        {"product": product.id, "currency": "usd", "unit_amount": 500, "recurring": {"interval": "month"}, "lookup_key": "pro_seat"}
    )
    usage = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount_decimal": "0.5",
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    return Catalog(product, base, seat, usage, meter)


@pytest.fixture
def clock(client: stripe.StripeClient) -> Any:
    """A test clock frozen at 09:00 UTC yesterday."""
    start = int(time.time()) // 86_400 * 86_400 - 86_400 + 9 * 3_600
    return client.v1.test_helpers.test_clocks.create({"frozen_time": start, "name": "test"})

"""Helpers for the Stripe sandbox tests (plain HTTP, the stripe client, a webhook
receiver); imported by conftest.py and the test modules."""

from __future__ import annotations

from http.client import HTTPConnection
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import requests
import stripe

from nobill.sandbox.clock_polling import advance_and_wait
from nobill.sandbox.settings import SandboxSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES_ENV = "NOBILL_STRIPE_FIXTURES"
# Stripe's example objects, vendored with their MIT licence (see stripe_fixtures/README.md).
DEFAULT_FIXTURES = Path(__file__).resolve().parent / "stripe_fixtures" / "fixtures3.json"

# Webhook retries and the real-time ticker run at test speed.
FAST_SETTINGS = dict(
    webhook_retry_schedule=(0.05, 0.1, 0.2), webhook_timeout=2.0, tick_interval=0.2, test_clock_advance_delay=0.02
)


def fast_settings(**overrides: Any) -> SandboxSettings:
    return SandboxSettings(**{**FAST_SETTINGS, **overrides})


def new_client(url: str, api_key: str = "sk_test_sandbox", **options: Any) -> stripe.StripeClient:
    """A real StripeClient against the sandbox, without retries so faults are visible."""
    session = requests.Session()
    # NOTE: a proxy configured in the environment must never see loopback traffic.
    session.trust_env = False
    options.setdefault("max_network_retries", 0)
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": url, "meter_events": url},
        http_client=stripe.RequestsClient(session=session),
        **options,
    )


def advance(client: stripe.StripeClient, clock: Any, frozen_time: int) -> Any:
    """Advance a test clock and poll until it is `ready`, as code must do against Stripe."""
    return advance_and_wait(client, clock if isinstance(clock, str) else clock.id, frozen_time, timeout=30)


# -- plain HTTP -------------------------------------------------------------------------

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with _NO_PROXY.open(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def http_raw(url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request with http.client: no proxies and no redirects followed."""
    parts = urllib.parse.urlsplit(url)
    connection = HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        connection.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def call_control(base_url: str, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    status, _, raw = http(base_url + path, method, data, {"Content-Type": "application/json"})
    return status, json.loads(raw) if raw else None


# -- a webhook receiver -----------------------------------------------------------------


@dataclass
class Delivery:
    body: bytes
    headers: dict[str, str]
    received_at: float


@dataclass
class WebhookReceiver:
    """A local HTTP endpoint on 127.0.0.1 that records what the sandbox sends.

    `statuses` is a queue of status codes to answer with (then 200); `hang_seconds`
    delays every answer (to provoke timeouts).
    """

    url: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    hang_seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, predicate: Callable[[list[Delivery]], bool], timeout: float = 10.0) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                snapshot = list(self.deliveries)
            if predicate(snapshot):
                return snapshot
            time.sleep(0.01)
        raise AssertionError(f"webhook receiver: condition not met within {timeout}s ({len(self.deliveries)} deliveries)")

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(d.body) for d in self.deliveries]


@dataclass
class Catalog:
    product: Any
    base: Any  # flat monthly fee, licensed
    seat: Any  # per seat, licensed
    usage: Any  # metered, backed by `meter`
    meter: Any


@lru_cache(maxsize=1)
def _read_fixtures(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))["resources"]


def stripe_example_objects() -> dict[str, Any]:
    """Stripe's official example object per resource (tests/sandbox/stripe_fixtures, vendored
    from Stripe's OpenAPI repository); NOBILL_STRIPE_FIXTURES may point at another copy.
    Called inside the tests, so a missing file FAILS them (never skips, never errors out
    in a fixture): the shape checks must not disappear silently.
    """
    path = Path(os.environ.get(FIXTURES_ENV) or DEFAULT_FIXTURES)
    if not path.is_file():
        pytest.fail(
            f"Stripe's example objects were not found at {path}. The repository carries them in "
            f"tests/sandbox/stripe_fixtures/fixtures3.json; {FIXTURES_ENV} may name another copy.",
            pytrace=False,
        )
    return _read_fixtures(str(path))

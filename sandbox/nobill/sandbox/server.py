"""Starting and stopping a sandbox: `start_sandbox(...)` for tests and `nobill dev`.

    from nobill.sandbox.server import start_sandbox

    with start_sandbox(port=0) as sandbox:          # background threads
        client = stripe.StripeClient(
            "sk_test_anything",
            base_addresses={"api": sandbox.url, "meter_events": sandbox.url},
        )
        client.v1.customers.create({"email": "a@example.com"})
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from nobill.sandbox import persistence
from nobill.sandbox.clocks import finish_due_advances
from nobill.sandbox.due_work import settle
from nobill.sandbox.faults import Faults
from nobill.sandbox.gateway import ApiGateway
from nobill.sandbox.http_server import SandboxHTTPServer
from nobill.sandbox.idempotency import IdempotencyStore
from nobill.sandbox.settings import SandboxSettings
from nobill.sandbox.state import SandboxState
from nobill.sandbox.webhook_delivery import WebhookDispatcher

log = logging.getLogger("nobill.sandbox")


class Sandbox:
    """One sandbox: state, webhook delivery, faults, idempotency, and its background work."""

    def __init__(
        self,
        settings: SandboxSettings | None = None,
        state_file: str | Path | None = None,
        *,
        autosave_interval: float | None = 5.0,
        webhook_workers: int = 4,
    ) -> None:
        self.state = SandboxState(settings or SandboxSettings())
        # `reset` goes back to the settings the sandbox was started with.
        self._initial_settings = copy.deepcopy(self.state.settings)
        self.faults = Faults()
        self.idempotency = IdempotencyStore()
        self.webhooks = WebhookDispatcher(self.state, workers=webhook_workers)
        self.gateway = ApiGateway(self.state, self.faults, self.idempotency)
        self.state_file = Path(state_file) if state_file is not None else None
        self.autosave_interval = autosave_interval
        self.url = ""
        self._save_lock = threading.Lock()
        self._last_save = time.monotonic()
        if self.state_file is not None and self.state_file.exists():
            deliveries = persistence.load(self.state_file, self.state)
            self.webhooks.restore(deliveries)
            log.info("sandbox state loaded", extra={"fields": {"state_file": str(self.state_file), "customers": len(self.state.customers)}})

    def set_url(self, url: str) -> None:
        self.url = url
        self.state.base_url = url

    def reset(self) -> None:
        with self.state.lock:
            self.state.reset()
            self.state.settings = copy.deepcopy(self._initial_settings)
            self.webhooks.reset()
        self.faults.clear()
        self.idempotency.clear()
        log.info("sandbox state reset")

    def tick(self) -> None:
        """Real-time due work, and an autosave when the state changed."""
        with self.state.lock:
            settle(self.state, None, self.state.real_now())
        if (
            self.state_file is not None
            and self.autosave_interval is not None
            and self.state.dirty
            and time.monotonic() - self._last_save >= self.autosave_interval
        ):
            self.save()

    def finish_clock_advances(self) -> float | None:
        """Test clock advances that are due now; returns seconds until the next one."""
        with self.state.lock:
            return finish_due_advances(self.state)

    def save(self) -> None:
        if self.state_file is None:
            return
        with self._save_lock:
            with self.state.lock:
                # Serialised under the lock: event dicts are shared with webhook delivery.
                text = json.dumps(persistence.snapshot(self.state, self.webhooks.scheduled()), separators=(",", ":"))
                self.state.dirty = False
            persistence.save_text(self.state_file, text)
            self._last_save = time.monotonic()
        log.info("sandbox state saved", extra={"fields": {"state_file": str(self.state_file)}})


class SandboxHandle:
    """A running sandbox: `.url`, `.host`, `.port`, `.stop()`; usable as a context manager."""

    def __init__(self, sandbox: Sandbox, server: SandboxHTTPServer, host: str, port: int) -> None:
        self.sandbox = sandbox
        self.host = host
        self.port = port
        self.url = sandbox.url
        self._server = server
        self._stop = threading.Event()
        self._stopped = False
        self._serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="sandbox-http", daemon=True)
        self._ticker = threading.Thread(target=self._tick_forever, name="sandbox-ticker", daemon=True)
        # Test clocks advance in the background, as on Stripe; an advance call wakes it.
        self._clock_wakeup = threading.Event()
        sandbox.state.on_clock_advance = self._clock_wakeup.set
        self._clocks = threading.Thread(target=self._advance_clocks_forever, name="sandbox-clocks", daemon=True)
        self._serving.start()
        self._ticker.start()
        self._clocks.start()

    def _tick_forever(self) -> None:
        while not self._stop.wait(self.sandbox.state.settings.tick_interval):
            try:
                self.sandbox.tick()
            except Exception:
                log.exception("sandbox ticker failed")

    def _advance_clocks_forever(self) -> None:
        wait: float | None = 0.0
        while not self._stop.is_set():
            # A clock loaded from a state file may be mid-advance: check now and then too.
            self._clock_wakeup.wait(1.0 if wait is None else min(wait, 1.0))
            self._clock_wakeup.clear()
            if self._stop.is_set():
                return
            try:
                wait = self.sandbox.finish_clock_advances()
            except Exception:
                log.exception("sandbox test clock advance failed")
                wait = None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, finish webhook work in flight, and save state if a file is set."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        self._clock_wakeup.set()
        self._server.shutdown()
        self._server.close_all_connections()
        self._server.server_close()
        self._serving.join(timeout)
        self._ticker.join(timeout)
        self._clocks.join(timeout)
        self.sandbox.webhooks.stop(timeout)
        if self.sandbox.state_file is not None:
            self.sandbox.save()
        log.info("Stripe sandbox stopped", extra={"fields": {"url": self.url}})

    def __enter__(self) -> "SandboxHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_sandbox(
    host: str = "127.0.0.1",
    port: int = 0,
    state_file: str | Path | None = None,
    *,
    settings: SandboxSettings | None = None,
    autosave_interval: float | None = 5.0,
    webhook_workers: int = 4,
) -> SandboxHandle:
    """Start a sandbox serving in background threads; `port=0` picks a free port.

    With `state_file`, state is loaded from it at start, saved every
    `autosave_interval` seconds while it changes, and saved on `stop()`.
    """
    sandbox = Sandbox(settings, state_file, autosave_interval=autosave_interval, webhook_workers=webhook_workers)
    server = SandboxHTTPServer((host, port), sandbox)
    bound_port = server.server_address[1]
    url_host = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, f"[{host}]" if ":" in host else host)
    sandbox.set_url(f"http://{url_host}:{bound_port}")
    handle = SandboxHandle(sandbox, server, host, bound_port)
    log.info("Stripe sandbox listening", extra={"fields": {"url": sandbox.url, "state_file": str(state_file) if state_file else None}})
    return handle

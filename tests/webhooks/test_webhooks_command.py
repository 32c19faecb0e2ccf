"""`nobill webhooks`: settings it needs, a taken address, serving and a graceful stop."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from support import TEST_SECRET

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("NOBILL_", "STRIPE_"))}
    return {**clean, **extra}


def _run(*args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nobill.cli", "webhooks", *args],
        env=_env(**extra), capture_output=True, text=True, timeout=60, cwd=ROOT,
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_without_a_token_or_secret_it_names_both_settings() -> None:
    result = _run("--addr", "127.0.0.1:0")
    assert result.returncode == 2
    assert "NOBILL_WEBHOOKS_TOKEN" in result.stderr and "NOBILL_JWT_SECRET" in result.stderr


def test_a_taken_address_names_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run(NOBILL_JWT_SECRET=TEST_SECRET, NOBILL_WEBHOOKS_ADDR=f"127.0.0.1:{port}")
    assert result.returncode == 2, result.stderr
    assert "NOBILL_WEBHOOKS_ADDR" in result.stderr and "cannot listen" in result.stderr


def test_a_malformed_address_names_the_setting() -> None:
    result = _run(NOBILL_JWT_SECRET=TEST_SECRET, NOBILL_WEBHOOKS_ADDR="nowhere")
    assert result.returncode == 2 and "NOBILL_WEBHOOKS_ADDR" in result.stderr


def test_it_serves_health_and_stops_on_sigterm() -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "nobill.cli", "webhooks", "--addr", f"127.0.0.1:{port}", "--core", "127.0.0.1:1"],
        env=_env(NOBILL_JWT_SECRET=TEST_SECRET), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline and status is None:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", "/healthz")
                status = connection.getresponse().status
            except OSError:
                time.sleep(0.1)
        assert status == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()

"""`nobill dev` as a user at a terminal runs it, fully embedded: a quiet fresh start, Ctrl-C
(SIGINT to the whole foreground process group, as the terminal sends it) and SIGTERM stop
it in order with nothing left running, and the sandbox keeps its port across restarts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.e2e


@pytest.fixture
def home() -> Iterator[Path]:
    """Outside pytest's basetemp, which embedded PostgreSQL's own system user cannot enter."""
    path = Path(tempfile.mkdtemp(prefix="nobill-dev-lifecycle-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _processes_using(path: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(path).encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


def _start(home: Path) -> tuple[dict, subprocess.Popen]:
    ready = home / "ready"
    ready.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOBILL_", "STRIPE_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "nobill.cli", "dev", "--data-dir", str(home / "data"), "--addr", "127.0.0.1:0",
         "--ready-file", str(ready)],
        env={**env, "NOBILL_WEBHOOKS_ADDR": "127.0.0.1:0"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        start_new_session=True,  # its own process group, like a shell job at a terminal
    )
    deadline = time.monotonic() + 120
    while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if not ready.exists():
        process.kill()
        raise AssertionError(f"nobill dev did not start: {process.communicate()[1][-3000:]}")
    return json.loads(Path(ready.read_text()).read_text()), process


def _stop_like_a_terminal(process: subprocess.Popen, sig: int, data: Path) -> str:
    os.killpg(process.pid, sig)  # every process in the group, as Ctrl-C at a terminal does
    try:
        stdout, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError(f"nobill dev did not stop on {signal.Signals(sig).name}") from None
    assert process.returncode == 0, stderr[-3000:]
    deadline = time.monotonic() + 30
    while _processes_using(data) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_using(data) == [], "embedded servers left running"
    return stdout + stderr


def test_dev_starts_quietly_stops_in_order_and_keeps_its_sandbox_port(home: Path) -> None:
    data = home / "data"
    info, process = _start(home)
    try:
        time.sleep(2.5)  # a few scheduler ticks
    finally:
        output = _stop_like_a_terminal(process, signal.SIGINT, data)
    log = (data / "dev.log").read_text()
    # Products that do not exist yet are expected at a fresh start: not a failure.
    assert "stripe call failed" not in log
    assert '"msg": "scheduled"' not in log  # not once a second at the default level
    # The worker stopped before Redis: no lost-connection errors on the way out.
    for text in (output, log):
        assert '"level": "critical"' not in text and "CRITICAL" not in text, text[-3000:]
        assert '"level": "error"' not in text, text[-3000:]
    assert "stopped." in output

    again, process = _start(home)
    try:
        assert again["stripe_api_base"] == info["stripe_api_base"]  # URLs handed out still work
    finally:
        output = _stop_like_a_terminal(process, signal.SIGTERM, data)
    assert "critical" not in (data / "dev.log").read_text().lower()

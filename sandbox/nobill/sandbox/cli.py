"""`nobill sandbox`: run the Stripe sandbox in the foreground until SIGINT/SIGTERM.

The `nobill` command wires `add_arguments` and `run`; `python -m nobill.sandbox` runs
the same thing on its own.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from nobill.sandbox.settings import DUNNING_FINAL_ACTIONS, SandboxSettings

log = logging.getLogger("nobill.sandbox")

DEFAULT_PORT = 12111


def _seconds_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated seconds, got {text!r}") from None
    if any(value < 0 for value in values):
        raise argparse.ArgumentTypeError("delays cannot be negative")
    return values


def _days_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole days, got {text!r}") from None
    if list(values) != sorted(set(values)) or any(value < 0 for value in values):
        raise argparse.ArgumentTypeError("days must be increasing and not negative")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default: {DEFAULT_PORT}; 0 picks one)")
    parser.add_argument(
        "--state-file",
        type=Path,
        default=None,
        help="JSON file holding the sandbox's state: loaded at start, saved while running and on stop",
    )
    parser.add_argument(
        "--autosave-interval", type=float, default=5.0, help="seconds between saves of a changed state (default: 5)"
    )
    parser.add_argument(
        "--webhook-retry-schedule",
        type=_seconds_list,
        default=None,
        help="comma-separated seconds before each webhook retry (default: 1,5,25,125,625,3125)",
    )
    parser.add_argument("--webhook-timeout", type=float, default=None, help="seconds to wait for a webhook answer (default: 10)")
    parser.add_argument(
        "--dunning-retry-days",
        type=_days_list,
        default=None,
        help="days after the first failed payment at which it is retried (default: 3,5,7)",
    )
    parser.add_argument(
        "--dunning-final-action",
        choices=DUNNING_FINAL_ACTIONS,
        default=None,
        help="what happens to a subscription when the last retry fails (default: cancel)",
    )
    parser.add_argument(
        "--test-clock-advance-delay",
        type=float,
        default=None,
        help="seconds a test clock stays `advancing` before it advances in the background (default: 0.2)",
    )
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    parser.add_argument("--log-format", default="text", choices=("text", "json"))
    parser.add_argument("--log-requests", action="store_true", help="log every API request")


class _TextFormatter(logging.Formatter):
    """`2026-01-02T03:04:05Z INFO nobill.sandbox.webhooks webhook delivered event=evt_... status=200`"""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
        fields: dict[str, Any] = getattr(record, "fields", {}) or {}
        suffix = "".join(f" {key}={value}" for key, value in fields.items() if value is not None)
        text = f"{stamp} {record.levelname} {record.name} {record.getMessage()}{suffix}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO", log_format: str = "text", log_requests: bool = False) -> None:
    """Structured logs for the sandbox's loggers, unless the host program set up logging."""
    logger = logging.getLogger("nobill.sandbox")
    logger.setLevel(level)
    logging.getLogger("nobill.sandbox.api").setLevel(logging.DEBUG if log_requests else max(logging.INFO, logging.getLevelName(level)))
    if logging.getLogger().handlers or logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if log_format == "json" else _TextFormatter())
    logger.addHandler(handler)
    logger.propagate = False


def _settings(args: argparse.Namespace) -> SandboxSettings:
    settings = SandboxSettings()
    if args.webhook_retry_schedule is not None:
        settings.webhook_retry_schedule = args.webhook_retry_schedule
    if args.webhook_timeout is not None:
        settings.webhook_timeout = args.webhook_timeout
    if args.dunning_retry_days is not None:
        settings.dunning_retry_days = args.dunning_retry_days
    if args.dunning_final_action is not None:
        settings.dunning_final_action = args.dunning_final_action
    if args.test_clock_advance_delay is not None:
        if args.test_clock_advance_delay < 0:
            raise SystemExit("--test-clock-advance-delay must not be negative")
        settings.test_clock_advance_delay = args.test_clock_advance_delay
    return settings


def run(args: argparse.Namespace) -> int:
    # Imported here so that every other `nobill` command does not pay for the sandbox.
    from nobill.sandbox.server import start_sandbox

    configure_logging(args.log_level, args.log_format, args.log_requests)
    # Handlers first: a SIGTERM that arrives right after the URL is printed (a supervisor
    # or a test stopping it at once) must stop the sandbox gracefully, not kill it.
    stop = threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda number, frame: stop.set())
    try:
        handle = start_sandbox(
            args.host, args.port, args.state_file, settings=_settings(args), autosave_interval=args.autosave_interval
        )
    except OSError as exc:
        log.error("cannot listen", extra={"fields": {"host": args.host, "port": args.port, "error": str(exc)}})
        _restore(previous)
        return 1
    except ValueError as exc:  # an unreadable state file
        log.error("cannot start", extra={"fields": {"error": str(exc)}})
        _restore(previous)
        return 1
    print(f"Stripe sandbox listening on {handle.url}", flush=True)
    print(
        f'  stripe.StripeClient("sk_test_...", base_addresses={{"api": "{handle.url}", "meter_events": "{handle.url}"}})',
        flush=True,
    )
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        log.info("stopping Stripe sandbox")
        handle.stop()
        _restore(previous)
    return 0


def _restore(previous: dict[signal.Signals, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nobill.sandbox", description="Run the NOBill Stripe sandbox.")
    add_arguments(parser)
    return run(parser.parse_args(argv))

"""Graceful stop on SIGTERM/SIGINT, for every long-running command."""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)


def stop_requested() -> threading.Event:
    """An event set by the first SIGTERM or SIGINT. Call it before starting anything, so
    a signal that arrives during start-up is not lost (nor fatal)."""
    event = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("stop requested", extra={"signal": signal.Signals(signum).name})
        event.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return event

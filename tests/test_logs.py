"""Logging writes to the stderr of the moment: a thread that logs after stderr was swapped
(and the old stream closed, as a test run's capture does) neither fails nor loses the line."""

from __future__ import annotations

import io
import json
import logging
import sys

from nobill.logs import configure_logging


def test_a_line_logged_after_stderr_is_swapped_goes_to_the_new_stderr() -> None:
    saved_handlers, saved_level, saved_stderr = logging.getLogger().handlers[:], logging.getLogger().level, sys.stderr
    first, second = io.StringIO(), io.StringIO()
    try:
        sys.stderr = first
        configure_logging("INFO", "json")
        first.close()  # what pytest does to its capture at the end of a test
        sys.stderr = second
        logging.getLogger("nobill.test").info("delivered", extra={"event": "evt_1"})
        line = json.loads(second.getvalue())
        assert line["msg"] == "delivered" and line["event"] == "evt_1"
    finally:
        sys.stderr = saved_stderr
        logging.getLogger().handlers[:] = saved_handlers
        logging.getLogger().setLevel(saved_level)

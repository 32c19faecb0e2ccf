"""Enqueue a job by actor name on the configured broker.

Domain code enqueues through this, never through an imported actor object: actors bind
to the broker that exists when their module is imported, and only the worker imports
jobs modules (nobill/jobs/modules.py)."""

from __future__ import annotations

from typing import Any

import dramatiq


def send(actor_name: str, *args: Any, queue_name: str = "billing", delay_seconds: float = 0) -> None:
    """Put one message for `actor_name` on its queue (after `delay_seconds`)."""
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=queue_name, actor_name=actor_name, args=args, kwargs={}, options={}
    )
    dramatiq.get_broker().enqueue(message, delay=int(delay_seconds * 1000) or None)

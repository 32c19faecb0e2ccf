"""Saving the sandbox's state to a JSON file and loading it back, so a restart of
`nobill dev` keeps customers, subscriptions, invoices, events and pending webhooks.

The file is written atomically (temporary file, fsync, rename), so a crash while saving
leaves the previous state intact. Idempotency keys, faults and settings (which come
from the command line or the control API) are not kept.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

from nobill.sandbox.records import MeterEventRecord, dump_record, load_record
from nobill.sandbox.state import COLLECTIONS, SandboxState

FORMAT = 1


def snapshot(state: SandboxState, scheduled_deliveries: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything worth keeping, as JSON-ready data (call with the state lock held)."""
    return {
        "format": FORMAT,
        "saved_at": state.real_now(),
        "collections": {name: [dump_record(r) for r in getattr(state, name).values()] for name in COLLECTIONS},
        "meter_events": [
            dump_record(event)
            for by_customer in state.meter_events.values()
            for events in by_customer.values()
            for event in events
        ],
        "meter_identifiers": state.meter_identifiers,
        "events": list(state.events.values()),
        "webhook_deliveries": scheduled_deliveries,
    }


def save_text(path: Path, text: str) -> None:
    """Write the JSON text of a `snapshot` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load(path: Path, state: SandboxState) -> list[dict[str, Any]]:
    """Fill `state` from `path`; returns the webhook deliveries to reschedule."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: unsupported sandbox state format {data.get('format')!r}")
    with state.lock:
        state.reset()
        for name, cls in COLLECTIONS.items():
            collection = getattr(state, name)
            for raw in data["collections"].get(name, []):
                record: Any = load_record(cls, raw)
                collection[record.id] = record
        for raw in data.get("meter_events", []):
            event = load_record(MeterEventRecord, raw)
            state.meter_events.setdefault(event.event_name, {}).setdefault(event.customer, []).append(event)
        state.meter_identifiers = dict(data.get("meter_identifiers", {}))
        state.events = OrderedDict((event["id"], event) for event in data.get("events", []))
        state.dirty = False
    return list(data.get("webhook_deliveries", []))

"""A real worker and scheduler for one usage test, isolated from other tests' workers."""

from __future__ import annotations

import threading
import uuid
from contextlib import contextmanager


@contextmanager
def isolated_worker(settings, database, schedule):  # noqa: ANN001
    """A real Dramatiq worker and scheduler on their own Redis namespace, for one test.
    The process-wide job runtime and broker are put back afterwards, so workers other
    tests started in this process (billing's session world) keep their own settings."""
    import dramatiq

    from nobill.jobs import runtime
    from nobill.jobs.runner import start_worker
    from nobill.jobs.scheduler import Scheduler

    saved_state = dict(runtime._state)
    try:
        saved_broker = dramatiq.get_broker()
    except Exception:  # noqa: BLE001 - no broker yet
        saved_broker = None
    namespace = f"nobill-test-usage-{uuid.uuid4().hex[:8]}"
    worker = start_worker(settings.redis_url, threads=4, namespace=namespace, settings=settings, database=database)
    scheduler = Scheduler(settings.redis_url, namespace=namespace, schedule=schedule)
    stop = threading.Event()
    ticker = threading.Thread(target=scheduler.run, args=(stop,), kwargs={"interval": 0.2})
    ticker.start()
    try:
        yield worker
    finally:
        stop.set()
        ticker.join()
        worker.stop(timeout=10_000)
        worker.broker.close()
        with runtime._lock:
            runtime._state.clear()
            runtime._state.update(saved_state)
        if saved_broker is not None:
            dramatiq.set_broker(saved_broker)

"""The usage server: UsageService on grpc.aio, on its own port (NOBILL_USAGE_GRPC_ADDR) in
the same process as the main server, with its own health (following PostgreSQL, like
the main server's) and reflection services.

Why a second server: the main server runs handlers on a fixed pool of sync threads, and a
stream holds one thread for its whole life, so a few dozen idle streams would stop every
other RPC. Here a stream costs a coroutine; only the database work of a batch borrows one
of NOBILL_USAGE_DB_THREADS threads. A stream's next batch is read only after the previous
one is acknowledged, so when writes fall behind, HTTP/2 flow control slows the senders."""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from nobill.api.access import OPEN_SERVICES, load_rules
from nobill.api.aio_interceptor import AioInterceptor, StreamLimits
from nobill.api.registry import register_all
from nobill.api.server import MAX_MESSAGE_BYTES, DatabaseHealth, nobill_interceptor
from nobill.config import Settings
from nobill.db.database import Database
from nobill.errors import ConfigError
from nobill.v1 import usage_pb2

log = logging.getLogger(__name__)

USAGE_SERVICE = usage_pb2.DESCRIPTOR.services_by_name["UsageService"].full_name


@dataclass
class RunningUsageServer:
    port: int
    limits: StreamLimits
    _loop: asyncio.AbstractEventLoop
    _thread: threading.Thread
    _server: grpc.aio.Server
    _health: health.aio.HealthServicer
    _executor: ThreadPoolExecutor
    monitor: DatabaseHealth

    def stop(self, grace: float = 10.0) -> None:
        """Refuse new calls, let in-flight ones finish for up to `grace` seconds."""
        self.monitor.stop()
        if not self._thread.is_alive():
            return

        async def stop() -> None:
            await self._health.enter_graceful_shutdown()
            await self._server.stop(grace)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=grace + 10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._executor.shutdown(wait=False, cancel_futures=True)


def start_usage_server(
    settings: Settings, database: Database, *, authentication: bool = True, reuse_port: bool = False
) -> RunningUsageServer:
    """A started usage server on settings.usage_grpc_addr (port 0 picks a free port);
    `reuse_port` as for the main server (only `serve --processes N` shares the port)."""
    rules = load_rules()
    nobill = nobill_interceptor(settings, database, rules, authentication=authentication)
    executor = ThreadPoolExecutor(max_workers=settings.usage_db_threads, thread_name_prefix="usage-db")
    limits = StreamLimits(total=settings.usage_max_streams, per_caller=settings.usage_max_streams_per_caller)
    loop = asyncio.new_event_loop()
    started: Future[RunningUsageServer] = Future()

    async def start() -> None:
        server = grpc.aio.server(
            interceptors=[
                AioInterceptor(
                    rules=rules, nobill=nobill, database=database, executor=executor, limits=limits,
                    idle_timeout=settings.usage_stream_idle_seconds, open_services=OPEN_SERVICES,
                )
            ],
            options=[
                ("grpc.so_reuseport", 1 if reuse_port else 0),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_metadata_size", 32 * 1024),
            ],
            # Streams are bounded by StreamLimits (with a clear message); this bounds the rest.
            maximum_concurrent_rpcs=settings.usage_max_streams + 256,
        )
        register_all(server, settings, on="usage")
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        for name in ("", USAGE_SERVICE):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        reflection.enable_server_reflection([USAGE_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        try:
            port = server.add_insecure_port(settings.usage_grpc_addr)
        except RuntimeError:
            port = 0
        if port == 0:
            raise ConfigError(
                "NOBILL_USAGE_GRPC_ADDR", f"cannot listen on {settings.usage_grpc_addr}: the address is in use or not available"
            )
        await server.start()

        async def publish_all(status: int) -> None:
            for name in ("", USAGE_SERVICE):
                await health_servicer.set(name, status)

        def publish(status: int) -> None:  # called from the monitor's thread
            asyncio.run_coroutine_threadsafe(publish_all(status), loop)

        # Like the main server: NOT_SERVING while PostgreSQL is unreachable.
        monitor = DatabaseHealth(database, publish)
        started.set_result(RunningUsageServer(port, limits, loop, thread, server, health_servicer, executor, monitor))

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        except BaseException as error:  # noqa: BLE001 - handed to the starting thread
            started.set_exception(error)
            return
        loop.run_forever()

    thread = threading.Thread(target=run, name="usage-server", daemon=True)
    thread.start()
    return started.result(timeout=30)

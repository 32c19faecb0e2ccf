"""The usage server's interceptor (grpc.aio): the same authentication, permission check
and tenant binding as NobillInterceptor (it delegates to it), with the blocking parts in
a thread pool so no call ever holds the event loop, and limits on concurrent streams.

Unary handlers are plain functions `(request, OrgCallContext) -> response` run in the
pool inside the org's unit of work, which is committed after they return. Stream
handlers are coroutines `(request_iterator, StreamCallContext)`: the caller is
authenticated before the first message is awaited, and each message's work runs through
`StreamCallContext.in_org`, one unit of work per message with the access check inside."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import grpc

from nobill.api.access import AccessRule
from nobill.api.context import CallContext, OrgCallContext
from nobill.api.interceptor import (
    NobillInterceptor,
    _check_orgless_access,
    metadata_of,
    org_id_of,
    request_decoder,
    request_id_of,
)
from nobill.api.status import abort_aio, status_for
from nobill.auth.principals import Principal, ServicePrincipal, UserPrincipal
from nobill.db.database import Database
from nobill.db.unit_of_work import UnitOfWork
from nobill.errors import DomainError, ResourceExhausted

log = logging.getLogger("nobill.api.usage")

T = TypeVar("T")


class StreamLimits:
    """Concurrent streams, in total and per caller; beyond either: RESOURCE_EXHAUSTED."""

    def __init__(self, *, total: int, per_caller: int) -> None:
        self.total = total
        self.per_caller = per_caller
        self._open: Counter[str] = Counter()
        self._count = 0

    def acquire(self, caller: str) -> None:
        # Runs on the event loop thread only: no lock needed.
        if self._count >= self.total:
            raise ResourceExhausted(f"the server already serves {self.total} usage streams; retry later")
        if self._open[caller] >= self.per_caller:
            raise ResourceExhausted(f"at most {self.per_caller} concurrent usage streams per caller")
        self._open[caller] += 1
        self._count += 1

    def release(self, caller: str) -> None:
        self._open[caller] -= 1
        if self._open[caller] <= 0:
            del self._open[caller]
        self._count -= 1

    @property
    def open_streams(self) -> int:
        return self._count


def caller_key(principal: Principal) -> str:
    if isinstance(principal, UserPrincipal):
        return f"user:{principal.user_id}"
    if isinstance(principal, ServicePrincipal):
        return f"service:{principal.name}"
    return "unknown"


@dataclass
class StreamCallContext(CallContext):
    """A stream's caller, and the way to run work for one org in its unit of work."""

    rule: AccessRule
    gate: AioInterceptor
    idle_timeout: float

    async def in_org(self, org_id: str, work: Callable[[UnitOfWork], T]) -> T:
        """Run `work(uow)` in the pool, in a unit of work bound to org_id whose access check
        shares the transaction; commits when work returns. Raises DomainError on refusal."""
        return await self.gate.run_in_org(self.rule, self.principal, org_id, work)


class AioInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        *,
        rules: dict[str, AccessRule],
        nobill: NobillInterceptor,
        database: Database,
        executor: ThreadPoolExecutor,
        limits: StreamLimits,
        idle_timeout: float,
        open_services: tuple[str, ...],
    ) -> None:
        self._rules = rules
        self._nobill = nobill
        self._database = database
        self._executor = executor
        self.limits = limits
        self._idle_timeout = idle_timeout
        self._open_services = open_services
        self._wrapped: dict[str, Any] = {}

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None or method.lstrip("/").startswith(self._open_services):
            return handler
        rule = self._rules.get(method)
        if rule is None:
            async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, "method has no access rule")

            wrapped = grpc.unary_unary_rpc_method_handler(refuse)
        elif handler.unary_unary:
            # Requests arrive as bytes and are decoded once the caller is authenticated, so
            # a malformed one is INVALID_ARGUMENT (as on the main server), not INTERNAL.
            wrapped = grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, rule, handler.unary_unary, request_decoder(handler.request_deserializer)),
                response_serializer=handler.response_serializer,
            )
        elif handler.stream_stream:
            wrapped = grpc.stream_stream_rpc_method_handler(
                self._wrap_stream(method, rule, handler.stream_stream, request_decoder(handler.request_deserializer)),
                response_serializer=handler.response_serializer,
            )
        else:
            raise RuntimeError(f"{method}: only unary-unary and stream-stream RPCs are supported")
        self._wrapped[method] = wrapped
        return wrapped

    # --- shared steps ------------------------------------------------------------

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def _request_id(self, context: grpc.aio.ServicerContext) -> str:
        """Set before anything can refuse the call, as on the main server."""
        request_id = request_id_of(context.invocation_metadata() or ())
        context.set_trailing_metadata((("x-request-id", request_id),))
        return request_id

    async def _authenticate(self, context: grpc.aio.ServicerContext) -> Principal:
        metadata = metadata_of(context.invocation_metadata() or ())  # one authorization header
        return await self.run(self._nobill.authenticate, metadata)

    async def _fail(self, context: grpc.aio.ServicerContext, method: str, request_id: str, error: BaseException) -> None:
        """The one error mapping (nobill.api.status), with its google.rpc details."""
        await abort_aio(context, status_for(error, method=method, request_id=request_id))

    def _in_org_sync(self, rule: AccessRule, principal: Principal, org_id: str, work: Callable[[UnitOfWork], T]) -> T:
        with self._nobill.org_unit_of_work(rule, principal, org_id) as (uow, _grant):
            result = work(uow)
            if not uow.committed:
                uow.commit()
        return result

    async def run_in_org(self, rule: AccessRule, principal: Principal, org_id: str, work: Callable[[UnitOfWork], T]) -> T:
        return await self.run(self._in_org_sync, rule, principal, org_id, work)

    # --- unary -------------------------------------------------------------------

    def _wrap_unary(self, method: str, rule: AccessRule, behavior: Callable, decode: Callable[[bytes], Any]) -> Callable:
        async def call(raw_request: bytes, context: grpc.aio.ServicerContext) -> Any:
            request_id = self._request_id(context)
            release: Callable[[], None] | None = None
            try:
                principal = await self._authenticate(context)
                request = decode(raw_request)
                # Unary usage calls count against the caller's limits like any other call;
                # streams are bounded by StreamLimits instead (they are long-lived).
                release = self._nobill.admit(method, principal)
                if rule.kind != "org_permission":
                    _check_orgless_access(rule, principal)
                    return await self.run(behavior, request, CallContext(_sync_view(context), principal, request_id, self._database))
                org_id = org_id_of(request)

                def in_org() -> Any:
                    with self._nobill.org_unit_of_work(rule, principal, org_id) as (uow, grant):
                        response = behavior(request, OrgCallContext(_sync_view(context), principal, request_id, self._database, uow, grant))
                        if not uow.committed:
                            uow.commit()
                    return response

                return await self.run(in_org)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - every failure gets a typed status
                if _aborted(error):
                    raise
                await self._fail(context, method, request_id, error)
            finally:
                if release is not None:
                    release()

        return call

    # --- streams -----------------------------------------------------------------

    def _wrap_stream(self, method: str, rule: AccessRule, behavior: Callable, decode: Callable[[bytes], Any]) -> Callable:
        async def decoded(raw_requests: AsyncIterator[bytes]) -> AsyncIterator[Any]:
            async for raw in raw_requests:
                yield decode(raw)

        async def call(raw_requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            request_id = self._request_id(context)
            caller = None
            try:
                # Authenticated before the first message is awaited: an anonymous caller
                # cannot hold a stream open.
                principal = await self._authenticate(context)
                if rule.kind != "org_permission":
                    _check_orgless_access(rule, principal)
                key = caller_key(principal)
                self.limits.acquire(key)
                caller = key
                stream_context = StreamCallContext(
                    _sync_view(context), principal, request_id, self._database, rule, self, self._idle_timeout
                )
                async for response in behavior(decoded(raw_requests), stream_context):
                    yield response
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001
                if _aborted(error):
                    raise
                await self._fail(context, method, request_id, error)
            finally:
                if caller is not None:
                    self.limits.release(caller)

        return call


def _sync_view(context: grpc.aio.ServicerContext) -> grpc.ServicerContext:
    """The aio context where handlers expect a context: they read metadata and peer from
    it and raise typed errors instead of aborting, so the shared surface is enough."""
    return cast(grpc.ServicerContext, context)


def _aborted(error: BaseException) -> bool:
    """True for the exception grpc.aio raises from context.abort()."""
    return isinstance(error, grpc.aio.AbortError) or type(error).__name__ == "AbortError"


__all__ = ["AioInterceptor", "DomainError", "StreamCallContext", "StreamLimits", "caller_key"]

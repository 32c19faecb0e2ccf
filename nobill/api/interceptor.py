"""The one server interceptor: request id → metrics → authentication → permission → unit of
work → typed errors (nobill.api.status) → call log. Every NOBill RPC passes through it."""

from __future__ import annotations

import itertools
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from nobill import ids, metrics
from nobill.api.access import OPEN_SERVICES, AccessRule
from nobill.api.context import CallContext, OrgCallContext
from nobill.api.limits import CallLimits
from nobill.api.status import CallStatus, abort, status_for
from nobill.auth.authenticator import Authenticator
from nobill.auth.authorization import Grant, grant_in_org
from nobill.auth.permissions import ORG_PERMISSIONS, SERVICE_SCOPES, changes_state
from nobill.auth.principals import Principal, ServicePrincipal, UserPrincipal
from nobill.db.database import Database
from nobill.db.errors import is_transaction_conflict
from nobill.db.unit_of_work import UnitOfWork
from nobill.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from nobill.logs import REQUEST_ID

log = logging.getLogger("nobill.api")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

# Used when the server is built with authentication off (benchmarks' baseline only).
UNCHECKED_PRINCIPAL = ServicePrincipal("unauthenticated", ORG_PERMISSIONS | SERVICE_SCOPES, None)


def metadata_of(pairs: Iterable[tuple[str, Any]]) -> dict[str, str]:
    """A call's text metadata; refuses a call with more than one `authorization` header."""
    metadata: dict[str, str] = {}
    for key, value in pairs:
        if not isinstance(value, str):
            continue
        if key == "authorization" and key in metadata:
            # A proxy that checks the first header and a server that uses the last would
            # disagree about who is calling: refuse the call instead of picking one.
            raise Unauthenticated("send exactly one `authorization` header")
        metadata[key] = value
    return metadata


def request_decoder(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    """Decode a request inside the interceptor, so a malformed one is INVALID_ARGUMENT
    (grpc's own deserialization failure is INTERNAL) and is decoded only once the caller
    is authenticated."""
    if deserializer is None:
        return lambda raw: raw

    def decode(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except (DecodeError, UnicodeDecodeError, ValueError) as error:
            raise InvalidArgument(
                "the request could not be decoded (truncated message or a string field that is not UTF-8)",
                reason="REQUEST_UNDECODABLE",
            ) from error

    return decode


def request_id_of(metadata: Iterable[tuple[str, Any]]) -> str:
    """The caller's x-request-id when well-formed, else a new one."""
    request_id = next((value for key, value in metadata if key == "x-request-id"), "")
    return request_id if isinstance(request_id, str) and _REQUEST_ID.fullmatch(request_id) else uuid.uuid4().hex


def org_id_of(request: Any) -> str:
    org_id = getattr(request, "org_id", "")
    if not org_id:
        raise InvalidArgument("org_id is required", field="org_id")
    if not ids.is_valid("org", org_id):
        raise InvalidArgument("org_id is not a valid organization id (org_...)", field="org_id")
    return org_id


def _check_org_access(rule: AccessRule, principal: Principal, grant: Grant | None, org_id: str) -> Grant:
    """Raise unless the grant holds the rule's permission. A caller with no standing in the
    org learns nothing about it, not even that it exists."""
    if grant is None:
        raise NotFound(f"organization {org_id} not found", reason="ORG_NOT_FOUND")
    if rule.permission not in grant.permissions:
        needs = {"permission": rule.permission}
        if isinstance(principal, ServicePrincipal):
            raise PermissionDenied(
                f"this call needs the {rule.permission} scope, which the token does not carry",
                reason="SCOPE_MISSING", metadata=needs,
            )
        role = grant.role.value if grant.role else "none"
        raise PermissionDenied(
            f"this call needs the {rule.permission} permission, which the {role} role does not grant",
            reason="PERMISSION_MISSING", metadata=needs,
        )
    return grant


def _check_orgless_access(rule: AccessRule, principal: Principal) -> None:
    if rule.kind == "any_user" and not isinstance(principal, UserPrincipal):
        raise PermissionDenied("only users may call this method; service tokens cannot", reason="USERS_ONLY")
    if rule.kind == "service_scope":
        if not isinstance(principal, ServicePrincipal):
            raise PermissionDenied("only internal services may call this method", reason="SERVICES_ONLY")
        if rule.permission not in principal.scopes:
            raise PermissionDenied(
                f"this call needs the {rule.permission} scope, which the token does not carry",
                reason="SCOPE_MISSING", metadata={"permission": rule.permission},
            )


class NobillInterceptor(grpc.ServerInterceptor):
    def __init__(
        self,
        *,
        rules: dict[str, AccessRule],
        database: Database,
        authenticator: Authenticator | None,
        limits: CallLimits | None = None,
    ) -> None:
        self._rules = rules
        self._database = database
        self._authenticator = authenticator  # None: authentication off (benchmarks only)
        self._limits = limits  # None: no per-principal limits
        # Wrapped handlers are built once per method, not on every call.
        self._wrapped: dict[str, Any] = {}

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails) -> Any:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = continuation(handler_call_details)
        if handler is None or method.lstrip("/").startswith(OPEN_SERVICES):
            return handler
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        rule = self._rules.get(method)
        if rule is None:
            # A service registered without a contract rule must not be reachable.
            return grpc.unary_unary_rpc_method_handler(
                lambda request, context: context.abort(grpc.StatusCode.PERMISSION_DENIED, "method has no access rule")
            )
        # Requests arrive as bytes and are decoded by the wrapper (see _decoder).
        decode = request_decoder(handler.request_deserializer)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, rule, handler.unary_unary, decode),
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                self._wrap_stream(method, rule, handler.stream_stream, decode),
                response_serializer=handler.response_serializer,
            )
        raise RuntimeError(f"{method}: only unary-unary and stream-stream RPCs are supported")

    # --- shared steps ----------------------------------------------------------------

    def _begin(self, context: grpc.ServicerContext) -> str:
        """The call's request id (the caller's, if well-formed). It is set before anything
        can refuse the call, so every log line of a refused call carries it too (even one
        refused for its headers)."""
        request_id = request_id_of(context.invocation_metadata())
        context.set_trailing_metadata((("x-request-id", request_id),))
        return request_id

    def _authenticate(self, context: grpc.ServicerContext) -> Principal:
        return self.authenticate(metadata_of(context.invocation_metadata()))

    def authenticate(self, metadata: Mapping[str, str]) -> Principal:
        """The caller named by the call's `authorization` metadata (raises Unauthenticated).
        Public for the grpc.aio usage server, which authenticates the same way."""
        if self._authenticator is None:
            return UNCHECKED_PRINCIPAL
        authorization = metadata.get("authorization")
        if authorization is not None and len(authorization) > 16_384:
            raise Unauthenticated()
        return self._authenticator.authenticate(authorization)

    @contextmanager
    def org_unit_of_work(self, rule: AccessRule, principal: Principal, org_id: str) -> Iterator[tuple[UnitOfWork, Grant]]:
        """The org's unit of work with the caller's access checked inside it, exactly as a
        unary call's: the check and the work share one transaction (and a call that changes
        something holds the caller's membership row). The caller commits. Public for the
        grpc.aio usage server."""
        with self._unit_of_work(org_id, principal, lock_member=changes_state(rule.permission)) as uow:
            grant = _check_org_access(rule, principal, self._grant(uow, principal), org_id)
            yield uow, grant

    def admit(self, method: str, principal: Principal) -> Callable[[], None]:
        """Count a call against the caller's limits; public for the grpc.aio usage server."""
        return self._admit(method, principal)

    def _admit(self, method: str, principal: Principal) -> Callable[[], None]:
        """Count the call against the caller's limits (nobill.api.limits); the returned
        function ends it."""
        if self._limits is None:
            return _nothing
        return self._limits.admit(method, principal)

    def _unit_of_work(self, org_id: str, principal: Principal, *, lock_member: bool = False) -> UnitOfWork:
        """A unit of work for the org that also reads a user caller's role in it (and,
        for calls that change something, holds their membership row until it ends)."""
        member = principal.user_id if isinstance(principal, UserPrincipal) else None
        return UnitOfWork(self._database, org_id=org_id, member_of_org=member, lock_member=lock_member)

    def _grant(self, uow: UnitOfWork, principal: Principal) -> Grant | None:
        if self._authenticator is None:
            return Grant(None, ORG_PERMISSIONS)
        return grant_in_org(uow=uow, principal=principal)

    # --- unary -----------------------------------------------------------------------

    def _wrap_unary(self, method: str, rule: AccessRule, behavior: Callable, decode: Callable[[bytes], Any]) -> Callable:
        observe = metrics.MethodMetrics("unary", method)

        def call(raw_request: bytes, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            observe.started()
            request_id = self._begin(context)
            token = REQUEST_ID.set(request_id)
            code = grpc.StatusCode.OK
            release = _nothing
            try:
                principal = self._authenticate(context)
                release = self._admit(method, principal)
                request = decode(raw_request)
                if rule.kind == "org_permission":
                    response = self._call_in_org(rule, behavior, request, context, principal, request_id)
                else:
                    _check_orgless_access(rule, principal)
                    response = behavior(request, CallContext(context, principal, request_id, self._database))
            except Exception as error:  # noqa: BLE001 - every failure gets a typed status
                code, status = _outcome(error, context, method, request_id)
                if status is None:
                    raise
                abort(context, status)
            finally:
                release()
                observe.handled(code, time.perf_counter() - started)
                REQUEST_ID.reset(token)
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "call",
                    extra={"method": method, "request_id": request_id, "ms": round((time.perf_counter() - started) * 1e3, 2)},
                )
            return response

        return call

    def _call_in_org(
        self, rule: AccessRule, behavior: Callable, request: Any, context: grpc.ServicerContext,
        principal: Principal, request_id: str,
    ) -> Any:
        org_id = org_id_of(request)
        # NOTE: the permission check and the work share one transaction, and a call that
        # changes something holds the caller's membership row (FOR SHARE) from BEGIN on:
        # a removal or demotion committed before it is seen, one committed during it waits.
        for attempt in (1, 2):
            try:
                with self.org_unit_of_work(rule, principal, org_id) as (uow, grant):
                    response = behavior(
                        request, OrgCallContext(context, principal, request_id, self._database, uow, grant)
                    )
                    if not uow.committed:
                        uow.commit()
                return response
            except Exception as error:
                # Two members changing each other's roles at once deadlock on their rows;
                # PostgreSQL rolls one back (nothing was saved), which runs once more and
                # then sees the other's change.
                if attempt == 2 or not is_transaction_conflict(error):
                    raise
                log.info("transaction conflict; running the call again", extra={"request_id": request_id})
        raise AssertionError("unreachable")

    # --- streams ---------------------------------------------------------------------

    def _wrap_stream(self, method: str, rule: AccessRule, behavior: Callable, decode: Callable[[bytes], Any]) -> Callable:
        observe = metrics.MethodMetrics("bidi_stream", method)

        def call(raw_requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[Any]:
            started = time.perf_counter()
            observe.started()
            request_id = self._begin(context)
            token = REQUEST_ID.set(request_id)
            code = grpc.StatusCode.CANCELLED  # unless the stream ends (OK) or fails (its code)
            release = _nothing
            try:
                principal = self._authenticate(context)
                release = self._admit(method, principal)
                request_iterator: Iterator[Any] = observe.counting(decode(raw) for raw in raw_requests)
                if rule.kind != "org_permission":
                    _check_orgless_access(rule, principal)
                    checked: Iterator[Any] = request_iterator
                else:
                    checked = self._authorized_requests(rule, principal, request_iterator)
                yield from behavior(checked, CallContext(context, principal, request_id, self._database))
                code = grpc.StatusCode.OK
            except Exception as error:  # noqa: BLE001
                code, status = _outcome(error, context, method, request_id)
                if status is None:
                    raise
                abort(context, status)
            finally:
                release()
                observe.handled(code, time.perf_counter() - started)
                try:
                    REQUEST_ID.reset(token)
                except ValueError:  # the stream was closed from another thread (cancelled)
                    pass

        return call

    def _authorized_requests(self, rule: AccessRule, principal: Principal, requests: Iterator[Any]) -> Iterator[Any]:
        """Each streamed message names its org; check access once per org per stream. The
        first message is checked before the handler runs, so a handler that never reads
        the stream still cannot be reached without permission."""
        allowed: set[str] = set()

        def check(request: Any) -> Any:
            org_id = org_id_of(request)
            if org_id not in allowed:
                with self._unit_of_work(org_id, principal) as uow:
                    _check_org_access(rule, principal, self._grant(uow, principal), org_id)
                allowed.add(org_id)
            return request

        first = next(requests, None)
        if first is None:
            return iter(())
        check(first)
        return itertools.chain([first], (check(request) for request in requests))


def _nothing() -> None:
    return None


def _outcome(
    error: BaseException, context: grpc.ServicerContext, method: str, request_id: str
) -> tuple[grpc.StatusCode, CallStatus | None]:
    """The code a failed call ends with, and the status to abort it with (None when the
    handler already aborted it with context.abort())."""
    if _is_abort(error, context):
        return getattr(context, "code")(), None
    status = status_for(error, method=method, request_id=request_id)
    return status.code, status


def _is_abort(error: BaseException, context: grpc.ServicerContext) -> bool:
    """True when a handler already aborted the call with context.abort()."""
    # grpc raises a bare Exception from abort() after recording the status on the context.
    code = getattr(context, "code", lambda: None)()
    return type(error) is Exception and code is not None and code is not grpc.StatusCode.OK

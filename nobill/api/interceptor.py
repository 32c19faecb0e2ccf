"""The one server interceptor: request id → authentication → permission → unit of work →
typed errors → call log. Every NOBill RPC passes through it."""

from __future__ import annotations

import itertools
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from sqlalchemy.exc import OperationalError

from nobill import ids
from nobill.api.access import OPEN_SERVICES, AccessRule
from nobill.api.context import CallContext, OrgCallContext
from nobill.api.limits import CallLimits
from nobill.auth.authenticator import Authenticator
from nobill.auth.authorization import Grant, grant_in_org
from nobill.auth.permissions import ORG_PERMISSIONS, SERVICE_SCOPES, changes_state
from nobill.auth.principals import Principal, ServicePrincipal, UserPrincipal
from nobill.db.database import Database
from nobill.db.errors import is_connection_error, is_transaction_conflict
from nobill.db.unit_of_work import UnitOfWork
from nobill.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger("nobill.api")

STATUS_OF: dict[type[DomainError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
}

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

# Used when the server is built with authentication off (benchmarks' baseline only).
UNCHECKED_PRINCIPAL = ServicePrincipal("unauthenticated", ORG_PERMISSIONS | SERVICE_SCOPES, None)


def _metadata(context: grpc.ServicerContext) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for key, value in context.invocation_metadata():
        if not isinstance(value, str):
            continue
        if key == "authorization" and key in metadata:
            # A proxy that checks the first header and a server that uses the last would
            # disagree about who is calling: refuse the call instead of picking one.
            raise Unauthenticated("send exactly one `authorization` header")
        metadata[key] = value
    return metadata


def _decoder(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
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
                "the request could not be decoded (truncated message or a string field that is not UTF-8)"
            ) from error

    return decode


def _org_id_of(request: Any) -> str:
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
        raise NotFound(f"organization {org_id} not found")
    if rule.permission not in grant.permissions:
        if isinstance(principal, ServicePrincipal):
            raise PermissionDenied(f"this call needs the {rule.permission} scope, which the token does not carry")
        role = grant.role.value if grant.role else "none"
        raise PermissionDenied(f"this call needs the {rule.permission} permission, which the {role} role does not grant")
    return grant


def _check_orgless_access(rule: AccessRule, principal: Principal) -> None:
    if rule.kind == "any_user" and not isinstance(principal, UserPrincipal):
        raise PermissionDenied("only users may call this method; service tokens cannot")
    if rule.kind == "service_scope":
        if not isinstance(principal, ServicePrincipal):
            raise PermissionDenied("only internal services may call this method")
        if rule.permission not in principal.scopes:
            raise PermissionDenied(f"this call needs the {rule.permission} scope, which the token does not carry")


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
        decode = _decoder(handler.request_deserializer)
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

    def _begin(self, context: grpc.ServicerContext) -> tuple[str, Principal]:
        request_id = next((value for key, value in context.invocation_metadata() if key == "x-request-id"), "")
        if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
            request_id = uuid.uuid4().hex
        context.set_trailing_metadata((("x-request-id", request_id),))
        metadata = _metadata(context)
        if self._authenticator is None:
            return request_id, UNCHECKED_PRINCIPAL
        authorization = metadata.get("authorization")
        if authorization is not None and len(authorization) > 16_384:
            raise Unauthenticated()
        return request_id, self._authenticator.authenticate(authorization)

    def _fail(self, context: grpc.ServicerContext, method: str, request_id: str, error: BaseException) -> None:
        """Map an exception to a status and abort the call (abort raises)."""
        if isinstance(error, DomainError):
            code = STATUS_OF[type(error)] if type(error) in STATUS_OF else _status_of_base(error)
            message = error.message
        elif isinstance(error, OperationalError) or is_connection_error(error):
            # Every lost or refused database connection, whichever layer raised it.
            code, message = grpc.StatusCode.UNAVAILABLE, "the database is unavailable; retry shortly"
        elif is_transaction_conflict(error):
            code, message = grpc.StatusCode.UNAVAILABLE, "a concurrent change conflicted with this call; retry"
        elif isinstance(error, NotImplementedError):
            code, message = grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented yet"
        else:
            log.error("unexpected error", exc_info=error, extra={"method": method, "request_id": request_id})
            code, message = grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})"
        if code is not grpc.StatusCode.INTERNAL:
            log.info("call failed", extra={"method": method, "code": code.name, "request_id": request_id})
        context.abort(code, message)

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
        def call(raw_request: bytes, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            request_id = ""
            release = _nothing
            try:
                request_id, principal = self._begin(context)
                release = self._admit(method, principal)
                request = decode(raw_request)
                if rule.kind == "org_permission":
                    response = self._call_in_org(rule, behavior, request, context, principal, request_id)
                else:
                    _check_orgless_access(rule, principal)
                    response = behavior(request, CallContext(context, principal, request_id, self._database))
            except Exception as error:  # noqa: BLE001 - every failure gets a typed status
                if _is_abort(error, context):
                    raise
                self._fail(context, method, request_id, error)
            finally:
                release()
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
        org_id = _org_id_of(request)
        # NOTE: the permission check and the work share one transaction, and a call that
        # changes something holds the caller's membership row (FOR SHARE) from BEGIN on:
        # a removal or demotion committed before it is seen, one committed during it waits.
        lock_member = changes_state(rule.permission)
        for attempt in (1, 2):
            try:
                with self._unit_of_work(org_id, principal, lock_member=lock_member) as uow:
                    grant = _check_org_access(rule, principal, self._grant(uow, principal), org_id)
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
        def call(raw_requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[Any]:
            request_id = ""
            release = _nothing
            try:
                request_id, principal = self._begin(context)
                release = self._admit(method, principal)
                request_iterator: Iterator[Any] = (decode(raw) for raw in raw_requests)
                if rule.kind != "org_permission":
                    _check_orgless_access(rule, principal)
                    checked: Iterator[Any] = request_iterator
                else:
                    checked = self._authorized_requests(rule, principal, request_iterator)
                yield from behavior(checked, CallContext(context, principal, request_id, self._database))
            except Exception as error:  # noqa: BLE001
                if _is_abort(error, context):
                    raise
                self._fail(context, method, request_id, error)
            finally:
                release()

        return call

    def _authorized_requests(self, rule: AccessRule, principal: Principal, requests: Iterator[Any]) -> Iterator[Any]:
        """Each streamed message names its org; check access once per org per stream. The
        first message is checked before the handler runs, so a handler that never reads
        the stream still cannot be reached without permission."""
        allowed: set[str] = set()

        def check(request: Any) -> Any:
            org_id = _org_id_of(request)
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


def _status_of_base(error: DomainError) -> grpc.StatusCode:
    for kind, code in STATUS_OF.items():
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


def _is_abort(error: BaseException, context: grpc.ServicerContext) -> bool:
    """True when a handler already aborted the call with context.abort()."""
    # grpc raises a bare Exception from abort() after recording the status on the context.
    code = getattr(context, "code", lambda: None)()
    return type(error) is Exception and code is not None and code is not grpc.StatusCode.OK

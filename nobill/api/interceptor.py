"""The one server interceptor: request id → authentication → permission → unit of work →
typed errors → call log. Every NOBill RPC passes through it."""

from __future__ import annotations

import itertools
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import grpc
from sqlalchemy.exc import OperationalError

from nobill import ids
from nobill.api.access import OPEN_SERVICES, AccessRule
from nobill.api.context import CallContext, OrgCallContext
from nobill.auth.authenticator import Authenticator
from nobill.auth.authorization import Grant, grant_in_org
from nobill.auth.permissions import ORG_PERMISSIONS, SERVICE_SCOPES
from nobill.auth.principals import Principal, ServicePrincipal, UserPrincipal
from nobill.db.database import Database
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
    return {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}


def request_id_of(metadata: Mapping[str, str]) -> str:
    """The caller's x-request-id when well-formed, else a new one."""
    request_id = metadata.get("x-request-id", "")
    return request_id if _REQUEST_ID.fullmatch(request_id) else uuid.uuid4().hex


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
    ) -> None:
        self._rules = rules
        self._database = database
        self._authenticator = authenticator  # None: authentication off (benchmarks only)
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
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, rule, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                self._wrap_stream(method, rule, handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        raise RuntimeError(f"{method}: only unary-unary and stream-stream RPCs are supported")

    # --- shared steps ----------------------------------------------------------------

    def _begin(self, context: grpc.ServicerContext) -> tuple[str, Principal]:
        metadata = _metadata(context)
        request_id = request_id_of(metadata)
        context.set_trailing_metadata((("x-request-id", request_id),))
        return request_id, self.authenticate(metadata)

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
        """The org's unit of work with the caller's access checked inside it: the check and
        the work share one transaction. The caller commits."""
        with self._unit_of_work(org_id, principal) as uow:
            grant = _check_org_access(rule, principal, self._grant(uow, principal), org_id)
            yield uow, grant

    def _fail(self, context: grpc.ServicerContext, method: str, request_id: str, error: BaseException) -> None:
        """Map an exception to a status and abort the call (abort raises)."""
        code, message = status_of(error, method, request_id)
        context.abort(code, message)

    def _unit_of_work(self, org_id: str, principal: Principal) -> UnitOfWork:
        """A unit of work for the org that also reads a user caller's role in it."""
        member = principal.user_id if isinstance(principal, UserPrincipal) else None
        return UnitOfWork(self._database, org_id=org_id, member_of_org=member)

    def _grant(self, uow: UnitOfWork, principal: Principal) -> Grant | None:
        if self._authenticator is None:
            return Grant(None, ORG_PERMISSIONS)
        return grant_in_org(uow=uow, principal=principal)

    # --- unary -----------------------------------------------------------------------

    def _wrap_unary(self, method: str, rule: AccessRule, behavior: Callable) -> Callable:
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            request_id = ""
            try:
                request_id, principal = self._begin(context)
                if rule.kind == "org_permission":
                    response = self._call_in_org(rule, behavior, request, context, principal, request_id)
                else:
                    _check_orgless_access(rule, principal)
                    response = behavior(request, CallContext(context, principal, request_id, self._database))
            except Exception as error:  # noqa: BLE001 - every failure gets a typed status
                if _is_abort(error, context):
                    raise
                self._fail(context, method, request_id, error)
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
        # NOTE: the permission check and the work share one transaction, so a role
        # removed a moment ago cannot slip through between the check and the change.
        with self.org_unit_of_work(rule, principal, org_id) as (uow, grant):
            response = behavior(request, OrgCallContext(context, principal, request_id, self._database, uow, grant))
            if not uow.committed:
                uow.commit()
        return response

    # --- streams ---------------------------------------------------------------------

    def _wrap_stream(self, method: str, rule: AccessRule, behavior: Callable) -> Callable:
        def call(request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            request_id = ""
            try:
                request_id, principal = self._begin(context)
                if rule.kind != "org_permission":
                    _check_orgless_access(rule, principal)
                    checked = request_iterator
                else:
                    checked = self._authorized_requests(rule, principal, request_iterator)
                yield from behavior(checked, CallContext(context, principal, request_id, self._database))
            except Exception as error:  # noqa: BLE001
                if _is_abort(error, context):
                    raise
                self._fail(context, method, request_id, error)

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


def status_of(error: BaseException, method: str, request_id: str) -> tuple[grpc.StatusCode, str]:
    """The status code and caller-safe message for an exception (logged)."""
    if isinstance(error, DomainError):
        code = STATUS_OF[type(error)] if type(error) in STATUS_OF else _status_of_base(error)
        message = error.message
    elif isinstance(error, OperationalError):
        code, message = grpc.StatusCode.UNAVAILABLE, "the database is unavailable; retry shortly"
    elif isinstance(error, NotImplementedError):
        code, message = grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented yet"
    else:
        log.error("unexpected error", exc_info=error, extra={"method": method, "request_id": request_id})
        code, message = grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})"
    if code is not grpc.StatusCode.INTERNAL:
        log.info("call failed", extra={"method": method, "code": code.name, "request_id": request_id})
    return code, message


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

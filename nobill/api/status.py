"""The one mapping from an exception to a gRPC status with google.rpc.Status details.

Every failed call, on the threaded server and on a grpc.aio server alike, is answered by
`status_for(error, ...)`: the status code and message clients always saw, plus rich
details a client can read with grpcio-status (`rpc_status.from_call(error)`):

- `ErrorInfo` on every error: a stable `reason` (UPPER_SNAKE_CASE), domain `nobill.v1`,
  and metadata such as `request_id` and, for field errors, `field`;
- `BadRequest` with one field violation for INVALID_ARGUMENT when the error names a field;
- `RetryInfo` for UNAVAILABLE and RESOURCE_EXHAUSTED: how long to wait before retrying.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NoReturn

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from sqlalchemy.exc import OperationalError

from nobill.db.errors import is_connection_error, is_transaction_conflict
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

ERROR_DOMAIN = "nobill.v1"
DATABASE_RETRY_AFTER = 1.0

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


@dataclass(frozen=True)
class CallStatus(grpc.Status):
    """A status to end a call with: code, message and trailing metadata (rich details and
    the request id)."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]
    reason: str


def status_for(error: BaseException, *, method: str, request_id: str) -> CallStatus:
    """The status a call that raised `error` ends with; logs it (an unexpected error as a bug)."""
    retry_after: float | None = None
    field: str | None = None
    metadata: dict[str, str] = {}
    if isinstance(error, DomainError):
        code = STATUS_OF.get(type(error)) or _status_of_base(error)
        message, reason, metadata = error.message, error.reason, dict(error.metadata)
        retry_after = getattr(error, "retry_after", None)
        field = getattr(error, "field", None)
    elif isinstance(error, OperationalError) or is_connection_error(error):
        # Every lost or refused database connection, whichever layer raised it.
        code, message, reason = grpc.StatusCode.UNAVAILABLE, "the database is unavailable; retry shortly", "DATABASE_UNAVAILABLE"
        retry_after = DATABASE_RETRY_AFTER
    elif is_transaction_conflict(error):
        code, message, reason = grpc.StatusCode.UNAVAILABLE, "a concurrent change conflicted with this call; retry", "TRANSACTION_CONFLICT"
        retry_after = 0.1
    elif isinstance(error, NotImplementedError):
        code, message, reason = grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented yet", "NOT_IMPLEMENTED"
    else:
        log.error("unexpected error", exc_info=error, extra={"method": method, "request_id": request_id})
        code, message, reason = grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})", "INTERNAL"
    if code is not grpc.StatusCode.INTERNAL:
        log.info("call failed", extra={"method": method, "code": code.name, "reason": reason, "request_id": request_id})
    return build_status(
        code, message, reason=reason, request_id=request_id, field=field, retry_after=retry_after, metadata=metadata
    )


def build_status(
    code: grpc.StatusCode,
    message: str,
    *,
    reason: str,
    request_id: str,
    field: str | None = None,
    retry_after: float | None = None,
    metadata: dict[str, str] | None = None,
) -> CallStatus:
    """A status with its google.rpc details packed into `grpc-status-details-bin`."""
    info_metadata = {**(metadata or {})}
    if request_id:
        info_metadata["request_id"] = request_id
    if field:
        info_metadata["field"] = field
    rich = status_pb2.Status(code=code.value[0], message=message)
    rich.details.add().Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=info_metadata))
    if code is grpc.StatusCode.INVALID_ARGUMENT and field:
        violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=message, reason=reason)
        rich.details.add().Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(round((retry_after if retry_after is not None else 1.0) * 1000))
        rich.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    trailing: tuple[tuple[str, str | bytes], ...] = ((rpc_status.GRPC_DETAILS_METADATA_KEY, rich.SerializeToString()),)
    if request_id:
        trailing += (("x-request-id", request_id),)
    return CallStatus(code, message, trailing, reason)


def abort(context: grpc.ServicerContext, status: CallStatus) -> NoReturn:
    """End a call on the threaded server (raises)."""
    context.abort_with_status(status)
    raise AssertionError("abort_with_status returned")  # pragma: no cover - grpc always raises


async def abort_aio(context: grpc.aio.ServicerContext, status: CallStatus) -> NoReturn:
    """End a call on a grpc.aio server (raises)."""
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("abort returned")  # pragma: no cover - grpc.aio always raises


def _status_of_base(error: DomainError) -> grpc.StatusCode:
    for kind, code in STATUS_OF.items():
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL

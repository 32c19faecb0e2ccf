"""Typed failures shared by every domain; one interceptor maps them to gRPC status codes."""

from __future__ import annotations


class ConfigError(Exception):
    """A setting is missing or malformed; start-up stops with a message naming it."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


class DomainError(Exception):
    """Base of the errors a caller can act on. `message` is safe to show to the caller.

    `reason` is a stable UPPER_SNAKE_CASE identifier a client may branch on (sent as
    google.rpc.ErrorInfo); each class has a default, a raise site may name a sharper one.
    `metadata` adds short, safe facts to that ErrorInfo."""

    reason = "ERROR"

    def __init__(self, message: str, *, reason: str | None = None, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata = metadata or {}


class InvalidArgument(DomainError):
    """The request itself is wrong (a field is empty, too long, malformed)."""

    # NOTE: never the code's own name: a reason a client can branch on says what is wrong.
    # A raise site naming a field and no sharper reason gets FIELD_INVALID (the field is in
    # the ErrorInfo metadata and the BadRequest violation).
    reason = "REQUEST_INVALID"

    def __init__(
        self, message: str, *, field: str | None = None, reason: str | None = None, metadata: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, reason=reason or ("FIELD_INVALID" if field else None), metadata=metadata)
        self.field = field


class NotFound(DomainError):
    """The object does not exist, or the caller may not know that it exists."""

    reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    """Creating something that is already there."""

    reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    """The request is well-formed but the system's state does not allow it (plan limits, last owner)."""

    reason = "FAILED_PRECONDITION"


class PermissionDenied(DomainError):
    """The caller is known but lacks the permission the operation needs."""

    reason = "PERMISSION_DENIED"


class Unauthenticated(DomainError):
    """No valid credentials. The message never says why, so it cannot help an attacker."""

    reason = "UNAUTHENTICATED"

    def __init__(self, message: str = "missing or invalid credentials", *, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)


class _Retryable(DomainError):
    """An error the caller may retry after `retry_after` seconds (sent as google.rpc.RetryInfo)."""

    default_retry_after = 1.0

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after = self.default_retry_after if retry_after is None else retry_after


class ResourceExhausted(_Retryable):
    """A rate or size limit was hit; the caller should slow down or send less."""

    reason = "RESOURCE_EXHAUSTED"


class Unavailable(_Retryable):
    """A dependency (database, Redis, Stripe) is down for now; the caller may retry."""

    reason = "UNAVAILABLE"

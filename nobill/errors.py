"""Typed failures shared by every domain; one interceptor maps them to gRPC status codes."""

from __future__ import annotations


class ConfigError(Exception):
    """A setting is missing or malformed; start-up stops with a message naming it."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


class DomainError(Exception):
    """Base of the errors a caller can act on. `message` is safe to show to the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    """The request itself is wrong (a field is empty, too long, malformed)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFound(DomainError):
    """The object does not exist, or the caller may not know that it exists."""


class AlreadyExists(DomainError):
    """Creating something that is already there."""


class FailedPrecondition(DomainError):
    """The request is well-formed but the system's state does not allow it (plan limits, last owner)."""


class PermissionDenied(DomainError):
    """The caller is known but lacks the permission the operation needs."""


class Unauthenticated(DomainError):
    """No valid credentials. The message never says why, so it cannot help an attacker."""

    def __init__(self, message: str = "missing or invalid credentials") -> None:
        super().__init__(message)


class ResourceExhausted(DomainError):
    """A rate or size limit was hit; the caller should slow down or send less."""


class Unavailable(DomainError):
    """A dependency (database, Redis, Stripe) is down for now; the caller may retry,
    after `retry_after_seconds` when known."""

    def __init__(self, message: str, *, retry_after_seconds: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds

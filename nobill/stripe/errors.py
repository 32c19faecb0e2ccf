"""Stripe failures as NOBill sees them: worth retrying (transient) or not (permanent)."""

from __future__ import annotations


class StripeFailure(Exception):
    """A Stripe call failed. `code` is Stripe's error code when it sent one."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class StripeTransient(StripeFailure):
    """Connection errors, 5xx, 429, lock timeouts: the same call may succeed later."""


class StripePermanent(StripeFailure):
    """The request itself is wrong or refused (4xx): retrying the same call cannot help."""


class StripeCircuitOpen(StripeTransient):
    """The circuit breaker is open: Stripe failed repeatedly, calls are not even tried."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"circuit breaker open after repeated failures; not calling Stripe for {retry_after:.0f} s")
        self.retry_after = retry_after


class StripeNotConfigured(StripeTransient):
    """STRIPE_API_KEY is not set in this process. Transient on purpose: a process without
    a key must leave outbox rows for one that has it, never mark them failed."""


def classify(error: Exception) -> StripeFailure:
    """Map a stripe-python exception to transient or permanent."""
    import stripe

    status = getattr(error, "http_status", None)
    code = getattr(error, "code", None)
    message = getattr(error, "user_message", None) or str(error) or type(error).__name__
    headers = getattr(error, "headers", None) or {}
    should_retry = str(headers.get("stripe-should-retry", headers.get("Stripe-Should-Retry", ""))).lower()
    if should_retry == "true":
        return StripeTransient(message, status=status, code=code)
    if should_retry == "false":
        return StripePermanent(message, status=status, code=code)
    if isinstance(error, (stripe.APIConnectionError, stripe.RateLimitError)):
        return StripeTransient(message, status=status, code=code)
    if status is not None and (status >= 500 or status in (409, 429)):
        # 409 is a lock timeout or a concurrent idempotent request: try again.
        return StripeTransient(message, status=status, code=code)
    if isinstance(error, stripe.APIError) and status is None:
        return StripeTransient(message, status=status, code=code)
    return StripePermanent(message, status=status, code=code)

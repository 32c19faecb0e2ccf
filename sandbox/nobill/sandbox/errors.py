"""Stripe's error objects and the HTTP statuses Stripe sends with them.

Every failure the sandbox reports is a `StripeError`; the HTTP layer turns it into
`{"error": {...}}` with the status Stripe would use, so stripe-python raises the same
exception class it raises against Stripe (`InvalidRequestError`, `CardError`,
`IdempotencyError`, `RateLimitError`, `AuthenticationError`, `APIError`).
"""

from __future__ import annotations

from typing import Any

DOCS = "https://stripe.com/docs/error-codes"


class StripeError(Exception):
    """A failure answered with Stripe's error object."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        decline_code: str | None = None,
        should_retry: bool | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.code = code
        self.param = param
        self.decline_code = decline_code
        # Stripe sends `Stripe-Should-Retry` on some answers; stripe-python obeys it.
        self.should_retry = should_retry
        self.extra = extra or {}

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": self.type}
        if self.code is not None:
            error["code"] = self.code
            # Stripe links each code's own page: .../error-codes/parameter-missing.
            error["doc_url"] = f"{DOCS}/{self.code.replace('_', '-')}"
        if self.param is not None:
            error["param"] = self.param
        if self.decline_code is not None:
            error["decline_code"] = self.decline_code
        if request_id is not None:
            error["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}"
        error.update(self.extra)
        return {"error": error}


def invalid_request(message: str, *, param: str | None = None, code: str | None = None, status: int = 400) -> StripeError:
    return StripeError(status, "invalid_request_error", message, param=param, code=code)


def unknown_parameter(param: str) -> StripeError:
    return invalid_request(f"Received unknown parameter: {param}", param=param, code="parameter_unknown")


def missing_parameter(param: str) -> StripeError:
    return invalid_request(f"Missing required param: {param}.", param=param, code="parameter_missing")


def empty_string(param: str) -> StripeError:
    # Stripe's wording: an empty string means "unset", which a required field cannot be.
    return invalid_request(
        f"You passed an empty string for '{param}'. We assume empty values are an attempt to "
        f"unset a parameter; however '{param}' cannot be unset. You should remove '{param}' from "
        "your request or supply a non-empty value.",
        param=param,
        code="parameter_invalid_empty",
    )


def invalid_integer(param: str, value: Any) -> StripeError:
    return invalid_request(f"Invalid integer: {value}", param=param, code="parameter_invalid_integer")


def invalid_choice(param: str, choices: tuple[str, ...]) -> StripeError:
    listed = ", ".join(choices[:-1]) + f", or {choices[-1]}" if len(choices) > 1 else choices[0]
    return invalid_request(f"Invalid {param}: must be one of {listed}", param=param)


def not_simulated(param: str) -> StripeError:
    """A real Stripe parameter that the sandbox does not model.

    Failing loudly is safer than accepting and ignoring it: a test that relies on an
    ignored parameter would pass against the sandbox and misbehave against Stripe.
    """
    return invalid_request(
        f"The NOBill Stripe sandbox does not simulate the parameter `{param}` "
        "(it is a real Stripe parameter; extend nobill/sandbox if NOBill needs it).",
        param=param,
    )


def no_such(resource: str, object_id: str, *, param: str | None = None, status: int = 400) -> StripeError:
    """Stripe answers 404 for a missing object in the URL and 400 for one named in a parameter."""
    return invalid_request(f"No such {resource}: '{object_id}'", param=param, code="resource_missing", status=status)


def unrecognized_url(method: str, path: str) -> StripeError:
    return invalid_request(
        f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
        "or we can help at https://support.stripe.com/.",
        status=404,
    )


def card_declined(message: str = "Your card was declined.", *, decline_code: str = "generic_decline", param: str | None = None) -> StripeError:
    return StripeError(402, "card_error", message, code="card_declined", decline_code=decline_code, param=param)


def idempotency_mismatch(key: str) -> StripeError:
    return StripeError(
        400,
        "idempotency_error",
        "Keys for idempotent requests can only be used with the same parameters they were first "
        f"used with. Try using a key other than '{key}' if you meant to execute a different request.",
        should_retry=False,
    )


def idempotency_other_endpoint(key: str, first: str, now: str) -> StripeError:
    return StripeError(
        400,
        "idempotency_error",
        f"Keys for idempotent requests can only be used for the same endpoint they were first used for "
        f"('{first}' vs '{now}'). Try using a key other than '{key}' if you meant to execute a different request.",
        should_retry=False,
    )


def idempotency_in_use(key: str) -> StripeError:
    return StripeError(
        409,
        "idempotency_error",
        "There is currently another in-progress request using this Idempotent Key (that probably "
        f"means you submitted twice, and the other request is still going through): {key}. "
        "Please try again later.",
        code="idempotency_key_in_use",
    )


def rate_limited() -> StripeError:
    return StripeError(
        429,
        "invalid_request_error",
        "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
        code="rate_limit",
    )


def api_error(status: int = 500, message: str = "An unknown error occurred") -> StripeError:
    return StripeError(status, "api_error", message)

"""stripe-python's exceptions classified as transient (retry) or permanent."""

from __future__ import annotations

import pytest
import stripe

from nobill.stripe.errors import StripePermanent, StripeTransient, classify


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (stripe.APIConnectionError("connection reset"), StripeTransient),
        (stripe.RateLimitError("slow down", http_status=429), StripeTransient),
        (stripe.APIError("boom", http_status=500), StripeTransient),
        (stripe.APIError("bad gateway", http_status=502), StripeTransient),
        (stripe.InvalidRequestError("lock timeout", None, http_status=409, code="lock_timeout"), StripeTransient),
        (stripe.InvalidRequestError("No such price", "price", http_status=400, code="resource_missing"), StripePermanent),
        (stripe.AuthenticationError("bad key", http_status=401), StripePermanent),
        (stripe.CardError("declined", None, "card_declined", http_status=402), StripePermanent),
        (stripe.IdempotencyError("key reused", http_status=400), StripePermanent),
        (
            stripe.APIError("dup", http_status=400, headers={"stripe-should-retry": "false"}),
            StripePermanent,
        ),
        (
            stripe.InvalidRequestError("try again", None, http_status=400, headers={"Stripe-Should-Retry": "true"}),
            StripeTransient,
        ),
    ],
)
def test_classification(error: Exception, kind: type) -> None:
    classified = classify(error)
    assert type(classified) is kind
    assert classified.message

"""The one table of Stripe event types NOBill handles, and what each makes it re-read.

The intake (nobill/billing/inbox.py) asks it which events to store pending and by which
customer to route them; the apply (nobill/billing/inbox_apply.py) re-reads the objects it
names. Both import this module; neither imports the other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Target:
    """A Stripe object an event makes NOBill re-read: "subscription" or "invoice", and its id."""

    kind: str
    object_id: str


def _checkout_completed(obj: dict[str, Any]) -> Target | None:
    if obj.get("mode") != "subscription":
        return None
    subscription = obj.get("subscription")
    subscription_id = subscription.get("id") if isinstance(subscription, dict) else subscription
    return Target("subscription", subscription_id) if isinstance(subscription_id, str) and subscription_id else None


def _subscription_changed(obj: dict[str, Any]) -> Target | None:
    return Target("subscription", obj["id"]) if isinstance(obj.get("id"), str) else None


def _invoice_changed(obj: dict[str, Any]) -> Target | None:
    # The invoice's subscription is re-read too, once the invoice says which it is.
    return Target("invoice", obj["id"]) if isinstance(obj.get("id"), str) else None


# The one table of handled event types: what each makes NOBill re-read, from the event's
# data.object. The intake asks it and stores the answer with the event (target_kind,
# target_id): the apply never decodes a body, and an event whose body was not kept (it
# waited unrouted) is applied the same way. Everything else is stored and ignored.
HANDLERS: dict[str, Callable[[dict[str, Any]], Target | None]] = {
    "checkout.session.completed": _checkout_completed,
    "customer.subscription.created": _subscription_changed,
    "customer.subscription.updated": _subscription_changed,
    "customer.subscription.deleted": _subscription_changed,
    "invoice.paid": _invoice_changed,
    "invoice.payment_failed": _invoice_changed,
}


def target_of(event: dict[str, Any]) -> Target | None:
    """What a handled event makes NOBill re-read (None: nothing, or not a handled type)."""
    handler = HANDLERS.get(event["type"])
    obj = event["data"]["object"]
    return handler(obj) if handler is not None and isinstance(obj, dict) else None


def customer_of(event: dict[str, Any]) -> str | None:
    """The Stripe customer an event is about (what routes it to an org)."""
    obj = event["data"]["object"]
    if obj.get("object") == "customer":
        return obj.get("id")
    return owner_of(obj)


def owner_of(obj: dict[str, Any]) -> str | None:
    """The customer a Stripe object (subscription, invoice, checkout session) belongs to."""
    customer = obj.get("customer")
    if isinstance(customer, dict):
        return customer.get("id")
    return customer if isinstance(customer, str) else None

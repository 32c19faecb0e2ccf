"""Registering NOBill's webhook endpoint with Stripe (`nobill dev` does it on its sandbox).

Stripe shows an endpoint's signing secret only when the endpoint is created, so the caller
keeps the endpoint id and secret and passes them back next time: the same endpoint is then
pointed at the sidecar's current URL instead of a new one being made (each new endpoint
would be delivered every event, and old ones would keep failing)."""

from __future__ import annotations

from dataclasses import dataclass

from nobill.billing.inbox_events import HANDLERS
from nobill.stripe.errors import StripePermanent
from nobill.stripe.gateway import StripeGateway

DESCRIPTION = "NOBill webhook sidecar"


@dataclass(frozen=True)
class WebhookEndpoint:
    id: str
    secret: str  # whsec_...: the core verifies deliveries with it


def enabled_events() -> list[str]:
    """The event types NOBill acts on (anything else would only be stored and ignored)."""
    return sorted(HANDLERS)


def register(*, gateway: StripeGateway, url: str, known: WebhookEndpoint | None) -> WebhookEndpoint:
    """Point the known endpoint at `url`, or create one when there is none (or it is gone)."""
    if known is not None:
        try:
            gateway.update_webhook_endpoint(known.id, url=url, enabled_events=enabled_events())
            return known
        except StripePermanent:  # deleted on Stripe's side (or a reset sandbox): make a new one
            pass
    created = gateway.create_webhook_endpoint(url=url, enabled_events=enabled_events(), description=DESCRIPTION)
    return WebhookEndpoint(created["id"], created["secret"])

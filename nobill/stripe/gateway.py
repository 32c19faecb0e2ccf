"""Typed functions for every Stripe call NOBill makes. Each goes through the circuit
breaker and turns stripe-python's exceptions into StripeTransient / StripePermanent;
objects come back as plain dicts in Stripe's JSON shape."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from nobill import metrics
from nobill.config import Settings
from nobill.stripe.breaker import CircuitBreaker
from nobill.stripe.errors import StripeCircuitOpen, StripeFailure, StripeNotConfigured, StripeTransient, classify

log = logging.getLogger("nobill.stripe")

StripeObject = dict[str, Any]


def _outcome(failure: StripeFailure) -> str:
    """A failed call's outcome label: few values, never an id or a message."""
    if failure.status == 429:
        return "rate_limited"
    if isinstance(failure, StripeTransient):
        return "unavailable"
    return failure.code or "refused"


class StripeGateway:
    def __init__(self, client: Any, breaker: CircuitBreaker | None = None, *, test_clocks: bool = False) -> None:
        self._client = client
        self.breaker = breaker or CircuitBreaker()
        # NOBILL_STRIPE_TEST_CLOCKS: each new customer gets its own test clock.
        self.test_clocks = test_clocks

    @classmethod
    def from_settings(cls, settings: Settings) -> StripeGateway:
        from nobill.stripe.client import make_client

        breaker = CircuitBreaker(
            failure_threshold=settings.stripe_breaker_failures, cooldown=float(settings.stripe_breaker_cooldown_seconds)
        )
        try:
            client = make_client(settings)
        except StripeNotConfigured:
            client = None
        return cls(client, breaker, test_clocks=settings.stripe_test_clocks)

    # --- the one way out ------------------------------------------------------------

    def _call(self, endpoint: str, call: Callable[[Any], Any], *, expected_codes: tuple[str, ...] = ()) -> Any:
        """Make one Stripe call; `expected_codes` are answers the caller handles (a lookup
        of something that may not exist yet): logged at DEBUG, not as a failure."""
        if self._client is None:
            raise StripeNotConfigured("STRIPE_API_KEY is not set; Stripe calls are off in this process")
        if not self.breaker.allow():
            metrics.stripe_call(endpoint, "circuit_open")
            raise StripeCircuitOpen(self.breaker.retry_after())
        started = time.perf_counter()
        try:
            result = call(self._client.v1)
        except StripeFailure:
            raise
        except Exception as error:  # stripe-python's exceptions, classified
            failure = classify(error)
            if isinstance(failure, StripeTransient):
                self.breaker.record_failure()
            else:
                self.breaker.record_success()  # Stripe answered; it is up
            # Transient failures say Stripe is unwell; permanent ones are answers (404, 400).
            if isinstance(failure, StripeTransient):
                level = logging.WARNING
            elif failure.code in expected_codes:
                level = logging.DEBUG
            else:
                level = logging.INFO
            log.log(
                level,
                "stripe call failed",
                extra={
                    "endpoint": endpoint,
                    "transient": isinstance(failure, StripeTransient),
                    "status": failure.status,
                    "code": failure.code,
                    "error": failure.message,
                },
            )
            metrics.stripe_call(endpoint, _outcome(failure))
            raise failure from error
        self.breaker.record_success()
        metrics.stripe_call(endpoint, "ok")
        log.debug("stripe call", extra={"endpoint": endpoint, "ms": round((time.perf_counter() - started) * 1e3, 1)})
        return result

    @staticmethod
    def _options(idempotency_key: str | None) -> dict[str, Any]:
        return {"idempotency_key": idempotency_key} if idempotency_key else {}

    @staticmethod
    def _plain(value: Any) -> StripeObject:
        return value.to_dict()

    def _get(self, endpoint: str, path: str) -> StripeObject:
        """GET one object as Stripe's JSON, through the same breaker, retries and error
        classes. For the re-reads every webhook apply makes: building stripe-python's
        StripeObject tree only to turn it back into dicts cost about half of each read's CPU."""
        response = self._call(endpoint, lambda _: self._client.raw_request("get", path))
        data = response.data
        if not isinstance(data, dict):
            raise StripeTransient(f"{endpoint}: Stripe answered something that is not an object")
        return data

    def _list(self, endpoint: str, call: Callable[[Any, dict[str, Any]], Any], params: dict[str, Any]) -> list[StripeObject]:
        """Every item of a list endpoint, following `starting_after`."""
        items: list[StripeObject] = []
        params = {**params, "limit": 100}
        while True:
            page = self._call(endpoint, lambda v1: call(v1, params))
            data = [item.to_dict() for item in page.data]
            items.extend(data)
            if not page.has_more or not data:
                return items
            params = {**params, "starting_after": data[-1]["id"]}

    # --- customers and test clocks --------------------------------------------------

    def create_test_clock(self, *, frozen_time: int, name: str, idempotency_key: str) -> StripeObject:
        return self._plain(
            self._call(
                "test_clocks.create",
                lambda v1: v1.test_helpers.test_clocks.create(
                    {"frozen_time": frozen_time, "name": name}, self._options(idempotency_key)
                ),
            )
        )

    def create_customer(
        self, *, org_id: str, name: str, test_clock: str | None, idempotency_key: str
    ) -> StripeObject:
        params: dict[str, Any] = {"name": name, "metadata": {"org_id": org_id}}
        if test_clock:
            params["test_clock"] = test_clock
        return self._plain(
            self._call("customers.create", lambda v1: v1.customers.create(params, self._options(idempotency_key)))
        )

    def retrieve_customer(self, customer_id: str) -> StripeObject:
        return self._plain(self._call("customers.retrieve", lambda v1: v1.customers.retrieve(customer_id)))

    # --- checkout -------------------------------------------------------------------

    def create_checkout_session(
        self,
        *,
        customer: str,
        org_id: str,
        line_items: list[dict[str, Any]],
        success_url: str,
        cancel_url: str,
        trial_end: int | None,
        idempotency_key: str,
    ) -> StripeObject:
        subscription_data: dict[str, Any] = {"metadata": {"org_id": org_id}}
        if trial_end is not None:
            subscription_data["trial_end"] = trial_end
        params = {
            "mode": "subscription",
            "customer": customer,
            "client_reference_id": org_id,
            "line_items": line_items,
            "success_url": success_url,
            "cancel_url": cancel_url,
            # No card needed while nothing is due (the rest of a trial).
            "payment_method_collection": "if_required",
            "subscription_data": subscription_data,
            "metadata": {"org_id": org_id},
        }
        return self._plain(
            self._call(
                "checkout.sessions.create", lambda v1: v1.checkout.sessions.create(params, self._options(idempotency_key))
            )
        )

    def retrieve_checkout_session(self, session_id: str) -> StripeObject:
        return self._plain(self._call("checkout.sessions.retrieve", lambda v1: v1.checkout.sessions.retrieve(session_id)))

    # --- subscriptions --------------------------------------------------------------

    def retrieve_subscription(self, subscription_id: str) -> StripeObject:
        return self._get("subscriptions.retrieve", f"/v1/subscriptions/{quote(subscription_id, safe='')}")

    def list_subscriptions(self, customer: str) -> list[StripeObject]:
        return self._list(
            "subscriptions.list",
            lambda v1, params: v1.subscriptions.list(params),
            {"customer": customer, "status": "all"},
        )

    def update_subscription(self, subscription_id: str, *, params: dict[str, Any], idempotency_key: str) -> StripeObject:
        return self._plain(
            self._call(
                "subscriptions.update",
                lambda v1: v1.subscriptions.update(subscription_id, params, self._options(idempotency_key)),
            )
        )

    def cancel_subscription(self, subscription_id: str, *, idempotency_key: str) -> StripeObject:
        return self._plain(
            self._call(
                "subscriptions.cancel",
                lambda v1: v1.subscriptions.cancel(subscription_id, {}, self._options(idempotency_key)),
            )
        )

    def update_subscription_item(
        self, item_id: str, *, params: dict[str, Any], idempotency_key: str
    ) -> StripeObject:
        return self._plain(
            self._call(
                "subscription_items.update",
                lambda v1: v1.subscription_items.update(item_id, params, self._options(idempotency_key)),
            )
        )

    # --- invoices -------------------------------------------------------------------

    def retrieve_invoice(self, invoice_id: str) -> StripeObject:
        return self._get("invoices.retrieve", f"/v1/invoices/{quote(invoice_id, safe='')}")

    # --- catalog (nobill stripe sync) -----------------------------------------------

    def retrieve_product(self, product_id: str) -> StripeObject | None:
        from nobill.stripe.errors import StripePermanent

        try:
            return self._plain(
                self._call(
                    "products.retrieve", lambda v1: v1.products.retrieve(product_id), expected_codes=("resource_missing",)
                )
            )
        except StripePermanent as error:
            if error.code == "resource_missing":
                return None
            raise

    def create_product(self, params: dict[str, Any], *, idempotency_key: str) -> StripeObject:
        return self._plain(
            self._call("products.create", lambda v1: v1.products.create(params, self._options(idempotency_key)))
        )

    def update_product(self, product_id: str, params: dict[str, Any]) -> StripeObject:
        return self._plain(self._call("products.update", lambda v1: v1.products.update(product_id, params)))

    def prices_by_lookup_key(self, lookup_keys: list[str]) -> dict[str, StripeObject]:
        """Active prices holding these lookup keys, by key."""
        found: dict[str, StripeObject] = {}
        for start in range(0, len(lookup_keys), 10):  # Stripe takes at most 10 keys a call
            for price in self._list(
                "prices.list",
                lambda v1, params: v1.prices.list(params),
                {"lookup_keys": lookup_keys[start : start + 10], "active": True},
            ):
                found[price["lookup_key"]] = price
        return found

    def create_price(self, params: dict[str, Any], *, idempotency_key: str | None = None) -> StripeObject:
        return self._plain(
            self._call("prices.create", lambda v1: v1.prices.create(params, self._options(idempotency_key)))
        )

    def update_price(self, price_id: str, params: dict[str, Any]) -> StripeObject:
        return self._plain(self._call("prices.update", lambda v1: v1.prices.update(price_id, params)))

    def list_meters(self) -> list[StripeObject]:
        return self._list("billing.meters.list", lambda v1, params: v1.billing.meters.list(params), {})

    def create_meter(self, params: dict[str, Any], *, idempotency_key: str) -> StripeObject:
        return self._plain(
            self._call("billing.meters.create", lambda v1: v1.billing.meters.create(params, self._options(idempotency_key)))
        )

    def update_meter(self, meter_id: str, params: dict[str, Any]) -> StripeObject:
        return self._plain(self._call("billing.meters.update", lambda v1: v1.billing.meters.update(meter_id, params)))

    def reactivate_meter(self, meter_id: str) -> StripeObject:
        return self._plain(self._call("billing.meters.reactivate", lambda v1: v1.billing.meters.reactivate(meter_id)))

    # --- events ---------------------------------------------------------------------

    def retrieve_event(self, event_id: str) -> StripeObject:
        return self._plain(self._call("events.retrieve", lambda v1: v1.events.retrieve(event_id)))

    # --- webhook endpoints ----------------------------------------------------------

    def create_webhook_endpoint(self, *, url: str, enabled_events: list[str], description: str) -> StripeObject:
        """A new endpoint; its `secret` (whsec_...) is in this answer only, as on Stripe."""
        params = {"url": url, "enabled_events": enabled_events, "description": description}
        return self._plain(self._call("webhook_endpoints.create", lambda v1: v1.webhook_endpoints.create(params)))

    def update_webhook_endpoint(self, endpoint_id: str, *, url: str, enabled_events: list[str]) -> StripeObject:
        params = {"url": url, "enabled_events": enabled_events, "disabled": False}
        return self._plain(
            self._call("webhook_endpoints.update", lambda v1: v1.webhook_endpoints.update(endpoint_id, params))
        )

    # --- meter events ---------------------------------------------------------------

    def create_meter_event(self, params: dict[str, Any], *, idempotency_key: str) -> StripeObject:
        return self._plain(
            self._call(
                "billing.meter_events.create",
                lambda v1: v1.billing.meter_events.create(params, self._options(idempotency_key)),
            )
        )

    def meter_event_summaries(self, meter_id: str, params: dict[str, Any]) -> list[StripeObject]:
        """The summaries of a meter for one customer and time range (every page)."""
        return self._list(
            "billing.meters.event_summaries.list",
            lambda v1, page_params: v1.billing.meters.event_summaries.list(meter_id, page_params),
            params,
        )

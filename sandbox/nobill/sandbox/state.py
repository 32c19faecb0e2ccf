"""All of the sandbox's objects, behind one lock.

NOTE: one re-entrant lock around everything is deliberate. Every API call holds it for a
few microseconds of dictionary work, which keeps the sandbox well above 1,000 requests/s
while making each call atomic (a Checkout completion creates a customer, a subscription,
an invoice and their events as one step, exactly as Stripe presents it). Network I/O —
answering clients, delivering webhooks — happens outside the lock.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Callable

from nobill.sandbox import errors
from nobill.sandbox.records import (
    CheckoutSessionRecord,
    CustomerRecord,
    InvoiceItemRecord,
    InvoiceRecord,
    MeterEventRecord,
    MeterRecord,
    PaymentMethodRecord,
    PriceRecord,
    ProductRecord,
    SubscriptionItemRecord,
    SubscriptionRecord,
    TestClockRecord,
    PortalConfigurationRecord,
    PortalSessionRecord,
    WebhookEndpointRecord,
)
from nobill.sandbox.settings import SandboxSettings

# Collection name → record class; the order is the order in which they are persisted and
# reloaded, parents before children.
COLLECTIONS: dict[str, type] = {
    "test_clocks": TestClockRecord,
    "customers": CustomerRecord,
    "payment_methods": PaymentMethodRecord,
    "products": ProductRecord,
    "prices": PriceRecord,
    "meters": MeterRecord,
    "checkout_sessions": CheckoutSessionRecord,
    "subscriptions": SubscriptionRecord,
    "subscription_items": SubscriptionItemRecord,
    "invoice_items": InvoiceItemRecord,
    "invoices": InvoiceRecord,
    "webhook_endpoints": WebhookEndpointRecord,
    "portal_configurations": PortalConfigurationRecord,
    "portal_sessions": PortalSessionRecord,
}


class RequestInfo:
    """The API request being served, recorded on the events it causes (`event.request`)."""

    __slots__ = ("request_id", "idempotency_key", "base_url")

    def __init__(self, request_id: str | None, idempotency_key: str | None, base_url: str) -> None:
        self.request_id = request_id
        self.idempotency_key = idempotency_key
        self.base_url = base_url


class SandboxState:
    def __init__(self, settings: SandboxSettings | None = None, base_url: str = "") -> None:
        self.lock = threading.RLock()
        self.settings = settings or SandboxSettings()
        self.base_url = base_url
        # Set by the webhook dispatcher: called with each new event (under the lock).
        self.on_event: Callable[[dict[str, Any]], None] = lambda event: None
        # Set by the running server: wakes the background worker that finishes test clock
        # advances (called under the lock when a clock starts advancing).
        self.on_clock_advance: Callable[[], None] = lambda: None
        # The API request being served while the lock is held; None for work done by the
        # clock (test clock advances, the real-time ticker).
        self.request: RequestInfo | None = None
        self.dirty = False
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.test_clocks: dict[str, TestClockRecord] = {}
            self.customers: dict[str, CustomerRecord] = {}
            self.payment_methods: dict[str, PaymentMethodRecord] = {}
            self.products: dict[str, ProductRecord] = {}
            self.prices: dict[str, PriceRecord] = {}
            self.meters: dict[str, MeterRecord] = {}
            self.checkout_sessions: dict[str, CheckoutSessionRecord] = {}
            self.subscriptions: dict[str, SubscriptionRecord] = {}
            self.subscription_items: dict[str, SubscriptionItemRecord] = {}
            self.invoice_items: dict[str, InvoiceItemRecord] = {}
            self.invoices: dict[str, InvoiceRecord] = {}
            self.webhook_endpoints: dict[str, WebhookEndpointRecord] = {}
            self.portal_configurations: dict[str, PortalConfigurationRecord] = {}
            self.portal_sessions: dict[str, PortalSessionRecord] = {}
            # Meter events by event name, then customer, in arrival order; identifiers
            # seen, for dedupe.
            self.meter_events: dict[str, dict[str, list[MeterEventRecord]]] = {}
            self.meter_identifiers: dict[str, int] = {}
            # Events, oldest first, as rendered Stripe event objects.
            self.events: OrderedDict[str, dict[str, Any]] = OrderedDict()
            self.dirty = True

    # -- time ---------------------------------------------------------------------------

    @staticmethod
    def real_now() -> int:
        return int(time.time())

    def now(self, test_clock: str | None = None) -> int:
        """The current time for objects on `test_clock` (real time when None)."""
        if test_clock is None:
            return self.real_now()
        clock = self.test_clocks.get(test_clock)
        return clock.frozen_time if clock is not None else self.real_now()

    def now_for_customer(self, customer_id: str | None) -> int:
        customer = self.customers.get(customer_id) if customer_id else None
        return self.now(customer.test_clock if customer else None)

    # -- lookups that fail the way Stripe does ---------------------------------------------

    def get_customer(self, customer_id: str, *, param: str | None = None, status: int = 400) -> CustomerRecord:
        customer = self.customers.get(customer_id)
        if customer is None or customer.deleted:
            raise errors.no_such("customer", customer_id, param=param, status=status)
        return customer

    def get_price(self, price_id: str, *, param: str | None = None, status: int = 400) -> PriceRecord:
        price = self.prices.get(price_id)
        if price is None:
            raise errors.no_such("price", price_id, param=param, status=status)
        return price

    def get_product(self, product_id: str, *, param: str | None = None, status: int = 400) -> ProductRecord:
        product = self.products.get(product_id)
        if product is None or product.deleted:
            raise errors.no_such("product", product_id, param=param, status=status)
        return product

    def get_subscription(self, subscription_id: str, *, param: str | None = None, status: int = 400) -> SubscriptionRecord:
        subscription = self.subscriptions.get(subscription_id)
        if subscription is None:
            raise errors.no_such("subscription", subscription_id, param=param, status=status)
        return subscription

    def get_subscription_item(self, item_id: str, *, param: str | None = None, status: int = 400) -> SubscriptionItemRecord:
        item = self.subscription_items.get(item_id)
        if item is None or item.deleted:
            raise errors.no_such("subscription_item", item_id, param=param, status=status)
        return item

    def get_meter(self, meter_id: str, *, param: str | None = None, status: int = 400) -> MeterRecord:
        meter = self.meters.get(meter_id)
        if meter is None:
            raise errors.no_such("billing.meter", meter_id, param=param, status=status)
        return meter

    def get_invoice(self, invoice_id: str, *, param: str | None = None, status: int = 400) -> InvoiceRecord:
        invoice = self.invoices.get(invoice_id)
        if invoice is None:
            raise errors.no_such("invoice", invoice_id, param=param, status=status)
        return invoice

    def get_test_clock(self, clock_id: str, *, param: str | None = None, status: int = 400) -> TestClockRecord:
        clock = self.test_clocks.get(clock_id)
        if clock is None:
            raise errors.no_such("test_helpers.test_clock", clock_id, param=param, status=status)
        return clock

    def get_checkout_session(self, session_id: str, *, param: str | None = None, status: int = 400) -> CheckoutSessionRecord:
        session = self.checkout_sessions.get(session_id)
        if session is None:
            raise errors.no_such("checkout.session", session_id, param=param, status=status)
        return session

    def get_webhook_endpoint(self, endpoint_id: str, *, param: str | None = None, status: int = 400) -> WebhookEndpointRecord:
        endpoint = self.webhook_endpoints.get(endpoint_id)
        if endpoint is None:
            raise errors.no_such("webhook_endpoint", endpoint_id, param=param, status=status)
        return endpoint

    def check_clock_ready(self, test_clock: str | None) -> None:
        """Objects on a test clock cannot change while the clock advances, as on Stripe."""
        clock = self.test_clocks.get(test_clock) if test_clock else None
        if clock is not None and clock.status == "advancing":
            raise errors.invalid_request(
                f"The test clock {clock.id} is advancing; wait until its status is `ready` "
                "(poll the clock or wait for `test_helpers.test_clock.ready`) before changing objects on it."
            )

    # -- relations ------------------------------------------------------------------------

    def items_of(self, subscription: SubscriptionRecord) -> list[SubscriptionItemRecord]:
        return [self.subscription_items[item_id] for item_id in subscription.items]

    def default_payment_method(self, subscription: SubscriptionRecord | None, customer: CustomerRecord) -> PaymentMethodRecord | None:
        """The card Stripe would charge: the subscription's default, else the customer's."""
        for candidate in (
            subscription.default_payment_method if subscription else None,
            customer.invoice_settings.get("default_payment_method"),
        ):
            if candidate and candidate in self.payment_methods:
                return self.payment_methods[candidate]
        return None

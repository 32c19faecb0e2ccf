"""Every object the sandbox returns has the fields of Stripe's example object for its
resource (fixtures3.json), with the same JSON types and nesting, and parses into
stripe-python's typed resource class.

Rules of the comparison (recursive):
- every field of the example object is present;
- where both values are non-null they have the same JSON type, objects are compared
  field by field and array elements are compared with the example's first element;
- null is accepted where the example has a value ("does not apply"), and a value where
  the example has null;
- a field the example lacks is accepted only if stripe-python's typed class for that
  position declares it (e.g. `secret` on a newly created webhook endpoint).
"""

from __future__ import annotations

import importlib
import time
from typing import Any

import stripe
from stripe._object_classes import OBJECT_CLASSES

from sandbox_helpers import advance, stripe_example_objects

OBJECT_TO_FIXTURE = {
    "customer": "customer",
    "product": "product",
    "price": "price",
    "plan": "plan",
    "billing.meter": "billing.meter",
    "billing.meter_event": "billing.meter_event",
    "billing.meter_event_summary": "billing.meter_event_summary",
    "billing.meter_event_adjustment": "billing.meter_event_adjustment",
    "billing_portal.session": "billing_portal.session",
    "billing_portal.configuration": "billing_portal.configuration",
    "invoiceitem": "invoiceitem",
    "payment_method": "payment_method",
    "checkout.session": "checkout.session",
    "item": "item",
    "subscription": "subscription",
    "subscription_item": "subscription_item",
    "invoice": "invoice",
    "line_item": "line_item",
    "test_helpers.test_clock": "test_helpers.test_clock",
    "webhook_endpoint": "webhook_endpoint",
    "event": "event",
}


def typed_class(object_name: str) -> type:
    module, name = OBJECT_CLASSES[object_name]
    return getattr(importlib.import_module(module), name)


def declared_fields(cls: type | None) -> set[str]:
    if cls is None:
        return set()
    names: set[str] = set()
    for klass in cls.__mro__:
        names.update(k for k in getattr(klass, "__annotations__", {}) if not k.startswith("_"))
    return names


def nested_class(cls: type | None, name: str, value: Any) -> type | None:
    if isinstance(value, dict) and isinstance(value.get("object"), str) and value["object"] in OBJECT_CLASSES and value["object"] != "list":
        return typed_class(value["object"])
    if cls is None:
        return None
    return getattr(cls, "_inner_class_types", {}).get(name)


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


# Maps with caller-chosen keys; an event's `data.object` is checked on its own.
FREE_FORM = {"metadata", "payload", "previous_attributes", "object"}


def shape_problems(actual: Any, reference: Any, cls: type | None, path: str) -> list[str]:
    if actual is None or reference is None:
        return []
    if path.rsplit(".", 1)[-1] in FREE_FORM and isinstance(actual, dict):
        return [] if isinstance(reference, dict) else [f"{path}: object where Stripe has {json_type(reference)}"]
    if json_type(actual) != json_type(reference):
        return [f"{path}: {json_type(actual)} where Stripe has {json_type(reference)}"]
    if isinstance(reference, int) and not isinstance(reference, bool) and isinstance(actual, float):
        return [f"{path}: a fraction where Stripe has a whole number"]
    problems: list[str] = []
    if isinstance(reference, dict):
        for name in reference:
            if name not in actual:
                problems.append(f"{path}.{name}: missing")
        for name, value in actual.items():
            child = nested_class(cls, name, value)
            if name in reference:
                problems += shape_problems(value, reference[name], child, f"{path}.{name}")
            elif name not in declared_fields(cls):
                problems.append(f"{path}.{name}: not in Stripe's example nor in stripe-python's {getattr(cls, '__name__', '?')}")
    elif isinstance(reference, list) and reference and actual:
        for index, item in enumerate(actual):
            item_cls = nested_class(cls, "", item) if isinstance(item, dict) else cls
            problems += shape_problems(item, reference[0], item_cls, f"{path}[{index}]")
    return problems


def check(raw: dict[str, Any], fixtures: dict[str, Any], fixture_name: str | None = None) -> None:
    name = fixture_name or OBJECT_TO_FIXTURE[raw["object"]]
    cls = typed_class(raw["object"])
    problems = shape_problems(raw, fixtures[name], cls, raw["object"])
    assert not problems, "\n".join(problems)


def check_parsed(parsed: Any, expected_class: type, fixtures: dict[str, Any], fixture_name: str | None = None) -> dict[str, Any]:
    assert isinstance(parsed, expected_class), f"{type(parsed).__name__} is not {expected_class.__name__}"
    raw = parsed.last_response.data
    check(raw, fixtures, fixture_name)
    return raw


def test_the_comparison_itself_catches_a_missing_field_a_wrong_type_and_an_unknown_field():
    stripe_fixtures = stripe_example_objects()
    reference = stripe_fixtures["customer"]
    good = {k: v for k, v in reference.items()}
    assert shape_problems(good, reference, typed_class("customer"), "customer") == []
    missing = {k: v for k, v in reference.items() if k != "email"}
    assert shape_problems(missing, reference, typed_class("customer"), "customer") == ["customer.email: missing"]
    wrong = {**reference, "balance": "0"}
    assert shape_problems(wrong, reference, typed_class("customer"), "customer") == ["customer.balance: string where Stripe has number"]
    nested = {**reference, "invoice_settings": {**reference["invoice_settings"], "rendering_options": 3}}
    assert shape_problems(nested, reference, typed_class("customer"), "customer")
    unknown = {**reference, "colour": "blue"}
    assert shape_problems(unknown, reference, typed_class("customer"), "customer")


def test_every_returned_object_matches_stripe_examples_and_typed_classes(client, control, catalog, clock, webhook_receiver):
    fx = stripe_example_objects()
    endpoint = client.v1.webhook_endpoints.create({"url": webhook_receiver.url, "enabled_events": ["*"], "description": "shapes"})
    raw_endpoint = check_parsed(endpoint, stripe.WebhookEndpoint, fx)
    assert raw_endpoint["secret"].startswith("whsec_")
    check_parsed(client.v1.webhook_endpoints.retrieve(endpoint.id), stripe.WebhookEndpoint, fx)

    check_parsed(client.v1.billing.meters.retrieve(catalog.meter.id), stripe.billing.Meter, fx)
    check_parsed(client.v1.products.retrieve(catalog.product.id), stripe.Product, fx)
    check_parsed(client.v1.prices.retrieve(catalog.base.id), stripe.Price, fx)
    check_parsed(client.v1.prices.retrieve(catalog.usage.id), stripe.Price, fx)
    check_parsed(client.v1.test_helpers.test_clocks.retrieve(clock.id), stripe.test_helpers.TestClock, fx)

    customer = client.v1.customers.create(
        {
            "email": "shape@example.com",
            "name": "Shape",
            "address": {"city": "Paris", "country": "FR"},
            "shipping": {"name": "Shape", "address": {"line1": "1 rue"}},
            "metadata": {"org": "o1"},
            "test_clock": clock.id,
        }
    )
    check_parsed(customer, stripe.Customer, fx)
    session = client.v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "customer": customer.id,
            "line_items": [
                {"price": catalog.base.id, "quantity": 1},
                {"price": catalog.seat.id, "quantity": 2},
                {"price": catalog.usage.id},
            ],
            "subscription_data": {"trial_period_days": 7},
            "success_url": "https://example.com/ok",
            "cancel_url": "https://example.com/no",
        }
    )
    check_parsed(session, stripe.checkout.Session, fx)
    items = client.v1.checkout.sessions.line_items.list(session.id)
    assert len(items.data) == 3
    for item, raw_item in zip(items.data, items.last_response.data["data"]):
        assert isinstance(item, stripe.LineItem)
        check(raw_item, fx)
    control("POST", f"/_sandbox/checkout/sessions/{session.id}/complete", {"outcome": "succeeded"})
    completed = client.v1.checkout.sessions.retrieve(session.id, {"expand": ["line_items"]})
    check_parsed(completed, stripe.checkout.Session, fx)

    subscription = client.v1.subscriptions.retrieve(completed.subscription)
    check_parsed(subscription, stripe.Subscription, fx)
    seat_item = next(i for i in subscription["items"].data if i.price.id == catalog.seat.id)
    assert isinstance(seat_item, stripe.SubscriptionItem)
    check_parsed(client.v1.subscription_items.retrieve(seat_item.id), stripe.SubscriptionItem, fx)

    # A renewal with usage and prorations, so invoices carry every kind of line.
    now = clock.frozen_time
    advance(client, clock, now + 7 * 86_400 + 7_200)
    event = client.v1.billing.meter_events.create(
        {"event_name": "api_calls", "payload": {"stripe_customer_id": customer.id, "value": "40"}, "identifier": "shape-1"}
    )
    check_parsed(event, stripe.billing.MeterEvent, fx)
    summaries = client.v1.billing.meters.event_summaries.list(
        catalog.meter.id, {"customer": customer.id, "start_time": now // 60 * 60, "end_time": (now + 30 * 86_400) // 60 * 60}
    )
    assert isinstance(summaries.data[0], stripe.billing.MeterEventSummary)
    check(summaries.last_response.data["data"][0], fx)
    client.v1.subscription_items.update(seat_item.id, {"quantity": 4})
    period_end = client.v1.subscriptions.retrieve(subscription.id)["items"].data[0].current_period_end
    advance(client, clock, period_end + 7_200)
    invoices = client.v1.invoices.list({"subscription": subscription.id, "limit": 10})
    assert len(invoices.data) == 3
    for listed in invoices.data:
        check_parsed(client.v1.invoices.retrieve(listed.id), stripe.Invoice, fx)
        lines = client.v1.invoices.line_items.list(listed.id)
        for line, raw_line in zip(lines.data, lines.last_response.data["data"]):
            assert isinstance(line, stripe.InvoiceLineItem)
            check(raw_line, fx)
    renewal = invoices.data[0]
    assert {line.parent.type for line in renewal.lines.data} == {"subscription_item_details"}
    assert any(line.parent.subscription_item_details.proration for line in renewal.lines.data)

    # Events of every kind, and the object each carries.
    control("POST", "/_sandbox/webhooks/wait", {"timeout": 10})
    page = client.v1.events.list({"limit": 100})
    assert not page.has_more
    assert len({e.type for e in page.data}) >= 15
    for listed, raw in zip(page.data, page.last_response.data["data"]):
        assert isinstance(listed, stripe.Event)
        check(raw, fx)
        check(raw["data"]["object"], fx)
    events = page.data
    retrieved = client.v1.events.retrieve(events[0].id)
    check_parsed(retrieved, stripe.Event, fx)

    # Deleted objects.
    deleted_item_target = client.v1.subscription_items.create({"subscription": subscription.id, "price": (
        client.v1.prices.create({"product": catalog.product.id, "currency": "usd", "unit_amount": 100, "recurring": {"interval": "month"}})
    ).id, "quantity": 1, "proration_behavior": "none"})
    check_parsed(client.v1.subscription_items.delete(deleted_item_target.id, {"proration_behavior": "none"}), stripe.SubscriptionItem, fx, "deleted_subscription_item")
    spare = client.v1.products.create({"name": "Spare"})
    check_parsed(client.v1.products.delete(spare.id), stripe.Product, fx, "deleted_product")
    check_parsed(client.v1.webhook_endpoints.delete(endpoint.id), stripe.WebhookEndpoint, fx, "deleted_webhook_endpoint")
    loner = client.v1.customers.create({"email": "gone@example.com"})
    check_parsed(client.v1.customers.delete(loner.id), stripe.Customer, fx, "deleted_customer")
    check_parsed(client.v1.test_helpers.test_clocks.delete(clock.id), stripe.test_helpers.TestClock, fx, "deleted_test_helpers.test_clock")


def test_subscription_states_and_declined_invoices_keep_the_shape(client, control, catalog):
    """Canceled subscriptions, open invoices with failed attempts and expired sessions too."""
    stripe_fixtures = stripe_example_objects()
    customer = client.v1.customers.create({"email": "d@example.com", "payment_method": "pm_card_chargeCustomerFail", "invoice_settings": {"default_payment_method": "pm_card_chargeCustomerFail"}})
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.base.id}]})
    assert subscription.status == "incomplete"
    check_parsed(subscription, stripe.Subscription, stripe_fixtures)
    invoice = client.v1.invoices.retrieve(subscription.latest_invoice)
    assert invoice.status == "open" and invoice.attempt_count == 1
    check_parsed(invoice, stripe.Invoice, stripe_fixtures)
    canceled = client.v1.subscriptions.cancel(subscription.id, {"cancellation_details": {"comment": "bye", "feedback": "unused"}})
    check_parsed(canceled, stripe.Subscription, stripe_fixtures)
    session = client.v1.checkout.sessions.create(
        {"mode": "subscription", "line_items": [{"price": catalog.base.id, "quantity": 1}], "expires_at": int(time.time()) + 3600}
    )
    check_parsed(client.v1.checkout.sessions.expire(session.id), stripe.checkout.Session, stripe_fixtures)

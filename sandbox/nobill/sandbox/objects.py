"""Object builders: each record rendered in the JSON shape of API version 2026-10-28.endive.

Every builder emits all the fields of Stripe's example object for its resource (null where
a value does not apply to the sandbox, e.g. tax, discounts, Connect), so client code that
reads a field gets what Stripe would send. `tests/sandbox/test_object_shapes.py` compares
each rendered object with Stripe's fixtures recursively.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from nobill.sandbox import errors
from nobill.sandbox.billing_periods import line_amount
from nobill.sandbox.records import (
    CheckoutSessionRecord,
    CustomerRecord,
    InvoiceItemRecord,
    InvoiceLineRecord,
    InvoiceRecord,
    MeterEventRecord,
    MeterRecord,
    PaymentMethodRecord,
    PriceRecord,
    ProductRecord,
    SubscriptionItemRecord,
    SubscriptionRecord,
    TestClockRecord,
    WebhookEndpointRecord,
    load_record,
)
from nobill.sandbox.state import SandboxState

ACCOUNT_NAME = "NOBill Stripe Sandbox"
ADDRESS_FIELDS = ("city", "country", "line1", "line2", "postal_code", "state")


def list_object(data: list[dict[str, Any]], url: str, has_more: bool = False) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def deleted(object_id: str, object_name: str) -> dict[str, Any]:
    return {"id": object_id, "object": object_name, "deleted": True}


def address(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {name: value.get(name) for name in ADDRESS_FIELDS}


def format_decimal(value: Decimal | str) -> str:
    """Stripe's decimal strings: `2000`, `0.5`, `12.345` (no exponent, no trailing zeros)."""
    number = Decimal(value)
    text = format(number.normalize(), "f")
    return text if "." not in text else text.rstrip("0").rstrip(".")


# -- customers ------------------------------------------------------------------------


def customer(state: SandboxState, record: CustomerRecord) -> dict[str, Any]:
    shipping = record.shipping
    return {
        "id": record.id,
        "object": "customer",
        "address": address(record.address),
        "balance": record.balance,
        "created": record.created,
        "currency": record.currency,
        "default_source": None,
        "delinquent": record_is_delinquent(state, record),
        "description": record.description,
        "discount": None,
        "email": record.email,
        "invoice_prefix": record.invoice_prefix,
        "invoice_settings": {
            "custom_fields": record.invoice_settings.get("custom_fields"),
            "default_payment_method": record.invoice_settings.get("default_payment_method"),
            "footer": record.invoice_settings.get("footer"),
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": dict(record.metadata),
        "name": record.name,
        "next_invoice_sequence": record.next_invoice_sequence,
        "phone": record.phone,
        "preferred_locales": list(record.preferred_locales),
        "shipping": None
        if shipping is None
        else {"address": address(shipping.get("address") or {}), "name": shipping.get("name"), "phone": shipping.get("phone")},
        "tax_exempt": record.tax_exempt,
        "test_clock": record.test_clock,
    }


def record_is_delinquent(state: SandboxState, record: CustomerRecord) -> bool:
    """Stripe marks a customer delinquent while an invoice's automatic payment has failed."""
    return any(
        invoice.customer == record.id and invoice.status == "open" and invoice.attempt_count > 0
        for invoice in state.invoices.values()
    )


def payment_method(state: SandboxState, record: PaymentMethodRecord) -> dict[str, Any]:
    customer_record = state.customers.get(record.customer or "")
    expires = datetime.fromtimestamp(record.created, tz=timezone.utc).year + 5
    return {
        "id": record.id,
        "object": "payment_method",
        "allow_redisplay": "unspecified",
        "billing_details": {
            "address": address({}),
            "email": customer_record.email if customer_record else None,
            "name": customer_record.name if customer_record else None,
            "phone": None,
            "tax_id": None,
        },
        "card": {
            "brand": record.brand,
            "checks": {"address_line1_check": None, "address_postal_code_check": None, "cvc_check": "pass"},
            "country": "US",
            "display_brand": record.brand,
            "exp_month": 12,
            "exp_year": expires,
            "fingerprint": hashlib.sha256(f"{record.brand}{record.last4}".encode()).hexdigest()[:16],
            "funding": "credit",
            "generated_from": None,
            "last4": record.last4,
            "networks": {"available": [record.brand], "preferred": None},
            "regulated_status": "unregulated",
            "three_d_secure_usage": {"supported": True},
            "wallet": None,
        },
        "created": record.created,
        "customer": record.customer,
        "customer_account": None,
        "livemode": False,
        "metadata": dict(record.metadata),
        "type": "card",
    }


# -- catalog --------------------------------------------------------------------------


def product(state: SandboxState, record: ProductRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "product",
        "active": record.active,
        "created": record.created,
        "default_price": record.default_price,
        "description": record.description,
        "images": list(record.images),
        "livemode": False,
        "marketing_features": [{"name": f["name"]} for f in record.marketing_features],
        "metadata": dict(record.metadata),
        "name": record.name,
        "package_dimensions": dict(record.package_dimensions) if record.package_dimensions else None,
        "shippable": record.shippable,
        "statement_descriptor": record.statement_descriptor,
        "tax_code": record.tax_code,
        "type": "service",
        "unit_label": record.unit_label,
        "updated": record.updated,
        "url": record.url,
    }


def unit_amount(record: PriceRecord) -> int | None:
    """Whole cents, or null when the price is priced in fractions of a cent (as Stripe does)."""
    amount = Decimal(record.unit_amount_decimal)
    return int(amount) if amount == amount.to_integral_value() else None


def price(state: SandboxState, record: PriceRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "price",
        "active": record.active,
        "billing_scheme": "per_unit",
        "created": record.created,
        "currency": record.currency,
        "custom_unit_amount": None,
        "livemode": False,
        "lookup_key": record.lookup_key,
        "metadata": dict(record.metadata),
        "nickname": record.nickname,
        "product": record.product,
        "recurring": None
        if record.type != "recurring"
        else {
            "interval": record.interval,
            "interval_count": record.interval_count,
            "meter": record.meter,
            "trial_period_days": record.trial_period_days,
            "usage_type": record.usage_type,
        },
        "tax_behavior": record.tax_behavior,
        "tiers_mode": None,
        "transform_quantity": None,
        "type": record.type,
        "unit_amount": unit_amount(record),
        "unit_amount_decimal": format_decimal(record.unit_amount_decimal),
    }


def plan(state: SandboxState, record: PriceRecord) -> dict[str, Any]:
    """The legacy `plan` view of a recurring price, still embedded in subscription items."""
    return {
        "id": record.id,
        "object": "plan",
        "active": record.active,
        "amount": unit_amount(record),
        "amount_decimal": format_decimal(record.unit_amount_decimal),
        "billing_scheme": "per_unit",
        "created": record.created,
        "currency": record.currency,
        "interval": record.interval,
        "interval_count": record.interval_count,
        "livemode": False,
        "metadata": dict(record.metadata),
        "meter": record.meter,
        "nickname": record.nickname,
        "product": record.product,
        "tiers_mode": None,
        "transform_usage": None,
        "trial_period_days": record.trial_period_days,
        "usage_type": record.usage_type,
    }


# -- billing meters -------------------------------------------------------------------


def meter(state: SandboxState, record: MeterRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "billing.meter",
        "created": record.created,
        "customer_mapping": {"event_payload_key": record.customer_payload_key, "type": "by_id"},
        "default_aggregation": {"formula": record.formula},
        "display_name": record.display_name,
        "event_name": record.event_name,
        "event_time_window": record.event_time_window,
        "livemode": False,
        "status": record.status,
        "status_transitions": {"deactivated_at": record.deactivated_at},
        "updated": record.updated,
        "value_settings": {"event_payload_key": record.value_payload_key},
    }


def meter_event(record: MeterEventRecord) -> dict[str, Any]:
    return {
        "object": "billing.meter_event",
        "created": record.created,
        "event_name": record.event_name,
        "identifier": record.identifier,
        "livemode": False,
        "payload": dict(record.payload),
        "timestamp": record.timestamp,
    }


def meter_event_summary(summary_id: str, meter_id: str, start: int, end: int, value: int | float) -> dict[str, Any]:
    return {
        "id": summary_id,
        "object": "billing.meter_event_summary",
        "aggregated_value": value,
        "end_time": end,
        "livemode": False,
        "meter": meter_id,
        "start_time": start,
    }


# -- subscriptions --------------------------------------------------------------------


def subscription_item(state: SandboxState, record: SubscriptionItemRecord) -> dict[str, Any]:
    subscription = state.subscriptions[record.subscription]
    price_record = state.prices[record.price]
    return {
        "id": record.id,
        "object": "subscription_item",
        "billing_thresholds": None,
        "created": record.created,
        "current_period_end": subscription.current_period_end,
        "current_period_start": subscription.current_period_start,
        "discounts": [],
        "metadata": dict(record.metadata),
        "plan": plan(state, price_record),
        "price": price(state, price_record),
        "quantity": record.quantity,
        "subscription": record.subscription,
        "tax_rates": [],
    }


def _pending_update(state: SandboxState, record: SubscriptionRecord) -> dict[str, Any] | None:
    pending = record.pending_update
    if pending is None:
        return None
    after = pending["subscription"]
    return {
        "billing_cycle_anchor": after["billing_cycle_anchor"] if after["billing_cycle_anchor"] != record.billing_cycle_anchor else None,
        "expires_at": pending["expires_at"],
        "subscription_items": [subscription_item(state, load_record(SubscriptionItemRecord, raw)) for raw in pending["items"]],
        "trial_end": None,
        "trial_from_plan": None,
    }


def subscription(state: SandboxState, record: SubscriptionRecord) -> dict[str, Any]:
    items = [subscription_item(state, item) for item in state.items_of(record)]
    return {
        "id": record.id,
        "object": "subscription",
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": record.billing_cycle_anchor,
        "billing_cycle_anchor_config": None,
        "billing_mode": {
            "flexible": {"proration_discounts": record.proration_discounts} if record.billing_mode == "flexible" else None,
            "type": record.billing_mode,
            "updated_at": None,
        },
        "billing_schedules": [],
        "billing_thresholds": None,
        "cancel_at": record.cancel_at,
        "cancel_at_period_end": record.cancel_at_period_end,
        "canceled_at": record.canceled_at,
        "cancellation_details": dict(record.cancellation_details),
        "collection_method": "charge_automatically",
        "created": record.created,
        "currency": record.currency,
        "customer": record.customer,
        "customer_account": None,
        "days_until_due": None,
        "default_payment_method": record.default_payment_method,
        "default_source": None,
        "default_tax_rates": [],
        "description": record.description,
        "discounts": [],
        "ended_at": record.ended_at,
        "invoice_settings": {
            "account_tax_ids": None,
            "custom_fields": None,
            "description": None,
            "footer": None,
            "issuer": {"type": "self"},
        },
        "items": list_object(items, f"/v1/subscription_items?subscription={record.id}"),
        "latest_invoice": record.latest_invoice,
        "livemode": False,
        "managed_payments": None,
        "metadata": dict(record.metadata),
        "next_pending_invoice_item_invoice": None,
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "off",
        },
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": _pending_update(state, record),
        "schedule": None,
        "start_date": record.start_date,
        "status": record.status,
        "test_clock": record.test_clock,
        "transfer_data": None,
        "trial_end": record.trial_end,
        "trial_settings": {"end_behavior": {"missing_payment_method": record.missing_payment_method}},
        "trial_start": record.trial_start,
    }


# -- invoices -------------------------------------------------------------------------


def invoice_line(state: SandboxState, invoice: InvoiceRecord, line: InvoiceLineRecord) -> dict[str, Any]:
    price_record = state.prices.get(line.price) if line.price else None
    if line.subscription_item is not None:
        parent = {
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": line.invoice_item,
                "proration": line.proration,
                "proration_details": {"credited_items": None},
                "subscription": line.subscription,
                "subscription_item": line.subscription_item,
            },
            "type": "subscription_item_details",
        }
    else:
        parent = {
            "invoice_item_details": {
                "invoice_item": line.invoice_item,
                "proration": line.proration,
                "proration_details": {"credited_items": None},
                "subscription": line.subscription,
            },
            "subscription_item_details": None,
            "type": "invoice_item_details",
        }
    return {
        "id": line.id,
        "object": "line_item",
        "amount": line.amount,
        "currency": line.currency,
        "description": line.description,
        "discount_amounts": [],
        "discountable": not line.proration,
        "discounts": [],
        "invoice": invoice.id,
        "livemode": False,
        "metadata": {},
        "parent": parent,
        "period": {"end": line.period_end, "start": line.period_start},
        "pretax_credit_amounts": [],
        "pricing": {
            "price_details": {"price": price_record.id, "product": price_record.product} if price_record else None,
            "type": "price_details",
            "unit_amount_decimal": format_decimal(line.unit_amount_decimal) if line.unit_amount_decimal is not None else None,
        },
        "quantity": line.quantity,
        "quantity_decimal": None if line.quantity is None else str(line.quantity),
        "subscription": line.subscription,
        "subtotal": line.amount,
        "taxes": [],
    }


INVOICE_LINES_PAGE = 10


def invoice(state: SandboxState, record: InvoiceRecord) -> dict[str, Any]:
    lines = [invoice_line(state, record, line) for line in record.lines[:INVOICE_LINES_PAGE]]
    amount_due = record.amount_due
    subtotal = record.subtotal
    return {
        "id": record.id,
        "object": "invoice",
        "account_country": "US",
        "account_name": ACCOUNT_NAME,
        "account_tax_ids": None,
        "amount_due": amount_due,
        "amount_overpaid": 0,
        "amount_paid": record.amount_paid,
        "amount_remaining": 0 if record.status in ("paid", "void") else amount_due - record.amount_paid,
        "amount_shipping": 0,
        "application": None,
        "attempt_count": record.attempt_count,
        "attempted": record.attempted,
        "auto_advance": record.auto_advance,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None, "provider": None, "status": None},
        "automatically_finalizes_at": record.automatically_finalizes_at if record.status == "draft" else None,
        "billing_reason": record.billing_reason,
        "collection_method": "charge_automatically",
        "created": record.created,
        "currency": record.currency,
        "custom_fields": None,
        "customer": record.customer,
        "customer_account": None,
        "customer_address": None,
        "customer_email": record.customer_email,
        "customer_name": record.customer_name,
        "customer_phone": record.customer_phone,
        "customer_shipping": None,
        "customer_tax_exempt": "none",
        "customer_tax_ids": [],
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": record.description,
        "discounts": [],
        "due_date": None,
        "effective_at": record.finalized_at,
        "ending_balance": record.ending_balance,
        "footer": None,
        "from_invoice": None,
        "hosted_invoice_url": None,
        "invoice_pdf": None,
        "issuer": {"type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "lines": list_object(lines, f"/v1/invoices/{record.id}/lines", has_more=len(record.lines) > INVOICE_LINES_PAGE),
        "livemode": False,
        "metadata": dict(record.metadata),
        "next_payment_attempt": record.next_payment_attempt,
        "number": record.number,
        "on_behalf_of": None,
        "parent": None
        if record.subscription is None
        else {
            "quote_details": None,
            "subscription_details": {"metadata": record.subscription_metadata, "subscription": record.subscription},
            "type": "subscription_details",
        },
        "payment_settings": {"default_mandate": None, "payment_method_options": None, "payment_method_types": None},
        "period_end": record.period_end,
        "period_start": record.period_start,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": None,
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": record.starting_balance,
        "statement_descriptor": None,
        "status": record.status,
        "status_transitions": {
            "finalized_at": record.finalized_at,
            "marked_uncollectible_at": record.marked_uncollectible_at,
            "paid_at": record.paid_at,
            "voided_at": record.voided_at,
        },
        # NOTE: Stripe's example object still lists `subscription`, but since API version
        # 2025-03-31.basil the subscription is at `parent.subscription_details.subscription`
        # and stripe-python 16 no longer types this field. Always null here, so NOBill cannot
        # come to depend on it.
        "subscription": None,
        "subtotal": subtotal,
        "subtotal_excluding_tax": subtotal,
        "test_clock": record.test_clock,
        "total": subtotal,
        "total_discount_amounts": [],
        "total_excluding_tax": subtotal,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": record.webhooks_delivered_at,
    }


def invoice_item(state: SandboxState, record: InvoiceItemRecord) -> dict[str, Any]:
    price_record = state.prices.get(record.price) if record.price else None
    return {
        "id": record.id,
        "object": "invoiceitem",
        "amount": record.amount,
        "currency": record.currency,
        "customer": record.customer,
        "customer_account": None,
        "date": record.created,
        "description": record.description,
        "discountable": record.discountable and not record.proration,
        "discounts": [],
        "invoice": record.invoice,
        "livemode": False,
        "metadata": dict(record.metadata),
        "net_amount": record.amount,
        "parent": None
        if record.subscription is None
        else {
            "subscription_details": {"subscription": record.subscription, "subscription_item": record.subscription_item},
            "type": "subscription_details",
        },
        "period": {"end": record.period_end, "start": record.period_start},
        "pricing": {
            "price_details": {"price": price_record.id, "product": price_record.product} if price_record else None,
            "type": "price_details",
            "unit_amount_decimal": format_decimal(record.unit_amount_decimal) if record.unit_amount_decimal is not None else None,
        },
        "proration": record.proration,
        "quantity": record.quantity,
        "quantity_decimal": str(record.quantity),
        "tax_rates": [],
        "test_clock": record.test_clock,
    }


# -- checkout -------------------------------------------------------------------------


def checkout_line_item(state: SandboxState, session: CheckoutSessionRecord, index: int) -> dict[str, Any]:
    line = session.line_items[index]
    price_record = state.prices[line.price]
    product_record = state.products.get(price_record.product)
    # Metered items have no quantity and nothing due at checkout.
    amount = 0 if line.quantity is None else line_amount(price_record.unit_amount_decimal, line.quantity)
    return {
        "id": line.id,
        "object": "item",
        "adjustable_quantity": None,
        "amount_discount": 0,
        "amount_subtotal": amount,
        "amount_tax": 0,
        "amount_total": amount,
        "currency": price_record.currency,
        "description": product_record.name if product_record else None,
        "metadata": {},
        "price": price(state, price_record),
        "quantity": line.quantity,
    }


def checkout_session(state: SandboxState, record: CheckoutSessionRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "checkout.session",
        "adaptive_pricing": None,
        "after_expiration": None,
        "allow_promotion_codes": record.allow_promotion_codes,
        "amount_subtotal": record.amount_subtotal,
        "amount_total": record.amount_total,
        "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
        "billing_address_collection": record.billing_address_collection,
        "cancel_url": record.cancel_url,
        "client_reference_id": record.client_reference_id,
        "client_secret": None,
        "collected_information": None,
        "consent": None,
        "consent_collection": None,
        "created": record.created,
        "currency": record.currency,
        "currency_conversion": None,
        "custom_fields": [],
        "custom_text": {"after_submit": None, "shipping_address": None, "submit": None, "terms_of_service_acceptance": None},
        "customer": record.customer,
        "customer_account": None,
        "customer_creation": None,
        "customer_details": dict(record.customer_details) if record.customer_details else None,
        "customer_email": record.customer_email,
        "discounts": [],
        "expires_at": record.expires_at,
        "integration_identifier": None,
        "invoice": record.invoice,
        "invoice_creation": None,
        "livemode": False,
        "locale": record.locale,
        "managed_payments": None,
        "metadata": dict(record.metadata),
        "mode": record.mode,
        "origin_context": None,
        "payment_intent": None,
        "payment_link": None,
        "payment_method_collection": record.payment_method_collection,
        "payment_method_configuration_details": None,
        "payment_method_options": {},
        "payment_method_types": ["card"],
        "payment_status": record.payment_status,
        "permissions": None,
        "phone_number_collection": {"enabled": False},
        "recovered_from": None,
        "saved_payment_method_options": None,
        "setup_intent": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "shipping_options": [],
        "status": record.status,
        "submit_type": None,
        "subscription": record.subscription,
        "success_url": record.success_url,
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted_page",
        "url": f"{state.base_url}/checkout/{record.id}" if record.status == "open" else None,
        "wallet_options": None,
    }


# -- test clocks and webhook endpoints -------------------------------------------------


def test_clock(state: SandboxState, record: TestClockRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "test_helpers.test_clock",
        "created": record.created,
        "deletes_after": record.deletes_after,
        "frozen_time": record.frozen_time,
        "livemode": False,
        "name": record.name,
        "status": record.status,
        "status_details": {}
        if record.status != "advancing"
        else {"advancing": {"target_frozen_time": record.advance_target}},
    }


def webhook_endpoint(state: SandboxState, record: WebhookEndpointRecord, *, with_secret: bool = False) -> dict[str, Any]:
    rendered = {
        "id": record.id,
        "object": "webhook_endpoint",
        "api_version": record.api_version,
        "application": None,
        "created": record.created,
        "description": record.description,
        "enabled_events": list(record.enabled_events),
        "livemode": False,
        "metadata": dict(record.metadata),
        "status": record.status,
        "url": record.url,
    }
    if with_secret:
        # Stripe reveals the signing secret only in the answer to the create call.
        rendered["secret"] = record.secret
    return rendered


# -- by id (expansion) -----------------------------------------------------------------


def render_by_id(state: SandboxState, object_id: str) -> dict[str, Any]:
    """Render any object from its id, as `expand[]` needs."""
    prefix = object_id.split("_", 1)[0]
    table: dict[str, tuple[dict[str, Any], Any]] = {
        "cus": (state.customers, customer),
        "prod": (state.products, product),
        "price": (state.prices, price),
        "sub": (state.subscriptions, subscription),
        "si": (state.subscription_items, subscription_item),
        "in": (state.invoices, invoice),
        "ii": (state.invoice_items, invoice_item),
        "pm": (state.payment_methods, payment_method),
        "cs": (state.checkout_sessions, checkout_session),
        "clock": (state.test_clocks, test_clock),
        "mtr": (state.meters, meter),
        "we": (state.webhook_endpoints, webhook_endpoint),
    }
    if prefix not in table:
        raise errors.invalid_request(f"The sandbox cannot expand objects like '{object_id}'.")
    collection, builder = table[prefix]
    record = collection.get(object_id)
    if record is None:
        raise errors.no_such(prefix, object_id)
    if getattr(record, "deleted", False):
        names = {"cus": "customer", "prod": "product", "si": "subscription_item", "ii": "invoiceitem"}
        return deleted(object_id, names.get(prefix, prefix))
    return builder(state, record)

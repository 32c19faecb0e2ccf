"""What the sandbox remembers about each object, as plain dataclasses.

Records hold facts (ids, amounts, times, relations); `objects.py` renders them into
Stripe's JSON shape, so derived and nested fields (a subscription item's price, an
invoice's totals) are always consistent. Records are JSON-serialisable through
`dataclasses.asdict` and rebuilt by `load_record`, which is how state is persisted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar


def _empty_invoice_settings() -> dict[str, Any]:
    return {"custom_fields": None, "default_payment_method": None, "footer": None, "rendering_options": None}


@dataclass
class CustomerRecord:
    id: str
    created: int
    email: str | None = None
    name: str | None = None
    description: str | None = None
    phone: str | None = None
    address: dict[str, Any] | None = None
    shipping: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    preferred_locales: list[str] = field(default_factory=list)
    tax_exempt: str = "none"
    invoice_prefix: str = ""
    next_invoice_sequence: int = 1
    balance: int = 0
    currency: str | None = None
    invoice_settings: dict[str, Any] = field(default_factory=_empty_invoice_settings)
    test_clock: str | None = None
    deleted: bool = False


@dataclass
class PaymentMethodRecord:
    """A test card attached to a customer; `declines` says whether charges to it fail."""

    id: str
    created: int
    customer: str | None  # None once detached (a detached card cannot be attached again)
    brand: str = "visa"
    last4: str = "4242"
    declines: bool = False
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class ProductRecord:
    id: str
    created: int
    updated: int
    name: str
    active: bool = True
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    images: list[str] = field(default_factory=list)
    marketing_features: list[dict[str, str]] = field(default_factory=list)
    package_dimensions: dict[str, float] | None = None
    shippable: bool | None = None
    statement_descriptor: str | None = None
    tax_code: str | None = None
    unit_label: str | None = None
    url: str | None = None
    default_price: str | None = None
    deleted: bool = False


@dataclass
class PriceRecord:
    id: str
    created: int
    product: str
    currency: str
    unit_amount_decimal: str
    type: str = "recurring"  # recurring | one_time
    interval: str | None = None
    interval_count: int | None = None
    usage_type: str | None = None  # licensed | metered
    meter: str | None = None
    trial_period_days: int | None = None
    lookup_key: str | None = None
    nickname: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    active: bool = True
    tax_behavior: str = "unspecified"


@dataclass
class MeterRecord:
    id: str
    created: int
    updated: int
    display_name: str
    event_name: str
    formula: str = "sum"  # sum | count | last
    customer_payload_key: str = "stripe_customer_id"
    value_payload_key: str = "value"
    event_time_window: str | None = None
    status: str = "active"
    deactivated_at: int | None = None


@dataclass
class MeterEventRecord:
    event_name: str
    identifier: str
    customer: str
    value: int
    timestamp: int
    created: int
    payload: dict[str, str] = field(default_factory=dict)
    # Canceled by a meter event adjustment: no longer counted.
    canceled: bool = False


@dataclass
class CheckoutLineRecord:
    id: str
    price: str
    quantity: int | None


@dataclass
class CheckoutSessionRecord:
    id: str
    created: int
    expires_at: int
    mode: str
    line_items: list[CheckoutLineRecord]
    currency: str
    amount_subtotal: int
    amount_total: int
    status: str = "open"  # open | complete | expired
    payment_status: str = "unpaid"
    customer: str | None = None
    customer_email: str | None = None
    customer_details: dict[str, Any] | None = None
    client_reference_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    success_url: str | None = None
    cancel_url: str | None = None
    payment_method_collection: str = "always"
    locale: str | None = None
    allow_promotion_codes: bool | None = None
    billing_address_collection: str | None = None
    # subscription_data as sent: trial_end, trial_period_days, missing_payment_method,
    # metadata, description.
    subscription_data: dict[str, Any] = field(default_factory=dict)
    subscription: str | None = None
    invoice: str | None = None
    test_clock: str | None = None


@dataclass
class SubscriptionRecord:
    id: str
    created: int
    customer: str
    currency: str
    status: str
    start_date: int
    billing_cycle_anchor: int
    interval: str
    interval_count: int
    current_period_start: int
    current_period_end: int
    items: list[str] = field(default_factory=list)
    trial_start: int | None = None
    trial_end: int | None = None
    missing_payment_method: str = "create_invoice"  # trial_settings.end_behavior
    cancel_at: int | None = None
    cancel_at_period_end: bool = False
    canceled_at: int | None = None
    ended_at: int | None = None
    cancellation_details: dict[str, Any] = field(
        default_factory=lambda: {"comment": None, "feedback": None, "reason": None}
    )
    latest_invoice: str | None = None
    default_payment_method: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    description: str | None = None
    test_clock: str | None = None
    # Sandbox bookkeeping: whether trial_will_end has been sent for the current trial, and
    # when an `incomplete` subscription expires (Stripe allows 23 hours to pay).
    trial_will_end_sent: bool = False
    incomplete_expires_at: int | None = None
    # `billing_mode[type]`: flexible (Stripe's default since 2025-09-30) or classic.
    billing_mode: str = "flexible"
    proration_discounts: str = "included"
    # `payment_behavior=pending_if_incomplete` whose payment failed: {"expires_at",
    # "invoice", "subscription": the record as it would be, "items": [item records]}.
    pending_update: dict[str, Any] | None = None


@dataclass
class SubscriptionItemRecord:
    id: str
    created: int
    subscription: str
    price: str
    quantity: int | None
    metadata: dict[str, str] = field(default_factory=dict)
    deleted: bool = False
    # What was actually debited for the current period (price, quantity; 0 = nothing):
    # flexible billing mode credits this, not the current price and quantity.
    billed_price: str | None = None
    billed_quantity: int = 0


@dataclass
class InvoiceItemRecord:
    """A pending charge or credit (a proration, or one made with `/v1/invoiceitems`)
    waiting for the next invoice."""

    id: str
    created: int
    customer: str
    amount: int
    currency: str
    description: str
    period_start: int
    period_end: int
    price: str | None = None
    quantity: int = 1
    proration: bool = False
    subscription: str | None = None
    subscription_item: str | None = None
    invoice: str | None = None
    test_clock: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    discountable: bool = True
    unit_amount_decimal: str | None = None


@dataclass
class InvoiceLineRecord:
    id: str
    amount: int
    currency: str
    description: str
    period_start: int
    period_end: int
    quantity: int | None
    price: str | None
    unit_amount_decimal: str | None
    proration: bool = False
    subscription: str | None = None
    subscription_item: str | None = None
    invoice_item: str | None = None
    # Usage in arrears, recomputed from the meter when the invoice is finalized;
    # `inclusive` also counts events stamped exactly at period_end.
    metered: bool = False
    inclusive: bool = False


@dataclass
class InvoiceRecord:
    id: str
    created: int
    customer: str
    currency: str
    billing_reason: str
    period_start: int
    period_end: int
    lines: list[InvoiceLineRecord] = field(default_factory=list)
    subscription: str | None = None
    status: str = "draft"  # draft | open | paid | uncollectible | void
    number: str | None = None
    attempt_count: int = 0
    attempted: bool = False
    auto_advance: bool = True
    next_payment_attempt: int | None = None
    automatically_finalizes_at: int | None = None
    starting_balance: int = 0
    ending_balance: int | None = None
    amount_paid: int = 0
    finalized_at: int | None = None
    paid_at: int | None = None
    voided_at: int | None = None
    marked_uncollectible_at: int | None = None
    first_failed_at: int | None = None
    last_failure_code: str | None = None
    test_clock: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    subscription_metadata: dict[str, str] | None = None
    customer_email: str | None = None
    customer_name: str | None = None
    customer_phone: str | None = None
    description: str | None = None
    webhooks_delivered_at: int | None = None

    @property
    def subtotal(self) -> int:
        return sum(line.amount for line in self.lines)

    @property
    def amount_due(self) -> int:
        # A credit balance (negative starting_balance) pays part of the invoice.
        return max(0, self.subtotal + self.starting_balance)


@dataclass
class TestClockRecord:
    id: str
    created: int
    frozen_time: int
    deletes_after: int
    name: str | None = None
    status: str = "ready"  # ready | advancing
    # While advancing: the frozen_time being advanced to, and the wall-clock time (Unix
    # seconds, float) at which the sandbox performs the work in the background.
    advance_target: int | None = None
    advance_starts_at: float | None = None


@dataclass
class WebhookEndpointRecord:
    id: str
    created: int
    url: str
    enabled_events: list[str]
    secret: str
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    status: str = "enabled"
    api_version: str | None = None


@dataclass
class PortalConfigurationRecord:
    """A customer portal configuration: what customers may do in the billing portal."""

    id: str
    created: int
    updated: int
    features: dict[str, Any]
    business_profile: dict[str, Any] = field(
        default_factory=lambda: {"headline": None, "privacy_policy_url": None, "terms_of_service_url": None}
    )
    default_return_url: str | None = None
    login_page_enabled: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    active: bool = True
    is_default: bool = False


@dataclass
class PortalSessionRecord:
    id: str
    created: int
    customer: str
    configuration: str
    return_url: str | None = None
    locale: str | None = None


# -- persistence ----------------------------------------------------------------------

_NESTED: dict[type, dict[str, type]] = {
    InvoiceRecord: {"lines": InvoiceLineRecord},
    CheckoutSessionRecord: {"line_items": CheckoutLineRecord},
}

R = TypeVar("R")


def dump_record(record: Any) -> dict[str, Any]:
    return dataclasses.asdict(record)


def load_record(cls: type[R], data: dict[str, Any]) -> R:
    """Rebuild a record saved by `dump_record`, ignoring fields a newer version dropped."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {k: v for k, v in data.items() if k in known}
    for name, nested in _NESTED.get(cls, {}).items():
        if name in values:
            values[name] = [load_record(nested, item) for item in values[name]]
    return cls(**values)

"""Invoice previews (`POST /v1/invoices/create_preview`): what the next invoice, a
planned change or a new subscription will cost, without changing anything.

The preview is computed by the billing engine itself on a scratch copy of the state, so
it always agrees with what the change would really bill: the change is applied to the
copy (items, `proration_behavior`, `proration_date`, `cancel_at`, `cancel_now`), then
the invoice it leads to is rendered as a draft. With `always_invoice` that is the
proration invoice made at once; otherwise the next renewal (or trial end) invoice with
pending prorations (`preview_mode=recurring` leaves pending items out).
"""

from __future__ import annotations

import copy
from typing import Any

from nobill.sandbox import errors, ids, invoicing, lifecycle, objects, subscriptions
from nobill.sandbox.params import UNSET, Array, Bool, DecimalString, Enum, Hash, Int, IntOr, Metadata, Str, endpoint
from nobill.sandbox.payment_methods import add_card
from nobill.sandbox.records import CustomerRecord, InvoiceItemRecord, InvoiceRecord, SubscriptionRecord
from nobill.sandbox.routing import Call, route
from nobill.sandbox.state import COLLECTIONS, SandboxState

PREVIEW_ITEM = Hash(
    {
        "amount": Int(),
        "currency": Str(),
        "description": Str(max_length=500),
        "metadata": Metadata(),
        "period": Hash({"end": Int(), "start": Int()}, required=("end", "start")),
        "price": Str(),
        "quantity": Int(minimum=0),
        "unit_amount_decimal": DecimalString(minimum=None),
    },
    not_simulated=("discountable", "discounts", "invoiceitem", "price_data", "quantity_decimal", "tax_behavior", "tax_code", "tax_rates"),
)
SUBSCRIPTION_DETAILS = Hash(
    {
        "billing_mode": lifecycle.BILLING_MODE,
        "cancel_at": IntOr("max_billed_until", "max_period_end", "min_period_end", emptyable=True),
        "cancel_at_period_end": Bool(),
        "cancel_now": Bool(),
        "items": Array(
            Hash(
                {"clear_usage": Bool(), "deleted": Bool(), "id": Str(), "metadata": Metadata(), "price": Str(), "quantity": Int(minimum=0)},
                not_simulated=subscriptions.ITEM_NOT_SIMULATED,
            ),
            max_items=20,
        ),
        "metadata": Metadata(),
        "proration_behavior": Enum(*subscriptions.PRORATION_BEHAVIORS),
        "proration_date": Int(),
    },
    not_simulated=("billing_cycle_anchor", "billing_schedules", "default_tax_rates", "pause", "resume_at", "start_date", "trial_end"),
)
PREVIEW = endpoint(
    {
        "currency": Str(),
        "customer": Str(),
        "invoice_items": Array(PREVIEW_ITEM, max_items=250),
        "preview_mode": Enum("next", "recurring"),
        "subscription": Str(),
        "subscription_details": SUBSCRIPTION_DETAILS,
    },
    not_simulated=("automatic_tax", "customer_account", "customer_details", "discounts", "issuer", "on_behalf_of", "schedule", "schedule_details"),
)


def scratch_copy(state: SandboxState) -> SandboxState:
    """A copy of every object for a what-if computation (meter events are shared, read only)."""
    scratch = SandboxState(state.settings, state.base_url)
    for name in COLLECTIONS:
        setattr(scratch, name, copy.deepcopy(getattr(state, name)))
    scratch.meter_events = state.meter_events
    scratch.meter_identifiers = state.meter_identifiers
    return scratch


def _none_upcoming() -> errors.StripeError:
    return errors.invalid_request("No upcoming invoices for customer.", code="invoice_upcoming_none")


def _add_preview_items(state: SandboxState, customer: CustomerRecord, raw_items: list[dict[str, Any]], now: int) -> None:
    for index, raw in enumerate(raw_items):
        param = f"invoice_items[{index}]"
        record = InvoiceItemRecord(
            id=ids.new_id("ii"),
            created=now,
            customer=customer.id,
            amount=raw.get("amount", 0),
            currency=(raw.get("currency") or customer.currency or "").lower(),
            description=raw.get("description") or "Invoice item",
            period_start=raw.get("period", {}).get("start", now),
            period_end=raw.get("period", {}).get("end", now),
            quantity=raw.get("quantity", 1),
            test_clock=customer.test_clock,
        )
        if "price" in raw:
            price = state.get_price(raw["price"], param=f"{param}[price]")
            record.price, record.currency, record.unit_amount_decimal = price.id, price.currency, price.unit_amount_decimal
        elif "unit_amount_decimal" in raw:
            record.unit_amount_decimal = str(raw["unit_amount_decimal"])
        elif "amount" not in raw:
            raise errors.missing_parameter(f"{param}[amount]")
        if record.unit_amount_decimal is not None:
            record.amount = invoicing.line_amount(record.unit_amount_decimal, record.quantity)
        if not record.currency:
            raise errors.missing_parameter(f"{param}[currency]")
        state.invoice_items[record.id] = record


def _next_invoice(state: SandboxState, subscription: SubscriptionRecord, mode: str) -> InvoiceRecord:
    """The invoice the subscription's next billing moment creates."""
    if mode == "recurring":
        for pending in invoicing.pending_items(state, subscription):
            del state.invoice_items[pending.id]
    before = subscription.latest_invoice
    if subscription.status == "trialing" and subscription.trial_end is not None:
        lifecycle.end_trial(state, subscription, subscription.trial_end)
    elif subscription.status in lifecycle.BILLING_STATUSES:
        lifecycle.renew(state, subscription, subscription.current_period_end)
    if subscription.latest_invoice in (None, before):
        raise _none_upcoming()
    return state.invoices[subscription.latest_invoice or ""]


def _preview_change(state: SandboxState, subscription: SubscriptionRecord, details: dict[str, Any], now: int, mode: str) -> InvoiceRecord:
    behavior = details.get("proration_behavior", "create_prorations")
    if details.get("cancel_now"):
        before = subscription.latest_invoice
        lifecycle.cancel(state, subscription, now, reason="cancellation_requested", invoice_now=True, prorate=behavior != "none")
        if subscription.latest_invoice in (None, before):
            raise _none_upcoming()
        return state.invoices[subscription.latest_invoice or ""]
    changes = subscriptions._item_changes(state, subscription, details.get("items") or [])
    outcome = lifecycle.ChangeOutcome()
    if changes:
        outcome = lifecycle.change_items(
            state, subscription, changes, now=now, proration_behavior=behavior, proration_date=details.get("proration_date")
        )
    if outcome.reset_cycle:
        # A change of billing interval bills the new period at once.
        return lifecycle.reset_billing_cycle(state, subscription, now, credit_unused=False, proration_behavior=behavior)
    invoice_at = outcome.invoice_at
    if "cancel_at" in details or "cancel_at_period_end" in details:
        old_cancel_at = subscription.cancel_at
        cancel_at = details.get("cancel_at")
        if isinstance(cancel_at, str):
            cancel_at = subscription.current_period_end
        if details.get("cancel_at_period_end"):
            subscription.cancel_at_period_end, subscription.cancel_at = True, subscription.current_period_end
        elif "cancel_at_period_end" in details:
            subscription.cancel_at_period_end, subscription.cancel_at = False, None
        if "cancel_at" in details:
            subscription.cancel_at = None if cancel_at is UNSET else cancel_at
            subscription.cancel_at_period_end = False
        at = lifecycle.prorate_cancel_at_change(state, subscription, old_cancel_at, now=now, proration_behavior=behavior)
        invoice_at = invoice_at if invoice_at is not None else at
    if behavior == "always_invoice":
        if not invoicing.pending_items(state, subscription):
            raise _none_upcoming()
        return invoicing.create_invoice(
            state,
            customer=state.customers[subscription.customer],
            subscription=subscription,
            billing_reason="subscription_update",
            period_start=invoice_at or now,
            period_end=invoice_at or now,
            lines=[],
            now=now,
        )
    return _next_invoice(state, subscription, mode)


def _preview_new_subscription(state: SandboxState, customer: CustomerRecord, details: dict[str, Any], now: int) -> InvoiceRecord:
    specs = []
    for index, raw in enumerate(details["items"]):
        if "price" not in raw:
            raise errors.missing_parameter(f"subscription_details[items][{index}][price]")
        price = state.get_price(raw["price"], param=f"subscription_details[items][{index}][price]")
        specs.append(lifecycle.ItemSpec(price, raw.get("quantity"), param=f"subscription_details[items][{index}]"))
    # The preview needs no card; the scratch customer gets one so the engine can bill.
    card = add_card(state, customer, now=now)
    subscription = lifecycle.start_subscription(
        state,
        customer,
        specs,
        now=now,
        default_payment_method=card.id,
        billing_mode=lifecycle.billing_mode_of(details.get("billing_mode"), "subscription_details[billing_mode]"),
    )
    return state.invoices[subscription.latest_invoice or ""]


def _as_preview(invoice: InvoiceRecord, balance: int) -> InvoiceRecord:
    """The invoice as a preview shows it: a draft, unnumbered, unpaid, with the
    customer's balance applied."""
    preview = copy.deepcopy(invoice)
    preview.id = f"upcoming_{invoice.id}"
    preview.status = "draft"
    preview.number = None
    preview.amount_paid = 0
    preview.attempt_count = 0
    preview.attempted = False
    preview.paid_at = preview.finalized_at = preview.next_payment_attempt = None
    preview.automatically_finalizes_at = preview.webhooks_delivered_at = None
    preview.first_failed_at = None
    preview.last_failure_code = None
    preview.starting_balance = balance
    preview.ending_balance = None
    return preview


@route("POST", "/v1/invoices/create_preview", PREVIEW)
def create_preview(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params
    details = params.get("subscription_details") or {}
    mode = params.get("preview_mode", "next")
    scratch = scratch_copy(state)
    if "subscription" in params:
        subscription = scratch.get_subscription(params["subscription"], param="subscription")
        if params.get("customer") not in (None, subscription.customer):
            raise errors.invalid_request("The subscription belongs to another customer.", param="subscription")
        if subscription.status in subscriptions.ENDED:
            raise _none_upcoming()
        if "billing_mode" in details:
            raise errors.invalid_request(
                "`subscription_details[billing_mode]` applies to new subscriptions only.", param="subscription_details[billing_mode]"
            )
        customer = scratch.customers[subscription.customer]
        now = scratch.now(subscription.test_clock)
        balance = customer.balance
        _add_preview_items(scratch, customer, params.get("invoice_items") or [], now)
        invoice = _preview_change(scratch, subscription, details, now, mode)
    elif "customer" in params:
        customer = scratch.get_customer(params["customer"], param="customer")
        now = scratch.now(customer.test_clock)
        balance = customer.balance
        _add_preview_items(scratch, customer, params.get("invoice_items") or [], now)
        if not details.get("items"):
            raise errors.invalid_request(
                "The sandbox previews a subscription's next invoice (`subscription`) or a new subscription "
                "(`subscription_details[items]`); name one of them.",
                param="subscription_details[items]",
            )
        invoice = _preview_new_subscription(scratch, customer, details, now)
    else:
        raise errors.missing_parameter("customer")
    if "currency" in params and params["currency"].lower() != invoice.currency:
        raise errors.invalid_request("The currency does not match the currency of the invoice.", param="currency")
    preview = _as_preview(invoice, balance)
    return objects.invoice(scratch, preview)

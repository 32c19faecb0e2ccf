"""Invoices: building lines, finalizing, charging the customer's test card, scheduling retries.

This module knows nothing of subscription statuses; `lifecycle.py` decides what a paid or
failed invoice means for a subscription.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from nobill.sandbox import events, ids, objects
from nobill.sandbox.billing_periods import DAY, format_date, format_money, line_amount
from nobill.sandbox.meters import aggregate
from nobill.sandbox.records import (
    CustomerRecord,
    InvoiceItemRecord,
    InvoiceLineRecord,
    InvoiceRecord,
    PriceRecord,
    SubscriptionItemRecord,
    SubscriptionRecord,
)
from nobill.sandbox.state import SandboxState


def product_name(state: SandboxState, price: PriceRecord) -> str:
    product = state.products.get(price.product)
    return product.name if product else price.product


# -- lines ----------------------------------------------------------------------------


def licensed_line(
    state: SandboxState,
    subscription: SubscriptionRecord,
    item: SubscriptionItemRecord,
    start: int,
    end: int,
    *,
    trial: bool = False,
    fraction: Fraction | None = None,
) -> InvoiceLineRecord:
    """The line billing `item` in advance for [start, end); `fraction` bills a shorter
    first period (up to a billing cycle anchor) as a part of a whole interval."""
    price = state.prices[item.price]
    quantity = item.quantity or 0
    if trial:
        description, amount = f"Trial period for {product_name(state, price)}", 0
    elif fraction is not None:
        description = f"Remaining time on {quantity} × {product_name(state, price)} after {format_date(start)}"
        amount = line_amount(price.unit_amount_decimal, quantity, fraction)
    else:
        description = (
            f"{quantity} × {product_name(state, price)} "
            f"(at {format_money(price.unit_amount_decimal, price.currency)} / {price.interval})"
        )
        amount = line_amount(price.unit_amount_decimal, quantity)
    return InvoiceLineRecord(
        id=ids.new_id("il"),
        amount=amount,
        currency=price.currency,
        description=description,
        period_start=start,
        period_end=end,
        quantity=quantity,
        price=price.id,
        unit_amount_decimal="0" if trial else price.unit_amount_decimal,
        proration=fraction is not None and not trial,
        subscription=subscription.id,
        subscription_item=item.id,
    )


def metered_line(
    state: SandboxState, subscription: SubscriptionRecord, item: SubscriptionItemRecord, start: int, end: int, *, inclusive: bool = False
) -> InvoiceLineRecord:
    """Usage in arrears: the meter's value over [start, end) × the unit price.

    `inclusive` also counts events stamped exactly `end` (a final invoice made "now"
    bills usage reported up to this very second). Stripe bills a negative period
    total as quantity 0.
    """
    price = state.prices[item.price]
    line = InvoiceLineRecord(
        id=ids.new_id("il"),
        amount=0,
        currency=price.currency,
        description="",
        period_start=start,
        period_end=end,
        quantity=0,
        price=price.id,
        unit_amount_decimal=price.unit_amount_decimal,
        subscription=subscription.id,
        subscription_item=item.id,
        metered=True,
        inclusive=inclusive,
    )
    _measure_usage(state, line, subscription.customer)
    return line


def _measure_usage(state: SandboxState, line: InvoiceLineRecord, customer_id: str) -> None:
    """Set a usage line's quantity, amount and description from the meter's current total."""
    price = state.prices[line.price or ""]
    meter = state.meters.get(price.meter or "")
    end = line.period_end + 1 if line.inclusive else line.period_end
    usage = aggregate(state, meter, customer_id, line.period_start, end) if meter else 0
    quantity = max(0, usage)
    line.quantity = quantity
    line.amount = line_amount(price.unit_amount_decimal, quantity)
    line.description = (
        f"{quantity} × {product_name(state, price)} "
        f"(at {format_money(price.unit_amount_decimal, price.currency)} / {price.interval})"
    )


def refresh_usage_lines(state: SandboxState, invoice: InvoiceRecord) -> None:
    """Recompute usage lines from the meters, as Stripe does when it finalizes a draft.

    Stripe keeps a renewal draft open for an hour (the finalization grace period); meter
    events sent during that hour with a timestamp inside the ended period are billed on
    it (https://docs.stripe.com/billing/subscriptions/usage-based/configure-grace-period).
    """
    for line in invoice.lines:
        if line.metered and line.price in state.prices:
            _measure_usage(state, line, invoice.customer)


def proration_item(
    state: SandboxState,
    subscription: SubscriptionRecord,
    item: SubscriptionItemRecord,
    price: PriceRecord,
    quantity: int,
    at: int,
    *,
    credit: bool,
) -> InvoiceItemRecord | None:
    """A pending proration for the rest of the current period after `at`.

    Credits are for the unused time of what was billed; charges for the remaining time
    of what replaces it. Amounts are exact per second, rounded to whole cents.
    """
    start, end = subscription.current_period_start, subscription.current_period_end
    if end <= start or not start <= at < end:
        return None
    fraction = Fraction(end - at, end - start)
    amount = line_amount(price.unit_amount_decimal, quantity, fraction)
    if amount == 0:
        return None
    name = product_name(state, price)
    description = (
        f"Unused time on {quantity} × {name} after {format_date(at)}"
        if credit
        else f"Remaining time on {quantity} × {name} after {format_date(at)}"
    )
    record = InvoiceItemRecord(
        id=ids.new_id("ii"),
        created=at,
        customer=subscription.customer,
        amount=-amount if credit else amount,
        currency=price.currency,
        description=description,
        period_start=at,
        period_end=end,
        price=price.id,
        quantity=quantity,
        proration=True,
        subscription=subscription.id,
        subscription_item=item.id,
        test_clock=subscription.test_clock,
    )
    state.invoice_items[record.id] = record
    return record


def pending_items(state: SandboxState, subscription: SubscriptionRecord) -> list[InvoiceItemRecord]:
    return [
        item
        for item in state.invoice_items.values()
        if item.invoice is None and item.subscription == subscription.id
    ]


def pending_customer_items(state: SandboxState, customer_id: str, currency: str) -> list[InvoiceItemRecord]:
    """Pending items made for the customer without a subscription: Stripe puts them on
    the customer's next invoice."""
    return [
        item
        for item in state.invoice_items.values()
        if item.invoice is None
        and item.subscription is None
        and item.customer == customer_id
        and item.currency == currency
    ]


def line_from_item(item: InvoiceItemRecord) -> InvoiceLineRecord:
    return InvoiceLineRecord(
        id=ids.new_id("il"),
        amount=item.amount,
        currency=item.currency,
        description=item.description,
        period_start=item.period_start,
        period_end=item.period_end,
        quantity=item.quantity,
        price=item.price,
        unit_amount_decimal=item.unit_amount_decimal,
        proration=item.proration,
        subscription=item.subscription,
        subscription_item=item.subscription_item,
        invoice_item=item.id,
    )


# -- invoice lifecycle ----------------------------------------------------------------


def create_invoice(
    state: SandboxState,
    *,
    customer: CustomerRecord,
    subscription: SubscriptionRecord,
    billing_reason: str,
    period_start: int,
    period_end: int,
    lines: list[InvoiceLineRecord],
    now: int,
    include_pending_items: bool = True,
    finalize_after: int | None = None,
) -> InvoiceRecord:
    """A draft invoice (event `invoice.created`), with the subscription's pending items."""
    if include_pending_items:
        for item in pending_items(state, subscription) + pending_customer_items(state, customer.id, subscription.currency):
            lines.append(line_from_item(item))
    invoice = InvoiceRecord(
        id=ids.new_id("in"),
        created=now,
        customer=customer.id,
        currency=subscription.currency,
        billing_reason=billing_reason,
        period_start=period_start,
        period_end=period_end,
        lines=lines,
        subscription=subscription.id,
        automatically_finalizes_at=None if finalize_after is None else now + finalize_after,
        test_clock=customer.test_clock,
        subscription_metadata=dict(subscription.metadata),
        customer_email=customer.email,
        customer_name=customer.name,
        customer_phone=customer.phone,
    )
    for line in lines:
        if line.invoice_item:
            state.invoice_items[line.invoice_item].invoice = invoice.id
    state.invoices[invoice.id] = invoice
    subscription.latest_invoice = invoice.id
    state.dirty = True
    events.emit(state, "invoice.created", objects.invoice(state, invoice), created=now)
    return invoice


def finalize(state: SandboxState, invoice: InvoiceRecord, now: int) -> None:
    """draft → open: bill late usage, number the invoice and apply the customer's balance."""
    refresh_usage_lines(state, invoice)
    customer = state.customers[invoice.customer]
    invoice.number = f"{customer.invoice_prefix}-{customer.next_invoice_sequence:04d}"
    customer.next_invoice_sequence += 1
    # A negative balance is a credit that pays part of this invoice; a credit larger than
    # the invoice (or a negative invoice) stays on the customer for the next one.
    invoice.starting_balance = customer.balance
    combined = invoice.subtotal + customer.balance
    invoice.ending_balance = min(0, combined)
    customer.balance = invoice.ending_balance
    invoice.status = "open"
    invoice.finalized_at = now
    invoice.automatically_finalizes_at = None
    invoice.webhooks_delivered_at = now
    state.dirty = True
    events.emit(state, "invoice.finalized", objects.invoice(state, invoice), created=now)


def mark_paid(state: SandboxState, invoice: InvoiceRecord, now: int) -> None:
    invoice.status = "paid"
    invoice.amount_paid = invoice.amount_due
    invoice.paid_at = now
    invoice.next_payment_attempt = None
    state.dirty = True
    rendered = objects.invoice(state, invoice)
    events.emit(state, "invoice.paid", rendered, created=now)
    events.emit(state, "invoice.payment_succeeded", rendered, created=now)


@dataclass
class PaymentOutcome:
    paid: bool
    # True when no retry is scheduled after this failure (the last one, or retries off).
    final: bool = False
    reason: str | None = None  # card_declined | no_payment_method


def attempt_payment(state: SandboxState, invoice: InvoiceRecord, now: int, *, schedule_retry: bool) -> PaymentOutcome:
    """Charge the invoice to the customer's test card, as an automatic attempt would."""
    if invoice.amount_due == 0:
        mark_paid(state, invoice, now)
        return PaymentOutcome(paid=True)
    customer = state.customers[invoice.customer]
    subscription = state.subscriptions.get(invoice.subscription or "")
    card = state.default_payment_method(subscription, customer)
    invoice.attempt_count += 1
    invoice.attempted = True
    if card is not None and not card.declines:
        mark_paid(state, invoice, now)
        return PaymentOutcome(paid=True)
    reason = "no_payment_method" if card is None else "card_declined"
    invoice.last_failure_code = reason
    if invoice.first_failed_at is None:
        invoice.first_failed_at = now
    retries = state.settings.dunning_retry_days
    retry_number = invoice.attempt_count  # retry n follows attempt n
    if schedule_retry and retry_number <= len(retries):
        invoice.next_payment_attempt = invoice.first_failed_at + retries[retry_number - 1] * DAY
        final = False
    else:
        invoice.next_payment_attempt = None
        final = True
    state.dirty = True
    rendered = objects.invoice(state, invoice)
    events.emit(state, "invoice.payment_failed", rendered, created=now)
    events.emit(state, "invoice.updated", rendered, created=now, previous_attributes={"attempt_count": invoice.attempt_count - 1})
    return PaymentOutcome(paid=False, final=final, reason=reason)


def void(state: SandboxState, invoice: InvoiceRecord, now: int) -> None:
    invoice.status = "void"
    invoice.voided_at = now
    invoice.next_payment_attempt = None
    state.dirty = True
    events.emit(state, "invoice.voided", objects.invoice(state, invoice), created=now)


def mark_uncollectible(state: SandboxState, invoice: InvoiceRecord, now: int) -> None:
    invoice.status = "uncollectible"
    invoice.marked_uncollectible_at = now
    invoice.next_payment_attempt = None
    state.dirty = True
    events.emit(state, "invoice.marked_uncollectible", objects.invoice(state, invoice), created=now)

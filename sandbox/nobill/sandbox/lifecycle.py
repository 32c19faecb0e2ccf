"""The subscription state machine: start, trial end, renewal, item changes with
prorations, payment outcomes and dunning, cancellation.

Statuses: `trialing` → `active` at trial end (or `canceled` / `paused` when the trial
ends without a payment method and `trial_settings` say so); `incomplete` when the first
payment fails (→ `active` once paid, → `incomplete_expired` after 23 hours); `past_due`
after a failed renewal payment, back to `active` when a retry succeeds, and after the
last retry `canceled` (default), `unpaid` or still `past_due` (`dunning_final_action`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from nobill.sandbox import errors, events, ids, invoicing, objects
from nobill.sandbox.billing_periods import DAY, add_intervals, line_amount, next_boundary
from nobill.sandbox.params import Enum, Hash
from nobill.sandbox.records import (
    CustomerRecord,
    dump_record,
    load_record,
    InvoiceRecord,
    PriceRecord,
    SubscriptionItemRecord,
    SubscriptionRecord,
)
from nobill.sandbox.state import SandboxState

BILLING_STATUSES = ("active", "past_due", "unpaid")
INCOMPLETE_WINDOW = 23 * 3_600
TRIAL_WILL_END_NOTICE = 3 * DAY


# Since API version 2025-09-30.clover new subscriptions default to `flexible`
# (https://docs.stripe.com/billing/subscriptions/billing-mode); `classic` on request.
BILLING_MODE = Hash(
    {"type": Enum("classic", "flexible"), "flexible": Hash({"proration_discounts": Enum("included", "itemized")})},
    required=("type",),
)


def billing_mode_of(params: dict[str, Any] | None, param: str = "billing_mode") -> tuple[str, str]:
    """(type, proration_discounts) from a parsed `billing_mode` hash; flexible by default."""
    mode = params or {}
    kind = mode.get("type", "flexible")
    if "flexible" in mode and kind != "flexible":
        raise errors.invalid_request(
            "`billing_mode[flexible]` can only be set when `billing_mode[type]` is `flexible`.", param=f"{param}[flexible]"
        )
    return kind, (mode.get("flexible") or {}).get("proration_discounts", "included")


# -- items ----------------------------------------------------------------------------


@dataclass
class ItemSpec:
    """One item of a subscription being created, as the caller asked for it."""

    price: PriceRecord
    quantity: int | None
    metadata: dict[str, str] = field(default_factory=dict)
    param: str = "items[0]"


def check_items(state: SandboxState, specs: list[ItemSpec], *, param: str = "items") -> tuple[str, str, int]:
    """Stripe's rules for the items of one subscription; returns (currency, interval, count)."""
    if not specs:
        raise errors.missing_parameter(param)
    seen: set[str] = set()
    first = specs[0].price
    for spec in specs:
        price = spec.price
        if price.type != "recurring":
            raise errors.invalid_request(
                "The price specified is set to `type=one_time` but this field only accepts prices with `type=recurring`.",
                param=f"{spec.param}[price]",
            )
        if not price.active:
            raise errors.invalid_request(
                "The price specified is inactive. This field only accepts active prices.", param=f"{spec.param}[price]"
            )
        if price.usage_type == "metered" and spec.quantity is not None:
            raise errors.invalid_request(
                f"Quantity should not be specified where usage_type is `metered`. Remove quantity from `{spec.param}`.",
                param=f"{spec.param}[quantity]",
            )
        if price.id in seen:
            raise errors.invalid_request(
                f"Cannot add multiple subscription items with the same price: {price.id}", param=param
            )
        seen.add(price.id)
        for name in ("currency", "interval", "interval_count"):
            if getattr(price, name) != getattr(first, name):
                raise errors.invalid_request(
                    "Currency and interval fields must match across all plans on this subscription. "
                    f"Found mismatch in {name} field.",
                    param=param,
                )
    return first.currency, first.interval or "month", first.interval_count or 1


def _new_item(state: SandboxState, subscription: SubscriptionRecord, spec: ItemSpec, now: int) -> SubscriptionItemRecord:
    quantity = None if spec.price.usage_type == "metered" else (1 if spec.quantity is None else spec.quantity)
    item = SubscriptionItemRecord(
        id=ids.new_id("si"), created=now, subscription=subscription.id, price=spec.price.id, quantity=quantity, metadata=dict(spec.metadata)
    )
    state.subscription_items[item.id] = item
    subscription.items.append(item.id)
    return item


def licensed_total(state: SandboxState, specs: list[ItemSpec]) -> int:
    return sum(
        line_amount(spec.price.unit_amount_decimal, 1 if spec.quantity is None else spec.quantity)
        for spec in specs
        if spec.price.usage_type != "metered"
    )


def _no_payment_method() -> errors.StripeError:
    return errors.invalid_request(
        "This customer has no attached payment source or default payment method. "
        "Please consider adding a default payment method.",
        code="resource_missing",
    )


def _mark_billed(item: SubscriptionItemRecord) -> None:
    """The item's current price and quantity are what has been debited for this period."""
    item.billed_price = item.price
    item.billed_quantity = item.quantity or 0


def credit_basis(state: SandboxState, subscription: SubscriptionRecord, item: SubscriptionItemRecord) -> tuple[PriceRecord, int]:
    """What a proration credits for the unused time of `item`.

    Classic billing mode credits the item's current price × quantity, even when that was
    never billed (e.g. after a change made with `proration_behavior=none`). Flexible mode
    credits what was actually debited for the period
    (https://docs.stripe.com/billing/subscriptions/billing-mode).
    """
    if subscription.billing_mode == "flexible" and item.billed_price is not None:
        return state.prices[item.billed_price], item.billed_quantity
    return state.prices[item.price], item.quantity or 0


# -- start ----------------------------------------------------------------------------


def start_subscription(
    state: SandboxState,
    customer: CustomerRecord,
    specs: list[ItemSpec],
    *,
    now: int,
    trial_end: int | None = None,
    missing_payment_method: str = "create_invoice",
    default_payment_method: str | None = None,
    metadata: dict[str, str] | None = None,
    description: str | None = None,
    payment_behavior: str = "allow_incomplete",
    cancel_at_period_end: bool = False,
    billing_mode: tuple[str, str] = ("flexible", "included"),
    billing_cycle_anchor: int | None = None,
    proration_behavior: str = "create_prorations",
) -> SubscriptionRecord:
    """Create a subscription and its first invoice, and charge it per `payment_behavior`:
    `allow_incomplete`/`error_if_incomplete` charge at once; `default_incomplete`
    leaves the finalized invoice open for the customer to pay (status `incomplete`).

    A `billing_cycle_anchor` in the first interval makes the first period end there;
    with `create_prorations` the first invoice bills that partial period, with `none`
    it is free.
    """
    currency, interval, interval_count = check_items(state, specs)
    if customer.currency is not None and customer.currency != currency:
        raise errors.invalid_request(
            f"You cannot combine currencies on a single customer. This customer has had a subscription or "
            f"payment in {customer.currency}, but you are trying to pay in {currency}.",
            param="currency",
        )
    card = state.payment_methods.get(default_payment_method or "") or state.default_payment_method(None, customer)
    free_until_anchor = billing_cycle_anchor is not None and proration_behavior == "none"
    if trial_end is None and not free_until_anchor and licensed_total(state, specs) > 0 and payment_behavior != "default_incomplete":
        if card is None:
            raise _no_payment_method()
        if card.declines and payment_behavior == "error_if_incomplete":
            raise errors.card_declined()
    # Flexible billing mode makes no invoice that would be empty, e.g. for a subscription of
    # metered items only (https://docs.stripe.com/billing/subscriptions/billing-mode/compare).
    invoiced = (
        billing_mode[0] == "classic"
        or any(spec.price.usage_type != "metered" for spec in specs)
        or bool(invoicing.pending_customer_items(state, customer.id, currency))
    )
    if trial_end is not None:
        period_end = trial_end
    elif billing_cycle_anchor is not None:
        period_end = billing_cycle_anchor
    else:
        period_end = add_intervals(now, interval, interval_count, 1)
    subscription = SubscriptionRecord(
        id=ids.new_id("sub"),
        created=now,
        customer=customer.id,
        currency=currency,
        status="trialing" if trial_end is not None else ("incomplete" if invoiced else "active"),
        start_date=now,
        billing_cycle_anchor=period_end if trial_end is not None or billing_cycle_anchor is not None else now,
        interval=interval,
        interval_count=interval_count,
        current_period_start=now,
        current_period_end=period_end,
        trial_start=now if trial_end is not None else None,
        trial_end=trial_end,
        missing_payment_method=missing_payment_method,
        default_payment_method=default_payment_method,
        metadata=dict(metadata or {}),
        description=description,
        test_clock=customer.test_clock,
        billing_mode=billing_mode[0],
        proration_discounts=billing_mode[1],
    )
    if cancel_at_period_end:
        subscription.cancel_at_period_end = True
        subscription.cancel_at = period_end
        subscription.canceled_at = now
        subscription.cancellation_details["reason"] = "cancellation_requested"
    state.subscriptions[subscription.id] = subscription
    items = [_new_item(state, subscription, spec, now) for spec in specs]
    customer.currency = currency
    state.dirty = True
    events.emit(state, "customer.subscription.created", objects.subscription(state, subscription), created=now)
    if not invoiced:
        return subscription

    partial = None
    if billing_cycle_anchor is not None and trial_end is None:
        # The first, shorter period is prorated against a whole interval ending at the anchor.
        whole_start = add_intervals(billing_cycle_anchor, interval, interval_count, -1)
        partial = Fraction(0) if proration_behavior == "none" else Fraction(billing_cycle_anchor - now, billing_cycle_anchor - whole_start)
    lines = [
        invoicing.licensed_line(state, subscription, item, now, period_end, trial=trial_end is not None, fraction=partial)
        for item in items
        if item.quantity is not None
    ]
    if trial_end is None:
        for item in items:
            _mark_billed(item)
    invoice = invoicing.create_invoice(
        state,
        customer=customer,
        subscription=subscription,
        billing_reason="subscription_create",
        period_start=now,
        period_end=now,
        lines=lines,
        now=now,
    )
    invoicing.finalize(state, invoice, now)
    before = objects.subscription(state, subscription)
    if payment_behavior == "default_incomplete" and invoice.amount_due > 0:
        # The customer confirms the payment later (e.g. `invoices.pay`); until then the
        # subscription is `incomplete`, and it expires after 23 hours like any other.
        outcome = invoicing.PaymentOutcome(paid=False)
    else:
        outcome = invoicing.attempt_payment(state, invoice, now, schedule_retry=False)
    if outcome.paid:
        if subscription.status == "incomplete":
            subscription.status = "active"
    else:
        # Stripe gives the customer 23 hours to pay the first invoice.
        subscription.incomplete_expires_at = now + INCOMPLETE_WINDOW
    events.emit_updated(state, "customer.subscription.updated", before, objects.subscription(state, subscription), created=now)
    return subscription


# -- trial end, renewal, cancellation ---------------------------------------------------


def send_trial_will_end(state: SandboxState, subscription: SubscriptionRecord, now: int) -> None:
    subscription.trial_will_end_sent = True
    state.dirty = True
    events.emit(state, "customer.subscription.trial_will_end", objects.subscription(state, subscription), created=now)


def end_trial(state: SandboxState, subscription: SubscriptionRecord, now: int) -> None:
    """At `trial_end`: start the first paid period, or cancel/pause without a card."""
    customer = state.customers[subscription.customer]
    before = objects.subscription(state, subscription)
    subscription.trial_will_end_sent = True
    if subscription.cancel_at_period_end or (subscription.cancel_at is not None and subscription.cancel_at <= now):
        cancel(state, subscription, now, reason="cancellation_requested")
        return
    has_card = state.default_payment_method(subscription, customer) is not None
    if not has_card and subscription.missing_payment_method == "cancel":
        cancel(state, subscription, now, reason=None)
        return
    if not has_card and subscription.missing_payment_method == "pause":
        subscription.status = "paused"
        state.dirty = True
        after = objects.subscription(state, subscription)
        events.emit(state, "customer.subscription.paused", after, created=now)
        events.emit_updated(state, "customer.subscription.updated", before, after, created=now)
        return
    subscription.status = "active"
    subscription.trial_end = min(subscription.trial_end or now, now)
    subscription.billing_cycle_anchor = now
    lines = _start_period(
        state, subscription, now, add_intervals(now, subscription.interval, subscription.interval_count, 1)
    )
    # NOTE: usage recorded during a trial is not billed, as on Stripe.
    invoicing.create_invoice(
        state,
        customer=customer,
        subscription=subscription,
        billing_reason="subscription_cycle",
        period_start=before["trial_start"] or now,
        period_end=now,
        lines=lines,
        now=now,
        finalize_after=state.settings.invoice_finalize_delay,
    )
    events.emit_updated(state, "customer.subscription.updated", before, objects.subscription(state, subscription), created=now)


def _usage_lines(state: SandboxState, subscription: SubscriptionRecord, start: int, end: int, *, inclusive: bool = False) -> list[Any]:
    return [
        invoicing.metered_line(state, subscription, item, start, end, inclusive=inclusive)
        for item in state.items_of(subscription)
        if item.quantity is None
    ]


def renew(state: SandboxState, subscription: SubscriptionRecord, now: int) -> None:
    """At the end of a period: invoice the next period in advance and usage in arrears."""
    customer = state.customers[subscription.customer]
    old_start, old_end = subscription.current_period_start, subscription.current_period_end
    if subscription.cancel_at_period_end or (subscription.cancel_at is not None and subscription.cancel_at <= old_end):
        usage = _usage_lines(state, subscription, old_start, old_end)
        if usage or invoicing.pending_items(state, subscription):
            invoicing.create_invoice(
                state,
                customer=customer,
                subscription=subscription,
                billing_reason="subscription_cycle",
                period_start=old_start,
                period_end=old_end,
                lines=usage,
                now=now,
                finalize_after=state.settings.invoice_finalize_delay,
            )
        cancel(state, subscription, now, reason="cancellation_requested")
        return
    before = objects.subscription(state, subscription)
    # Periods are counted from the billing cycle anchor, so a month-end anchor keeps its
    # day (Jan 31 → Feb 28 → Mar 31).
    new_end = next_boundary(subscription.billing_cycle_anchor, subscription.interval, subscription.interval_count, old_end)
    usage = _usage_lines(state, subscription, old_start, old_end)
    advance = _start_period(state, subscription, old_end, new_end)
    if subscription.cancel_at is not None and old_end < subscription.cancel_at < new_end:
        # "If set during a future period, this will always cause a proration for that
        # period" (the `cancel_at` parameter): the renewal credits the time after it.
        _credit_after(state, subscription, subscription.cancel_at)
    invoicing.create_invoice(
        state,
        customer=customer,
        subscription=subscription,
        billing_reason="subscription_cycle",
        period_start=old_start,
        period_end=old_end,
        lines=advance + usage,
        now=now,
        finalize_after=state.settings.invoice_finalize_delay,
    )
    events.emit_updated(state, "customer.subscription.updated", before, objects.subscription(state, subscription), created=now)


def cancel(
    state: SandboxState,
    subscription: SubscriptionRecord,
    now: int,
    *,
    reason: str | None,
    invoice_now: bool = False,
    prorate: bool = False,
    comment: str | None = None,
    feedback: str | None = None,
) -> None:
    """End the subscription now (event `customer.subscription.deleted`)."""
    customer = state.customers[subscription.customer]
    if prorate and subscription.status in BILLING_STATUSES:
        for item in state.items_of(subscription):
            if item.quantity is not None:
                credited_price, credited_quantity = credit_basis(state, subscription, item)
                invoicing.proration_item(state, subscription, item, credited_price, credited_quantity, now, credit=True)
    if invoice_now:
        lines = _usage_lines(state, subscription, subscription.current_period_start, now, inclusive=True)
        if lines or invoicing.pending_items(state, subscription):
            invoice = invoicing.create_invoice(
                state,
                customer=customer,
                subscription=subscription,
                billing_reason="subscription_cycle",
                period_start=subscription.current_period_start,
                period_end=now,
                lines=lines,
                now=now,
            )
            invoicing.finalize(state, invoice, now)
            invoicing.attempt_payment(state, invoice, now, schedule_retry=False)
    else:
        # Prorations not invoiced now (credits and charges) go to the customer's balance,
        # which is applied to the customer's next invoice, as Stripe applies pending items.
        for pending in invoicing.pending_items(state, subscription):
            customer.balance += pending.amount
            del state.invoice_items[pending.id]
    subscription.status = "canceled"
    subscription.canceled_at = subscription.canceled_at or now
    subscription.ended_at = now
    subscription.cancellation_details = {"comment": comment, "feedback": feedback, "reason": reason}
    for invoice in state.invoices.values():
        # Retries stop with the subscription.
        if invoice.subscription == subscription.id and invoice.status == "open":
            invoice.next_payment_attempt = None
    state.dirty = True
    events.emit(state, "customer.subscription.deleted", objects.subscription(state, subscription), created=now)


def _cancel_inside_period(subscription: SubscriptionRecord, cancel_at: int | None) -> int | None:
    if cancel_at is not None and subscription.current_period_start <= cancel_at < subscription.current_period_end:
        return cancel_at
    return None


def _credit_after(state: SandboxState, subscription: SubscriptionRecord, at: int, *, credit: bool = True) -> None:
    """Prorations for the licensed items' time in the current period after `at`."""
    for item in state.items_of(subscription):
        if item.quantity is None:
            continue
        price, quantity = credit_basis(state, subscription, item) if credit else (state.prices[item.price], item.quantity)
        invoicing.proration_item(state, subscription, item, price, quantity, at, credit=credit)


def prorate_cancel_at_change(
    state: SandboxState, subscription: SubscriptionRecord, old_cancel_at: int | None, *, now: int, proration_behavior: str
) -> int | None:
    """`cancel_at` moved inside the current period: credit the unused time after it (and
    take back an earlier credit when it moves or is withdrawn), per `proration_behavior`.

    Stripe's `cancel_at` parameter: "If set to a date before the current period ends,
    this will cause a proration if prorations have been enabled using
    `proration_behavior`." Returns the proration time when they must be invoiced now
    (`always_invoice`), else None.
    """
    if subscription.status not in BILLING_STATUSES or proration_behavior == "none":
        return None
    old = _cancel_inside_period(subscription, old_cancel_at)
    new = _cancel_inside_period(subscription, subscription.cancel_at)
    if old == new:
        return None
    if old is not None:
        _credit_after(state, subscription, old, credit=False)
    if new is not None:
        _credit_after(state, subscription, new)
    return now if proration_behavior == "always_invoice" else None


def resume(state: SandboxState, subscription: SubscriptionRecord, now: int) -> None:
    """`POST /v1/subscriptions/{id}/resume` with `billing_cycle_anchor=now`: a new period
    starts now and its invoice is charged at once; the subscription is `active` when it
    is paid and `past_due` (with retries) when it is not, as Stripe documents for resume."""
    customer = state.customers[subscription.customer]
    before = objects.subscription(state, subscription)
    subscription.status = "active"
    subscription.billing_cycle_anchor = now
    lines = _start_period(state, subscription, now, add_intervals(now, subscription.interval, subscription.interval_count, 1))
    invoice = invoicing.create_invoice(
        state,
        customer=customer,
        subscription=subscription,
        billing_reason="subscription_update",
        period_start=now,
        period_end=now,
        lines=lines,
        now=now,
    )
    events.emit(state, "customer.subscription.resumed", objects.subscription(state, subscription), created=now)
    events.emit_updated(state, "customer.subscription.updated", before, objects.subscription(state, subscription), created=now)
    invoicing.finalize(state, invoice, now)
    charge(state, invoice, now)


def expire_incomplete(state: SandboxState, subscription: SubscriptionRecord, now: int) -> None:
    before = objects.subscription(state, subscription)
    subscription.status = "incomplete_expired"
    subscription.ended_at = now
    subscription.incomplete_expires_at = None
    latest = state.invoices.get(subscription.latest_invoice or "")
    if latest is not None and latest.status == "open":
        invoicing.void(state, latest, now)
    events.emit_updated(state, "customer.subscription.updated", before, objects.subscription(state, subscription), created=now)


# -- payments ---------------------------------------------------------------------------


def finalize_and_charge(state: SandboxState, invoice: InvoiceRecord, now: int) -> None:
    """A draft invoice's automatic finalization, followed by the first payment attempt."""
    invoicing.finalize(state, invoice, now)
    charge(state, invoice, now)


def charge(state: SandboxState, invoice: InvoiceRecord, now: int) -> invoicing.PaymentOutcome:
    """One payment attempt (automatic, a scheduled retry, or `POST /v1/invoices/{id}/pay`)."""
    subscription = state.subscriptions.get(invoice.subscription or "")
    pending = subscription.pending_update if subscription is not None else None
    holding = pending is not None and pending.get("invoice") == invoice.id
    retries_apply = (
        subscription is not None and subscription.status not in ("canceled", "incomplete", "incomplete_expired") and not holding
    )
    before = objects.subscription(state, subscription) if subscription else None
    outcome = invoicing.attempt_payment(state, invoice, now, schedule_retry=retries_apply)
    if subscription is None or before is None:
        return outcome
    if holding:
        # A pending update's invoice is not retried: it is paid (the update applies) or expires.
        if outcome.paid:
            apply_pending_update(state, subscription, now)
        return outcome
    if outcome.paid:
        _reactivate_if_settled(state, subscription, invoice)
    elif retries_apply:
        if outcome.final:
            final_action = state.settings.dunning_final_action
            if final_action == "cancel":
                cancel(state, subscription, now, reason="payment_failed")
                return outcome
            subscription.status = "unpaid" if final_action == "unpaid" else "past_due"
        elif subscription.status in ("active", "trialing"):
            subscription.status = "past_due"
    state.dirty = True
    events.emit_updated(state, "customer.subscription.updated", before, objects.subscription(state, subscription), created=now)
    return outcome


def _reactivate_if_settled(state: SandboxState, subscription: SubscriptionRecord, paid: InvoiceRecord) -> None:
    """A past_due/unpaid/incomplete subscription is active again once nothing is owed."""
    still_unpaid = any(
        other.subscription == subscription.id and other.status == "open" and other.id != paid.id
        for other in state.invoices.values()
    )
    if subscription.status in ("past_due", "unpaid", "incomplete") and not still_unpaid:
        subscription.status = "active"
        subscription.incomplete_expires_at = None


def record_out_of_band_payment(state: SandboxState, invoice: InvoiceRecord, now: int) -> None:
    """`POST /v1/invoices/{id}/pay` with `paid_out_of_band=true`."""
    invoicing.mark_paid(state, invoice, now)
    subscription = state.subscriptions.get(invoice.subscription or "")
    if subscription is not None and (subscription.pending_update or {}).get("invoice") == invoice.id:
        apply_pending_update(state, subscription, now)
        return
    if subscription is not None and subscription.status not in ("canceled", "incomplete_expired"):
        before = objects.subscription(state, subscription)
        _reactivate_if_settled(state, subscription, invoice)
        events.emit_updated(state, "customer.subscription.updated", before, objects.subscription(state, subscription), created=now)


# -- changes to items -----------------------------------------------------------------


@dataclass
class ItemChange:
    """One change requested by `subscriptions.update(items=...)` or the item endpoints."""

    item: SubscriptionItemRecord | None  # None: add a new item
    price: PriceRecord | None = None  # None: keep the price
    quantity: int | None = None  # None: keep (or 1 for a new licensed item)
    delete: bool = False
    metadata: Any = None  # a parsed metadata update, or None
    param: str = "items[0]"


def change_items(
    state: SandboxState,
    subscription: SubscriptionRecord,
    changes: list[ItemChange],
    *,
    now: int,
    proration_behavior: str = "create_prorations",
    proration_date: int | None = None,
    payment_behavior: str = "allow_incomplete",
) -> ChangeOutcome:
    """Apply item changes with Stripe's prorations: `create_prorations` leaves pending
    invoice items for the next invoice, `always_invoice` bills them at once, `none` skips.

    A change of billing interval (monthly ↔ yearly) resets the billing cycle to now, as
    Stripe does (https://docs.stripe.com/billing/subscriptions/billing-cycle#changing):
    the unused time of the old items is credited (unless `none`) and the caller bills
    the new period at once (`reset_billing_cycle`).

    Emits nothing: the caller sends one `customer.subscription.updated` for the whole
    request and bills what the outcome says.
    """
    from nobill.sandbox.params import merge_metadata

    # The resulting set of items, checked with the same rules as at creation.
    resulting: dict[str, ItemSpec] = {
        item.id: ItemSpec(state.prices[item.price], item.quantity, item.metadata, param="items")
        for item in state.items_of(subscription)
    }
    added: list[ItemSpec] = []
    for change in changes:
        if change.item is None:
            if change.price is None:
                raise errors.missing_parameter(f"{change.param}[price]")
            metadata = merge_metadata({}, change.metadata) if change.metadata else {}
            added.append(ItemSpec(change.price, change.quantity, metadata, param=change.param))
            continue
        if change.delete:
            resulting.pop(change.item.id, None)
            continue
        spec = resulting[change.item.id]
        price = change.price or spec.price
        if change.quantity is not None:
            quantity: int | None = change.quantity  # rejected below if the price is metered
        elif price.usage_type == "metered":
            quantity = None
        else:
            quantity = spec.quantity if spec.quantity is not None else 1
        resulting[change.item.id] = ItemSpec(price, quantity, spec.metadata, param=change.param)
    specs = list(resulting.values()) + added
    if not specs:
        raise errors.invalid_request(
            "A subscription must have at least one active plan. To cancel a subscription, please use the "
            "cancel API endpoint on /v1/subscriptions.",
            param="items",
        )
    currency, interval, interval_count = check_items(state, specs)
    if currency != subscription.currency:
        raise errors.invalid_request(
            "The currency of a subscription cannot change; create a new subscription instead.", param="items"
        )
    switching = (interval, interval_count) != (subscription.interval, subscription.interval_count)

    at = now if proration_date is None else proration_date
    prorate = subscription.status in BILLING_STATUSES and proration_behavior != "none"
    if prorate and not subscription.current_period_start <= at < subscription.current_period_end:
        raise errors.invalid_request("proration_date must be within the current billing period.", param="proration_date")
    billed_now = prorate and (proration_behavior == "always_invoice" or switching)
    if billed_now and payment_behavior == "error_if_incomplete":
        card = state.default_payment_method(subscription, state.customers[subscription.customer])
        if card is None or card.declines:
            raise errors.card_declined()

    proration_requests: list[tuple[SubscriptionItemRecord, PriceRecord, int, bool]] = []
    changed: list[SubscriptionItemRecord] = []
    for change in changes:
        if change.item is None:
            continue
        item = change.item
        old_price, old_quantity = state.prices[item.price], item.quantity
        credited_price, credited_quantity = credit_basis(state, subscription, item)
        if change.delete:
            if old_quantity is not None:
                proration_requests.append((item, credited_price, credited_quantity, True))
            item.deleted = True
            subscription.items.remove(item.id)
            continue
        spec = resulting[item.id]
        if spec.price.id != old_price.id or spec.quantity != old_quantity:
            if old_quantity is not None:
                proration_requests.append((item, credited_price, credited_quantity, True))
            if spec.quantity is not None:
                proration_requests.append((item, spec.price, spec.quantity, False))
            changed.append(item)
        item.price, item.quantity = spec.price.id, spec.quantity
        if change.metadata is not None:
            item.metadata = merge_metadata(item.metadata, change.metadata)
    for spec in added:
        item = _new_item(state, subscription, spec, now)
        # Nothing is debited for a new item until a proration charges it.
        item.billed_price, item.billed_quantity = item.price, 0
        changed.append(item)
        if item.quantity is not None:
            proration_requests.append((item, spec.price, item.quantity, False))
    state.dirty = True

    if switching:
        subscription.interval, subscription.interval_count = interval, interval_count
        if subscription.status not in BILLING_STATUSES:
            return ChangeOutcome()
        if proration_behavior != "none":
            for item, price, quantity, credit in proration_requests:
                if credit:
                    invoicing.proration_item(state, subscription, item, price, quantity, at, credit=True)
        return ChangeOutcome(reset_cycle=True)
    if not prorate:
        return ChangeOutcome()
    for item, price, quantity, credit in proration_requests:
        invoicing.proration_item(state, subscription, item, price, quantity, at, credit=credit)
    for item in changed:
        _mark_billed(item)
    return ChangeOutcome(invoice_at=at if proration_behavior == "always_invoice" else None)


@dataclass
class ChangeOutcome:
    """What an item change leaves to bill: prorations to invoice now (`invoice_at`), or a
    new billing cycle starting now (`reset_cycle`, after an interval change)."""

    invoice_at: int | None = None
    reset_cycle: bool = False


def reset_billing_cycle(
    state: SandboxState, subscription: SubscriptionRecord, now: int, *, credit_unused: bool, proration_behavior: str
) -> InvoiceRecord:
    """Start a new billing period now (`billing_cycle_anchor=now`, or an interval change)
    and return its draft invoice: usage so far, the new period in advance, prorations.

    `credit_unused` credits the unused time of the current items first (unless
    `proration_behavior=none`); an interval change has credited the old items already.
    """
    if credit_unused and proration_behavior != "none":
        _credit_after(state, subscription, now)
    usage = _usage_lines(state, subscription, subscription.current_period_start, now)
    subscription.billing_cycle_anchor = now
    lines = _start_period(state, subscription, now, add_intervals(now, subscription.interval, subscription.interval_count, 1))
    return invoicing.create_invoice(
        state,
        customer=state.customers[subscription.customer],
        subscription=subscription,
        billing_reason="subscription_update",
        period_start=now,
        period_end=now,
        lines=usage + lines,
        now=now,
    )


def bill_update_invoice(state: SandboxState, subscription: SubscriptionRecord, invoice: InvoiceRecord, now: int, payment_behavior: str) -> None:
    """Finalize an invoice made by a subscription change and collect it per
    `payment_behavior`: charge it, or (`default_incomplete`) leave it open for the
    customer to pay, the subscription `past_due` meanwhile, as Stripe documents."""
    invoicing.finalize(state, invoice, now)
    if payment_behavior == "default_incomplete" and invoice.amount_due > 0:
        before = objects.subscription(state, subscription)
        if subscription.status == "active":
            subscription.status = "past_due"
            state.dirty = True
            events.emit_updated(state, "customer.subscription.updated", before, objects.subscription(state, subscription), created=now)
        return
    charge(state, invoice, now)


def proration_invoice(state: SandboxState, subscription: SubscriptionRecord, at: int, now: int) -> InvoiceRecord | None:
    """A draft invoice of the subscription's pending prorations (`always_invoice`)."""
    if not invoicing.pending_items(state, subscription):
        return None
    return invoicing.create_invoice(
        state,
        customer=state.customers[subscription.customer],
        subscription=subscription,
        billing_reason="subscription_update",
        period_start=at,
        period_end=at,
        lines=[],
        now=now,
    )


# -- pending updates (`payment_behavior=pending_if_incomplete`) -------------------------

PENDING_UPDATE_WINDOW = 23 * 3_600
# What a pending update changes on the subscription itself.
PENDING_UPDATE_FIELDS = ("items", "interval", "interval_count", "current_period_start", "current_period_end", "billing_cycle_anchor")


@dataclass
class Snapshot:
    """A subscription and its items as they were before a change, to put back."""

    subscription: SubscriptionRecord
    items: dict[str, SubscriptionItemRecord]


def snapshot(state: SandboxState, subscription: SubscriptionRecord) -> Snapshot:
    return Snapshot(copy.deepcopy(subscription), {i.id: copy.deepcopy(i) for i in state.items_of(subscription)})


def pay_or_hold(state: SandboxState, subscription: SubscriptionRecord, invoice: InvoiceRecord, now: int, before: Snapshot) -> bool:
    """`pending_if_incomplete`: charge the change's invoice; when the charge fails, put
    the subscription back as it was and keep the change as `pending_update` until the
    invoice is paid (or the update expires after 23 hours), as Stripe does
    (https://docs.stripe.com/billing/subscriptions/pending-updates). Returns whether
    the change was applied."""
    invoicing.finalize(state, invoice, now)
    outcome = invoicing.attempt_payment(state, invoice, now, schedule_retry=False)
    if outcome.paid:
        return True
    after_items = [dump_record(item) for item in state.items_of(subscription)]
    after = dump_record(subscription)
    for item_id in subscription.items:
        if item_id not in before.items:
            state.subscription_items.pop(item_id, None)
    state.subscription_items.update(before.items)
    restored = before.subscription
    restored.latest_invoice = invoice.id
    restored.pending_update = {
        "expires_at": now + PENDING_UPDATE_WINDOW,
        "invoice": invoice.id,
        "subscription": after,
        "items": after_items,
    }
    state.subscriptions[subscription.id] = restored
    state.dirty = True
    return False


def apply_pending_update(state: SandboxState, subscription: SubscriptionRecord, now: int) -> None:
    """The invoice of a pending update was paid: the change takes effect."""
    pending = subscription.pending_update or {}
    before = objects.subscription(state, subscription)
    # Only what a pending update may change is taken over; anything changed since (such
    # as metadata) stays.
    changed = load_record(SubscriptionRecord, pending["subscription"])
    for name in PENDING_UPDATE_FIELDS:
        setattr(subscription, name, getattr(changed, name))
    subscription.pending_update = None
    for raw in pending["items"]:
        item = load_record(SubscriptionItemRecord, raw)
        state.subscription_items[item.id] = item
    for item_id in [i["id"] for i in before["items"]["data"]]:
        if item_id not in subscription.items:
            state.subscription_items[item_id].deleted = True
    state.dirty = True
    after = objects.subscription(state, subscription)
    events.emit(state, "customer.subscription.pending_update_applied", after, created=now)
    events.emit_updated(state, "customer.subscription.updated", before, after, created=now)


def expire_pending_update(state: SandboxState, subscription: SubscriptionRecord, now: int) -> None:
    """A pending update whose invoice was not paid in time is dropped; its invoice voided."""
    pending = subscription.pending_update or {}
    before = objects.subscription(state, subscription)
    subscription.pending_update = None
    invoice = state.invoices.get(pending.get("invoice") or "")
    if invoice is not None and invoice.status == "open":
        invoicing.void(state, invoice, now)
    state.dirty = True
    after = objects.subscription(state, subscription)
    events.emit(state, "customer.subscription.pending_update_expired", after, created=now)
    events.emit_updated(state, "customer.subscription.updated", before, after, created=now)


def invoice_prorations_now(state: SandboxState, subscription: SubscriptionRecord, at: int, now: int) -> None:
    """`proration_behavior=always_invoice`: bill pending prorations now and charge them."""
    if not invoicing.pending_items(state, subscription):
        return
    invoice = invoicing.create_invoice(
        state,
        customer=state.customers[subscription.customer],
        subscription=subscription,
        billing_reason="subscription_update",
        period_start=at,
        period_end=at,
        lines=[],
        now=now,
    )
    invoicing.finalize(state, invoice, now)
    charge(state, invoice, now)


def _start_period(state: SandboxState, subscription: SubscriptionRecord, start: int, end: int) -> list[Any]:
    """Move the subscription into [start, end) and return the licensed lines billed in advance for it."""
    subscription.current_period_start = start
    subscription.current_period_end = end
    for item in state.items_of(subscription):
        _mark_billed(item)
    return [
        invoicing.licensed_line(state, subscription, item, start, end)
        for item in state.items_of(subscription)
        if item.quantity is not None
    ]

"""Subscriptions and Subscription Items: create, retrieve, update (price, quantity,
`proration_behavior`, `cancel_at_period_end`, trial end), cancel now, list."""

from __future__ import annotations

from typing import Any

from nobill.sandbox import errors, events, lifecycle, objects
from nobill.sandbox.billing_periods import DAY, add_intervals
from nobill.sandbox.due_work import settle
from nobill.sandbox.listing import newest_first, paginate
from nobill.sandbox.params import (
    CREATED_FILTER,
    UNSET,
    Array,
    Bool,
    Enum,
    Hash,
    Int,
    IntOr,
    IntOrRange,
    Metadata,
    Str,
    endpoint,
    in_range,
    list_endpoint,
    merge_metadata,
    or_none,
)
from nobill.sandbox.records import SubscriptionItemRecord, SubscriptionRecord, load_record
from nobill.sandbox.routing import Call, route
from nobill.sandbox.state import SandboxState

PRORATION_BEHAVIORS = ("always_invoice", "create_prorations", "none")
PAYMENT_BEHAVIORS = ("allow_incomplete", "default_incomplete", "error_if_incomplete", "pending_if_incomplete")
ENDED = ("canceled", "incomplete_expired")
MAX_TRIAL = 730 * DAY

ITEM_NOT_SIMULATED = ("billing_thresholds", "current_trial", "discounts", "plan", "price_data", "tax_rates")
TRIAL_SETTINGS = Hash(
    {
        "end_behavior": Hash(
            {"missing_payment_method": Enum("cancel", "create_invoice", "pause")},
            not_simulated=("billing_cycle_anchor",),
        )
    },
    required=("end_behavior",),
)
CANCELLATION_DETAILS = Hash(
    {
        "comment": Str(max_length=5000, emptyable=True),
        "feedback": Enum(
            "customer_service",
            "low_quality",
            "missing_features",
            "other",
            "switched_service",
            "too_complex",
            "too_expensive",
            "unused",
            emptyable=True,
        ),
    },
    not_simulated=("feedback_option",),
)
COMMON_NOT_SIMULATED = (
    "add_invoice_items",
    "application_fee_percent",
    "automatic_tax",
    "billing_schedules",
    "billing_thresholds",
    "days_until_due",
    "default_source",
    "default_tax_rates",
    "discounts",
    "invoice_settings",
    "on_behalf_of",
    "payment_settings",
    "pending_invoice_item_interval",
    "transfer_data",
)

SUBSCRIPTION_CREATE = endpoint(
    {
        "billing_cycle_anchor": Int(minimum=0),
        "billing_mode": lifecycle.BILLING_MODE,
        "cancel_at_period_end": Bool(),
        "collection_method": Enum("charge_automatically", "send_invoice"),
        "currency": Str(),
        "customer": Str(),
        "default_payment_method": Str(),
        "description": Str(max_length=500),
        "items": Array(
            Hash({"metadata": Metadata(), "price": Str(), "quantity": Int(minimum=0)}, not_simulated=ITEM_NOT_SIMULATED),
            max_items=20,
        ),
        "metadata": Metadata(),
        "off_session": Bool(),
        "payment_behavior": Enum(*PAYMENT_BEHAVIORS),
        "proration_behavior": Enum(*PRORATION_BEHAVIORS),
        "trial_end": IntOr("now"),
        "trial_from_plan": Bool(),
        "trial_period_days": Int(minimum=0, maximum=730),
        "trial_settings": TRIAL_SETTINGS,
    },
    required=("items",),
    not_simulated=COMMON_NOT_SIMULATED + ("backdate_start_date", "billing_cycle_anchor_config", "cancel_at", "customer_account"),
)
SUBSCRIPTION_UPDATE = endpoint(
    {
        "billing_cycle_anchor": Enum("now", "unchanged"),
        "cancel_at": IntOr("max_billed_until", "max_period_end", "min_period_end", emptyable=True),
        "cancel_at_period_end": Bool(),
        "cancellation_details": CANCELLATION_DETAILS,
        "collection_method": Enum("charge_automatically", "send_invoice"),
        "default_payment_method": Str(),
        "description": Str(max_length=500, emptyable=True),
        "items": Array(
            Hash(
                {
                    "clear_usage": Bool(),
                    "deleted": Bool(),
                    "id": Str(),
                    "metadata": Metadata(),
                    "price": Str(),
                    "quantity": Int(minimum=0),
                },
                not_simulated=ITEM_NOT_SIMULATED,
            ),
            max_items=20,
        ),
        "metadata": Metadata(),
        "off_session": Bool(),
        "payment_behavior": Enum(*PAYMENT_BEHAVIORS),
        "proration_behavior": Enum(*PRORATION_BEHAVIORS),
        "proration_date": Int(),
        "trial_end": IntOr("now"),
        "trial_settings": TRIAL_SETTINGS,
    },
    not_simulated=COMMON_NOT_SIMULATED + ("pause_collection", "trial_from_plan"),
)


def _check_payment_behavior(params: dict[str, Any], *, creating: bool = False) -> str:
    behavior = params.get("payment_behavior", "allow_incomplete")
    if creating and behavior == "pending_if_incomplete":
        # Stripe: "pending_if_incomplete is only used with updates and cannot be passed
        # when creating a subscription."
        raise errors.invalid_request(
            "`pending_if_incomplete` is only used with updates and cannot be passed when creating a subscription.",
            param="payment_behavior",
        )
    if params.get("collection_method", "charge_automatically") != "charge_automatically":
        raise errors.not_simulated("collection_method")
    return behavior


def _customer_card(state: SandboxState, customer_id: str, card_id: str, param: str) -> str:
    card = state.payment_methods.get(card_id)
    if card is None or card.customer != customer_id:
        raise errors.invalid_request(
            f"The customer does not have a payment method with the ID {card_id}. "
            "The payment method must be attached to the customer.",
            param=param,
            code="resource_missing",
        )
    return card.id


# -- subscriptions --------------------------------------------------------------------


@route("POST", "/v1/subscriptions", SUBSCRIPTION_CREATE)
def create_subscription(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params
    payment_behavior = _check_payment_behavior(params, creating=True)
    if "customer" not in params:
        raise errors.missing_parameter("customer")
    customer = state.get_customer(params["customer"], param="customer")
    state.check_clock_ready(customer.test_clock)
    now = state.now(customer.test_clock)
    specs = []
    for index, raw in enumerate(params["items"]):
        if "price" not in raw:
            raise errors.missing_parameter(f"items[{index}][price]")
        price = state.get_price(raw["price"], param=f"items[{index}][price]")
        specs.append(lifecycle.ItemSpec(price, raw.get("quantity"), merge_metadata({}, raw.get("metadata") or {}), param=f"items[{index}]"))
    if "currency" in params and specs and params["currency"].lower() != specs[0].price.currency:
        raise errors.invalid_request("The currency does not match the currency of the items' prices.", param="currency")

    trial_end: int | None = None
    chosen = [name for name in ("trial_end", "trial_period_days", "trial_from_plan") if params.get(name) not in (None, False)]
    if len(chosen) > 1:
        raise errors.invalid_request(f"You may only specify one of these parameters: {', '.join(chosen)}.", param=chosen[1])
    if "trial_end" in params and params["trial_end"] != "now":
        trial_end = params["trial_end"]
        if trial_end <= now:
            raise errors.invalid_request(
                "Invalid timestamp: must be an integer Unix timestamp in the future.", param="trial_end"
            )
    elif params.get("trial_period_days"):
        trial_end = now + params["trial_period_days"] * DAY
    elif params.get("trial_from_plan"):
        days = max((spec.price.trial_period_days or 0) for spec in specs) if specs else 0
        trial_end = now + days * DAY if days else None
    if trial_end is not None and trial_end > now + MAX_TRIAL:
        raise errors.invalid_request("The trial cannot be longer than 730 days.", param="trial_end")

    anchor = params.get("billing_cycle_anchor")
    if anchor is not None and specs:
        if trial_end is not None:
            raise errors.invalid_request(
                "The sandbox does not simulate a `billing_cycle_anchor` together with a trial; the first period ends at the trial end.",
                param="billing_cycle_anchor",
            )
        first = specs[0].price
        latest = add_intervals(now, first.interval or "month", first.interval_count or 1, 1)
        if not now < anchor <= latest:
            raise errors.invalid_request(
                f"billing_cycle_anchor must be in the future and within the first billing period (at most {latest}).",
                param="billing_cycle_anchor",
            )

    default_card = None
    if "default_payment_method" in params:
        default_card = _customer_card(state, customer.id, params["default_payment_method"], "default_payment_method")
    missing = (params.get("trial_settings") or {}).get("end_behavior", {}).get("missing_payment_method", "create_invoice")
    billing_mode = lifecycle.billing_mode_of(params.get("billing_mode"))
    subscription = lifecycle.start_subscription(
        state,
        customer,
        specs,
        now=now,
        trial_end=trial_end,
        missing_payment_method=missing,
        default_payment_method=default_card,
        metadata=merge_metadata({}, params["metadata"]) if params.get("metadata") else {},
        description=params.get("description"),
        payment_behavior=payment_behavior,
        cancel_at_period_end=params.get("cancel_at_period_end", False),
        billing_mode=billing_mode,
        billing_cycle_anchor=anchor,
        proration_behavior=params.get("proration_behavior", "create_prorations"),
    )
    settle(state, customer.test_clock, state.now(customer.test_clock))
    return objects.subscription(state, subscription)


@route("GET", "/v1/subscriptions/{subscription_exposed_id}", endpoint({}))
def retrieve_subscription(call: Call) -> dict[str, Any]:
    subscription = call.state.get_subscription(call.path_args["subscription_exposed_id"], status=404, param="id")
    return objects.subscription(call.state, subscription)


@route("POST", "/v1/subscriptions/{subscription_exposed_id}", SUBSCRIPTION_UPDATE)
def update_subscription(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params
    subscription = state.get_subscription(call.path_args["subscription_exposed_id"], status=404, param="id")
    payment_behavior = _check_payment_behavior(params)
    if subscription.status in ENDED:
        raise errors.invalid_request(f"A subscription with status `{subscription.status}` cannot be updated.")
    state.check_clock_ready(subscription.test_clock)
    now = state.now(subscription.test_clock)
    before = objects.subscription(state, subscription)

    # Validate everything that can fail before changing anything.
    changes = _item_changes(state, subscription, params.get("items") or [])
    card = None
    if "default_payment_method" in params:
        card = _customer_card(state, subscription.customer, params["default_payment_method"], "default_payment_method")
    trial_end = params.get("trial_end")
    if trial_end is not None:
        if subscription.status != "trialing":
            raise errors.invalid_request(
                "The sandbox simulates changing `trial_end` only while the subscription is trialing.", param="trial_end"
            )
        if trial_end != "now" and not now < trial_end <= now + MAX_TRIAL:
            raise errors.invalid_request("Invalid timestamp: must be an integer Unix timestamp in the future.", param="trial_end")
    cancel_at = params.get("cancel_at")
    if isinstance(cancel_at, str):
        # Every item of a sandbox subscription shares one period, so the earliest and
        # latest period ends (and what is billed until) are all the current period's end.
        cancel_at = subscription.current_period_end
    if isinstance(cancel_at, int) and cancel_at < now:
        raise errors.invalid_request("cancel_at must be in the future.", param="cancel_at")
    old_cancel_at = subscription.cancel_at
    reset_now = params.get("billing_cycle_anchor") == "now"
    if reset_now and subscription.status not in lifecycle.BILLING_STATUSES:
        raise errors.invalid_request(
            f"The sandbox resets the billing cycle anchor of active subscriptions only (this one is `{subscription.status}`).",
            param="billing_cycle_anchor",
        )
    if payment_behavior == "pending_if_incomplete":
        _check_pending_update_params(params)
    if subscription.pending_update is not None and (changes or reset_now):
        raise errors.invalid_request(
            "This subscription has a pending update; pay or void its invoice (or wait for it to expire) before changing its items.",
            param="items",
        )
    before_change = lifecycle.snapshot(state, subscription)

    outcome = lifecycle.change_items(
        state,
        subscription,
        changes,
        now=now,
        proration_behavior=params.get("proration_behavior", "create_prorations"),
        proration_date=params.get("proration_date"),
        payment_behavior=payment_behavior,
    ) if changes else lifecycle.ChangeOutcome()
    invoice_at = outcome.invoice_at
    if card is not None:
        subscription.default_payment_method = card
    if "metadata" in params:
        subscription.metadata = merge_metadata(subscription.metadata, params["metadata"])
    if "description" in params:
        subscription.description = or_none(params["description"])
    if "trial_settings" in params:
        subscription.missing_payment_method = params["trial_settings"]["end_behavior"].get("missing_payment_method", "create_invoice")
    if "cancellation_details" in params:
        for name, value in params["cancellation_details"].items():
            subscription.cancellation_details[name] = or_none(value)
    if "cancel_at_period_end" in params:
        if params["cancel_at_period_end"]:
            subscription.cancel_at_period_end = True
            subscription.cancel_at = subscription.current_period_end
            subscription.canceled_at = now
        else:
            subscription.cancel_at_period_end = False
            subscription.cancel_at = None
            subscription.canceled_at = None
    if "cancel_at" in params:
        subscription.cancel_at = None if cancel_at is UNSET else cancel_at
        subscription.cancel_at_period_end = False
        subscription.canceled_at = None if cancel_at is UNSET else now
    if "cancel_at" in params or "cancel_at_period_end" in params:
        # A pending cancellation reads `cancellation_requested` until it happens or is
        # withdrawn (https://docs.stripe.com/api/subscriptions/object#subscription_object-cancellation_details-reason).
        if subscription.cancel_at is not None:
            subscription.cancellation_details["reason"] = "cancellation_requested"
        else:
            subscription.cancellation_details = {"comment": None, "feedback": None, "reason": None}
        cancel_invoice_at = lifecycle.prorate_cancel_at_change(
            state, subscription, old_cancel_at, now=now, proration_behavior=params.get("proration_behavior", "create_prorations")
        )
        invoice_at = invoice_at if invoice_at is not None else cancel_invoice_at
    if trial_end is not None:
        subscription.trial_end = now if trial_end == "now" else trial_end
        subscription.current_period_end = subscription.trial_end
        subscription.billing_cycle_anchor = subscription.trial_end
        if trial_end != "now":
            subscription.trial_will_end_sent = False
    state.dirty = True
    finish_change(
        state,
        subscription,
        before,
        before_change,
        now=now,
        outcome=lifecycle.ChangeOutcome(invoice_at, outcome.reset_cycle or reset_now),
        credit_unused=reset_now and not outcome.reset_cycle,
        proration_behavior=params.get("proration_behavior", "create_prorations"),
        payment_behavior=payment_behavior,
    )
    settle(state, subscription.test_clock, state.now(subscription.test_clock))
    return objects.subscription(state, state.subscriptions[subscription.id])


# Parameters Stripe allows with `payment_behavior=pending_if_incomplete`
# (https://docs.stripe.com/billing/subscriptions/pending-updates-reference).
PENDING_UPDATE_PARAMS = frozenset(
    ("billing_cycle_anchor", "expand", "items", "off_session", "payment_behavior", "proration_behavior", "proration_date", "trial_end")
)


def _check_pending_update_params(params: dict[str, Any]) -> None:
    for name in params:
        if name not in PENDING_UPDATE_PARAMS:
            raise errors.invalid_request(
                f"`{name}` cannot be used with `payment_behavior=pending_if_incomplete`; it supports only "
                + ", ".join(sorted(PENDING_UPDATE_PARAMS - {"expand", "payment_behavior"}))
                + ".",
                param=name,
            )
    if "trial_end" in params:
        raise errors.not_simulated("trial_end")


def finish_change(
    state: SandboxState,
    subscription: SubscriptionRecord,
    before: dict[str, Any],
    before_change: lifecycle.Snapshot,
    *,
    now: int,
    outcome: lifecycle.ChangeOutcome,
    credit_unused: bool,
    proration_behavior: str,
    payment_behavior: str,
) -> None:
    """Announce a subscription change and bill what it leaves to bill now, per
    `payment_behavior` (a pending update keeps the subscription as it was when the
    payment fails)."""
    invoice = None
    if outcome.reset_cycle:
        invoice = lifecycle.reset_billing_cycle(
            state, subscription, now, credit_unused=credit_unused, proration_behavior=proration_behavior
        )
    if payment_behavior == "pending_if_incomplete":
        if invoice is None and outcome.invoice_at is not None:
            invoice = lifecycle.proration_invoice(state, subscription, outcome.invoice_at, now)
        if invoice is not None:
            lifecycle.pay_or_hold(state, subscription, invoice, now, before_change)
        current = state.subscriptions[subscription.id]
        events.emit_updated(state, "customer.subscription.updated", before, objects.subscription(state, current), created=now)
        return
    events.emit_updated(state, "customer.subscription.updated", before, objects.subscription(state, subscription), created=now)
    if invoice is None and outcome.invoice_at is not None:
        invoice = lifecycle.proration_invoice(state, subscription, outcome.invoice_at, now)
    if invoice is not None:
        lifecycle.bill_update_invoice(state, subscription, invoice, now, payment_behavior)


@route(
    "POST",
    "/v1/subscriptions/{subscription}/resume",
    endpoint(
        {"billing_cycle_anchor": Enum("now", "unchanged"), "proration_behavior": Enum(*PRORATION_BEHAVIORS), "proration_date": Int()},
        not_simulated=("payment_behavior",),
    ),
)
def resume_subscription(call: Call) -> dict[str, Any]:
    """Resume a paused subscription (e.g. paused at trial end for want of a card)."""
    state, params = call.state, call.params
    subscription = state.get_subscription(call.path_args["subscription"], status=404, param="subscription")
    if subscription.status != "paused":
        raise errors.invalid_request(
            f"Only a paused subscription can be resumed; this one is `{subscription.status}`.", param="subscription"
        )
    if params.get("billing_cycle_anchor", "now") != "now":
        # A subscription paused at trial end has no billed period to keep its anchor for.
        raise errors.invalid_request(
            "The sandbox resumes with `billing_cycle_anchor=now` (a new period starting now) only.", param="billing_cycle_anchor"
        )
    state.check_clock_ready(subscription.test_clock)
    lifecycle.resume(state, subscription, state.now(subscription.test_clock))
    settle(state, subscription.test_clock, state.now(subscription.test_clock))
    return objects.subscription(state, subscription)


def _item_changes(state: SandboxState, subscription: SubscriptionRecord, raw_items: list[dict[str, Any]]) -> list[lifecycle.ItemChange]:
    changes = []
    for index, raw in enumerate(raw_items):
        param = f"items[{index}]"
        item = None
        if "id" in raw:
            item = state.subscription_items.get(raw["id"])
            if item is None or item.deleted or item.subscription != subscription.id:
                raise errors.invalid_request(
                    f"Subscription item {raw['id']} does not belong to subscription {subscription.id}.", param=f"{param}[id]"
                )
        price = state.get_price(raw["price"], param=f"{param}[price]") if "price" in raw else None
        if raw.get("deleted") and item is None:
            raise errors.missing_parameter(f"{param}[id]")
        changes.append(
            lifecycle.ItemChange(
                item=item,
                price=price,
                quantity=raw.get("quantity"),
                delete=bool(raw.get("deleted")),
                metadata=raw.get("metadata"),
                param=param,
            )
        )
    return changes


@route(
    "DELETE",
    "/v1/subscriptions/{subscription_exposed_id}",
    endpoint({"cancellation_details": CANCELLATION_DETAILS, "invoice_now": Bool(), "prorate": Bool()}),
)
def cancel_subscription(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params
    subscription = state.get_subscription(call.path_args["subscription_exposed_id"], status=404, param="id")
    if subscription.status in ENDED:
        raise errors.invalid_request(
            f"This subscription has already been canceled (status `{subscription.status}`).", code="resource_missing", status=404
        )
    state.check_clock_ready(subscription.test_clock)
    details = params.get("cancellation_details") or {}
    lifecycle.cancel(
        state,
        subscription,
        state.now(subscription.test_clock),
        reason="cancellation_requested",
        invoice_now=params.get("invoice_now", False),
        prorate=params.get("prorate", False),
        comment=or_none(details.get("comment")),
        feedback=or_none(details.get("feedback")),
    )
    return objects.subscription(state, subscription)


@route(
    "GET",
    "/v1/subscriptions",
    list_endpoint(
        {
            "collection_method": Enum("charge_automatically", "send_invoice"),
            "created": CREATED_FILTER,
            "current_period_end": IntOrRange(),
            "current_period_start": IntOrRange(),
            "customer": Str(),
            "price": Str(),
            "status": Enum(
                "active", "all", "canceled", "ended", "incomplete", "incomplete_expired", "past_due", "paused", "trialing", "unpaid"
            ),
            "test_clock": Str(),
        },
        not_simulated=("automatic_tax", "customer_account", "plan"),
    ),
)
def list_subscriptions(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params
    status = params.get("status")

    def status_matches(subscription: SubscriptionRecord) -> bool:
        # By default Stripe lists every subscription that has not been canceled.
        if status is None:
            return subscription.status not in ENDED
        if status == "all":
            return True
        if status == "ended":
            return subscription.status in ENDED
        return subscription.status == status

    def keep(subscription: SubscriptionRecord) -> bool:
        return (
            status_matches(subscription)
            and ("customer" not in params or subscription.customer == params["customer"])
            and ("test_clock" not in params or subscription.test_clock == params["test_clock"])
            and ("price" not in params or any(item.price == params["price"] for item in state.items_of(subscription)))
            and params.get("collection_method", "charge_automatically") == "charge_automatically"
            and in_range(subscription.created, params.get("created"))
            and in_range(subscription.current_period_end, params.get("current_period_end"))
            and in_range(subscription.current_period_start, params.get("current_period_start"))
        )

    return paginate(
        newest_first(state.subscriptions, keep),
        params,
        url="/v1/subscriptions",
        render=lambda subscription: objects.subscription(state, subscription),
        collection=state.subscriptions,
        resource="subscription",
    )


# -- subscription items ---------------------------------------------------------------

ITEM_CHANGE_FIELDS = {
    "metadata": Metadata(),
    "payment_behavior": Enum(*PAYMENT_BEHAVIORS),
    "price": Str(),
    "proration_behavior": Enum(*PRORATION_BEHAVIORS),
    "proration_date": Int(),
    "quantity": Int(minimum=0),
}
ITEM_CREATE = endpoint({**ITEM_CHANGE_FIELDS, "subscription": Str()}, required=("subscription",), not_simulated=ITEM_NOT_SIMULATED)
ITEM_UPDATE = endpoint({**ITEM_CHANGE_FIELDS, "off_session": Bool()}, not_simulated=ITEM_NOT_SIMULATED)
ITEM_DELETE = endpoint(
    {
        "clear_usage": Bool(),
        "payment_behavior": Enum(*PAYMENT_BEHAVIORS),
        "proration_behavior": Enum(*PRORATION_BEHAVIORS),
        "proration_date": Int(),
    },
    expand=False,
)


def _apply_item_change(call: Call, subscription: SubscriptionRecord, change: lifecycle.ItemChange) -> None:
    state, params = call.state, call.params
    payment_behavior = _check_payment_behavior(params)
    if subscription.status in ENDED:
        raise errors.invalid_request(f"A subscription with status `{subscription.status}` cannot be updated.")
    state.check_clock_ready(subscription.test_clock)
    if subscription.pending_update is not None:
        raise errors.invalid_request(
            "This subscription has a pending update; pay or void its invoice (or wait for it to expire) before changing its items."
        )
    now = state.now(subscription.test_clock)
    before = objects.subscription(state, subscription)
    before_change = lifecycle.snapshot(state, subscription)
    proration_behavior = params.get("proration_behavior", "create_prorations")
    outcome = lifecycle.change_items(
        state,
        subscription,
        [change],
        now=now,
        proration_behavior=proration_behavior,
        proration_date=params.get("proration_date"),
        payment_behavior=payment_behavior,
    )
    finish_change(
        state,
        subscription,
        before,
        before_change,
        now=now,
        outcome=outcome,
        credit_unused=False,
        proration_behavior=proration_behavior,
        payment_behavior=payment_behavior,
    )


@route("POST", "/v1/subscription_items", ITEM_CREATE)
def create_subscription_item(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params
    subscription = state.get_subscription(params["subscription"], param="subscription")
    if "price" not in params:
        raise errors.missing_parameter("price")
    price = state.get_price(params["price"], param="price")
    existing = set(subscription.items)
    _apply_item_change(
        call,
        subscription,
        lifecycle.ItemChange(item=None, price=price, quantity=params.get("quantity"), metadata=params.get("metadata"), param="items"),
    )
    created = next(item_id for item_id in subscription.items if item_id not in existing)
    if created not in state.subscription_items:
        # Held as a pending update (`pending_if_incomplete` whose payment failed).
        pending = state.subscriptions[subscription.id].pending_update or {}
        raw = next(raw for raw in pending["items"] if raw["id"] == created)
        return objects.subscription_item(state, load_record(SubscriptionItemRecord, raw))
    return objects.subscription_item(state, state.subscription_items[created])


@route("GET", "/v1/subscription_items/{item}", endpoint({}))
def retrieve_subscription_item(call: Call) -> dict[str, Any]:
    item = call.state.get_subscription_item(call.path_args["item"], status=404, param="id")
    return objects.subscription_item(call.state, item)


@route("POST", "/v1/subscription_items/{item}", ITEM_UPDATE)
def update_subscription_item(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params
    item = state.get_subscription_item(call.path_args["item"], status=404, param="id")
    subscription = state.subscriptions[item.subscription]
    price = state.get_price(params["price"], param="price") if "price" in params else None
    _apply_item_change(
        call,
        subscription,
        lifecycle.ItemChange(item=item, price=price, quantity=params.get("quantity"), metadata=params.get("metadata"), param="items[0]"),
    )
    return objects.subscription_item(state, item)


@route("DELETE", "/v1/subscription_items/{item}", ITEM_DELETE)
def delete_subscription_item(call: Call) -> dict[str, Any]:
    state = call.state
    item = state.get_subscription_item(call.path_args["item"], status=404, param="id")
    subscription = state.subscriptions[item.subscription]
    _apply_item_change(call, subscription, lifecycle.ItemChange(item=item, delete=True, param="items[0]"))
    return objects.deleted(item.id, "subscription_item")


@route("GET", "/v1/subscription_items", list_endpoint({"subscription": Str()}, required=("subscription",)))
def list_subscription_items(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params
    subscription = state.get_subscription(params["subscription"], param="subscription")
    # Stripe lists a subscription's items oldest first.
    rows: list[SubscriptionItemRecord] = state.items_of(subscription)
    return paginate(
        rows,
        params,
        url=f"/v1/subscription_items?subscription={subscription.id}",
        render=lambda item: objects.subscription_item(state, item),
        collection=state.subscription_items,
        resource="subscription_item",
    )

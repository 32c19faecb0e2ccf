"""Checkout Sessions in `subscription` mode, and their completion as a customer would do it.

A session's `url` points at the sandbox's own hosted page (`/checkout/{id}`); completing
it there, or through `POST /_sandbox/checkout/sessions/{id}/complete`, creates the
customer (if needed), the card, the subscription with its first invoice, and sends
`checkout.session.completed`.
"""

from __future__ import annotations

from typing import Any

from nobill.sandbox import errors, events, ids, lifecycle, objects
from nobill.sandbox.billing_periods import DAY
from nobill.sandbox.listing import newest_first, paginate
from nobill.sandbox.params import (
    CREATED_FILTER,
    Array,
    Bool,
    Enum,
    Hash,
    Int,
    Metadata,
    Str,
    endpoint,
    in_range,
    list_endpoint,
    merge_metadata,
)
from nobill.sandbox.payment_methods import add_card
from nobill.sandbox.records import CheckoutLineRecord, CheckoutSessionRecord, CustomerRecord
from nobill.sandbox.routing import Call, route
from nobill.sandbox.state import SandboxState

MIN_TRIAL_END_AHEAD = 2 * DAY
DEFAULT_LIFETIME = DAY
COMPLETION_OUTCOMES = ("succeeded", "decline_later", "card_declined", "no_payment_method")

SESSION_CREATE = endpoint(
    {
        "allow_promotion_codes": Bool(),
        "billing_address_collection": Enum("auto", "required"),
        "cancel_url": Str(max_length=5000),
        "client_reference_id": Str(max_length=200),
        "customer": Str(),
        "customer_email": Str(max_length=800),
        "expires_at": Int(),
        "line_items": Array(
            Hash(
                {"metadata": Metadata(), "price": Str(), "quantity": Int(minimum=0)},
                not_simulated=("adjustable_quantity", "price_data", "tax_rates"),
            ),
            max_items=20,
        ),
        "locale": Str(),
        "metadata": Metadata(),
        "mode": Enum("payment", "setup", "subscription"),
        "payment_method_collection": Enum("always", "if_required"),
        "subscription_data": Hash(
            {
                "billing_mode": lifecycle.BILLING_MODE,
                "description": Str(max_length=500),
                "metadata": Metadata(),
                "trial_end": Int(),
                "trial_period_days": Int(minimum=1, maximum=730),
                "trial_settings": Hash(
                    {
                        "end_behavior": Hash(
                            {"missing_payment_method": Enum("cancel", "create_invoice", "pause")},
                            required=("missing_payment_method",),
                        )
                    },
                    required=("end_behavior",),
                ),
            },
            not_simulated=(
                "application_fee_percent",
                "billing_cycle_anchor",
                "billing_cycle_anchor_config",
                "default_tax_rates",
                "invoice_settings",
                "on_behalf_of",
                "pending_invoice_item_interval",
                "proration_behavior",
                "transfer_data",
            ),
        ),
        "success_url": Str(max_length=5000),
        "ui_mode": Enum("elements", "embedded_page", "form", "hosted_page"),
    },
    not_simulated=(
        "adaptive_pricing",
        "after_expiration",
        "allowed_payment_method_types",
        "automatic_tax",
        "branding_settings",
        "consent_collection",
        "currency",
        "custom_fields",
        "custom_text",
        "customer_account",
        "customer_creation",
        "customer_update",
        "discounts",
        "excluded_payment_method_types",
        "integration_identifier",
        "invoice_creation",
        "managed_payments",
        "name_collection",
        "optional_items",
        "origin_context",
        "payment_intent_data",
        "payment_method_configuration",
        "payment_method_data",
        "payment_method_options",
        "permissions",
        "phone_number_collection",
        "redirect_on_completion",
        "return_url",
        "saved_payment_method_options",
        "setup_intent_data",
        "shipping_address_collection",
        "shipping_options",
        "submit_type",
        "tax_id_collection",
        "wallet_options",
    ),
)


def _item_specs(state: SandboxState, session: CheckoutSessionRecord) -> list[lifecycle.ItemSpec]:
    return [
        lifecycle.ItemSpec(state.prices[line.price], line.quantity, {}, param=f"line_items[{i}]")
        for i, line in enumerate(session.line_items)
    ]


@route("POST", "/v1/checkout/sessions", SESSION_CREATE)
def create_session(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params
    mode = params.get("mode")
    if mode is None:
        raise errors.missing_parameter("mode")
    if mode != "subscription":
        raise errors.invalid_request(
            f"The NOBill Stripe sandbox simulates Checkout in `subscription` mode only, not `{mode}`.", param="mode"
        )
    if params.get("ui_mode", "hosted_page") != "hosted_page":
        raise errors.not_simulated("ui_mode")
    if "customer" in params and "customer_email" in params:
        raise errors.invalid_request(
            "You may only specify one of these parameters: customer, customer_email.", param="customer_email"
        )
    customer: CustomerRecord | None = None
    if "customer" in params:
        customer = state.get_customer(params["customer"], param="customer")
    test_clock = customer.test_clock if customer else None
    now = state.now(test_clock)

    raw_lines = params.get("line_items")
    if not raw_lines:
        raise errors.missing_parameter("line_items")
    lines: list[CheckoutLineRecord] = []
    specs: list[lifecycle.ItemSpec] = []
    for index, raw in enumerate(raw_lines):
        param = f"line_items[{index}]"
        if "price" not in raw:
            raise errors.missing_parameter(f"{param}[price]")
        price = state.get_price(raw["price"], param=f"{param}[price]")
        if price.type != "recurring":
            raise errors.invalid_request(
                "The sandbox simulates recurring prices only in `subscription` mode Checkout Sessions.",
                param=f"{param}[price]",
            )
        quantity = raw.get("quantity")
        if price.usage_type != "metered" and quantity is None:
            raise errors.invalid_request(f"Quantity is required. Add `quantity` to `{param}`", param=f"{param}[quantity]")
        lines.append(CheckoutLineRecord(id=ids.new_id("li"), price=price.id, quantity=quantity))
        specs.append(lifecycle.ItemSpec(price, quantity, {}, param=param))
    currency, _, _ = lifecycle.check_items(state, specs, param="line_items")
    if customer is not None and customer.currency not in (None, currency):
        raise errors.invalid_request(
            f"The customer's currency is {customer.currency}; this session is in {currency}.", param="customer"
        )

    subscription_data = dict(params.get("subscription_data") or {})
    if "trial_end" in subscription_data and "trial_period_days" in subscription_data:
        raise errors.invalid_request(
            "You may only specify one of these parameters: subscription_data[trial_end], subscription_data[trial_period_days].",
            param="subscription_data[trial_end]",
        )
    if "trial_end" in subscription_data and subscription_data["trial_end"] < now + MIN_TRIAL_END_AHEAD:
        raise errors.invalid_request(
            "subscription_data[trial_end] must be at least 48 hours in the future.", param="subscription_data[trial_end]"
        )
    expires_at = params.get("expires_at", now + DEFAULT_LIFETIME)
    if not now + 30 * 60 <= expires_at <= now + DAY:
        raise errors.invalid_request(
            "The `expires_at` timestamp must be between 30 minutes and 24 hours from Checkout Session creation.",
            param="expires_at",
        )
    has_trial = "trial_end" in subscription_data or "trial_period_days" in subscription_data
    due_now = 0 if has_trial else lifecycle.licensed_total(state, specs)
    session = CheckoutSessionRecord(
        id=ids.new_id("cs_test"),
        created=now,
        expires_at=expires_at,
        mode=mode,
        line_items=lines,
        currency=currency,
        amount_subtotal=due_now,
        amount_total=due_now,
        customer=customer.id if customer else None,
        customer_email=params.get("customer_email"),
        client_reference_id=params.get("client_reference_id"),
        metadata=merge_metadata({}, params["metadata"]) if params.get("metadata") else {},
        success_url=params.get("success_url"),
        cancel_url=params.get("cancel_url"),
        payment_method_collection=params.get("payment_method_collection", "always"),
        locale=params.get("locale"),
        allow_promotion_codes=params.get("allow_promotion_codes"),
        billing_address_collection=params.get("billing_address_collection"),
        subscription_data={
            "trial_end": subscription_data.get("trial_end"),
            "trial_period_days": subscription_data.get("trial_period_days"),
            "missing_payment_method": (subscription_data.get("trial_settings") or {})
            .get("end_behavior", {})
            .get("missing_payment_method", "create_invoice"),
            "metadata": merge_metadata({}, subscription_data["metadata"]) if subscription_data.get("metadata") else {},
            "description": subscription_data.get("description"),
            "billing_mode": list(lifecycle.billing_mode_of(subscription_data.get("billing_mode"), "subscription_data[billing_mode]")),
        },
        test_clock=test_clock,
    )
    state.checkout_sessions[session.id] = session
    state.dirty = True
    return objects.checkout_session(state, session)


@route("GET", "/v1/checkout/sessions/{session}", endpoint({}))
def retrieve_session(call: Call) -> dict[str, Any]:
    return objects.checkout_session(call.state, call.state.get_checkout_session(call.path_args["session"], status=404, param="session"))


@route("POST", "/v1/checkout/sessions/{session}/expire", endpoint({}))
def expire_session_endpoint(call: Call) -> dict[str, Any]:
    state = call.state
    session = state.get_checkout_session(call.path_args["session"], status=404, param="session")
    if session.status != "open":
        raise errors.invalid_request(
            f"Only Checkout Sessions with a status of `open` can be expired. This session has status `{session.status}`."
        )
    expire_session(state, session, state.now(session.test_clock))
    return objects.checkout_session(state, session)


def expire_session(state: SandboxState, session: CheckoutSessionRecord, now: int) -> None:
    session.status = "expired"
    state.dirty = True
    events.emit(state, "checkout.session.expired", objects.checkout_session(state, session), created=now)


@route(
    "GET",
    "/v1/checkout/sessions",
    list_endpoint(
        {
            "created": CREATED_FILTER,
            "customer": Str(),
            "status": Enum("complete", "expired", "open"),
            "subscription": Str(),
        },
        not_simulated=("customer_account", "customer_details", "payment_intent", "payment_link"),
    ),
)
def list_sessions(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params

    def keep(session: CheckoutSessionRecord) -> bool:
        return all(
            name not in params or getattr(session, name) == params[name] for name in ("customer", "status", "subscription")
        ) and in_range(session.created, params.get("created"))

    return paginate(
        newest_first(state.checkout_sessions, keep),
        params,
        url="/v1/checkout/sessions",
        render=lambda session: objects.checkout_session(state, session),
        collection=state.checkout_sessions,
        resource="checkout.session",
    )


@route(
    "GET",
    "/v1/checkout/sessions/{session}/line_items",
    list_endpoint({}),
)
def list_line_items(call: Call) -> dict[str, Any]:
    state = call.state
    session = state.get_checkout_session(call.path_args["session"], status=404, param="session")
    rows = list(range(len(session.line_items)))
    return paginate(
        rows,
        call.params,
        url=f"/v1/checkout/sessions/{session.id}/line_items",
        render=lambda index: objects.checkout_line_item(state, session, index),
        id_of=lambda index: session.line_items[index].id,
        resource="line_item",
    )


# -- completion (control API and hosted page) --------------------------------------------


def complete_session(
    state: SandboxState, session: CheckoutSessionRecord, outcome: str, *, email: str | None = None, name: str | None = None
) -> dict[str, Any]:
    """Finish the session as the customer would on Stripe's page (state lock held).

    Outcomes: `succeeded` (a card that works), `decline_later` (the card pays what is due
    now, then declines every later charge — like Stripe's 4000 0000 0000 0341 after
    attachment), `card_declined` (the card is refused; the session stays open) and
    `no_payment_method` (allowed when nothing is due and `payment_method_collection` is
    `if_required`).
    """
    from nobill.sandbox.due_work import settle

    if outcome not in COMPLETION_OUTCOMES:
        raise errors.invalid_request(f"outcome must be one of {', '.join(COMPLETION_OUTCOMES)}", param="outcome")
    if session.status != "open":
        raise errors.invalid_request(f"This Checkout Session is no longer open (status: {session.status}).")
    if outcome == "card_declined":
        raise errors.card_declined()
    if outcome == "no_payment_method" and not (session.payment_method_collection == "if_required" and session.amount_total == 0):
        raise errors.invalid_request(
            "This Checkout Session needs a payment method: something is due now or "
            "payment_method_collection is `always`."
        )
    now = state.now(session.test_clock)
    if session.customer is not None:
        customer = state.get_customer(session.customer)
    else:
        customer = CustomerRecord(
            id=ids.new_id("cus"),
            created=now,
            email=email or session.customer_email or "customer@example.com",
            name=name,
            invoice_prefix=ids.invoice_prefix(),
        )
        state.customers[customer.id] = customer
        events.emit(state, "customer.created", objects.customer(state, customer), created=now)
    card = None if outcome == "no_payment_method" else add_card(state, customer, now=now)
    data = session.subscription_data
    trial_end = data.get("trial_end")
    if data.get("trial_period_days"):
        trial_end = now + data["trial_period_days"] * DAY
    subscription = lifecycle.start_subscription(
        state,
        customer,
        _item_specs(state, session),
        now=now,
        trial_end=trial_end,
        missing_payment_method=data.get("missing_payment_method", "create_invoice"),
        default_payment_method=card.id if card else None,
        metadata=data.get("metadata"),
        description=data.get("description"),
        billing_mode=tuple(data.get("billing_mode") or ("flexible", "included")),  # type: ignore[arg-type]
    )
    if card is not None and outcome == "decline_later":
        card.declines = True
    session.status = "complete"
    session.payment_status = "paid" if session.amount_total > 0 else "no_payment_required"
    session.customer = customer.id
    session.subscription = subscription.id
    session.invoice = subscription.latest_invoice
    session.customer_details = {
        "address": None,
        "business_name": None,
        "email": customer.email,
        "individual_name": None,
        "name": customer.name,
        "phone": customer.phone,
        "tax_exempt": customer.tax_exempt,
        "tax_ids": [],
    }
    state.dirty = True
    rendered = objects.checkout_session(state, session)
    events.emit(state, "checkout.session.completed", rendered, created=now)
    settle(state, customer.test_clock, state.now(customer.test_clock))
    return rendered

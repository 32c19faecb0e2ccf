"""Payment methods: Stripe's test cards attached to customers, whether charges to them
fail, and the PaymentMethods API (retrieve, list, attach, detach, a customer's list).

Cards come from Stripe's test tokens (`pm_card_visa`, ...) passed as a customer's
`payment_method` or to `payment_methods.attach`, from completing a Checkout Session or
the billing portal, or from the control API. A card either succeeds or declines every
charge. Attaching emits `payment_method.attached`; detaching emits
`payment_method.detached` and clears the card wherever it was the default, as on Stripe.
"""

from __future__ import annotations

from typing import Any

from nobill.sandbox import errors, events, ids, objects
from nobill.sandbox.listing import newest_first, paginate
from nobill.sandbox.params import Enum, Str, endpoint, list_endpoint
from nobill.sandbox.records import CustomerRecord, PaymentMethodRecord
from nobill.sandbox.routing import Call, route
from nobill.sandbox.state import SandboxState

# Test token → (brand, last4, declines). `pm_card_chargeCustomerFail` is Stripe's card
# that attaches fine and declines every charge afterwards.
TEST_CARDS = {
    "pm_card_visa": ("visa", "4242", False),
    "pm_card_visa_debit": ("visa", "5556", False),
    "pm_card_mastercard": ("mastercard", "4444", False),
    "pm_card_amex": ("amex", "8431", False),
    "pm_card_chargeCustomerFail": ("visa", "0341", True),
}
# Test tokens whose attachment itself is declined.
DECLINED_ON_ATTACH = {
    "pm_card_chargeDeclined": "generic_decline",
    "pm_card_visa_chargeDeclined": "generic_decline",
    "pm_card_chargeDeclinedInsufficientFunds": "insufficient_funds",
}


def attach_test_card(
    state: SandboxState, customer: CustomerRecord, token: str, *, param: str, now: int, announce: bool = True
) -> PaymentMethodRecord:
    if token in DECLINED_ON_ATTACH:
        raise errors.card_declined(decline_code=DECLINED_ON_ATTACH[token], param=param)
    if token not in TEST_CARDS:
        raise errors.invalid_request(
            f"No such PaymentMethod: '{token}' (the sandbox accepts Stripe's test tokens: "
            + ", ".join(sorted(TEST_CARDS)) + ")",
            param=param,
            code="resource_missing",
        )
    brand, last4, declines = TEST_CARDS[token]
    return add_card(state, customer, now=now, brand=brand, last4=last4, declines=declines, announce=announce)


def add_card(
    state: SandboxState,
    customer: CustomerRecord,
    *,
    now: int,
    brand: str = "visa",
    last4: str = "4242",
    declines: bool = False,
    announce: bool = True,
) -> PaymentMethodRecord:
    """Attach a new test card; `announce=False` leaves `payment_method.attached` to the
    caller (a customer being created announces itself first)."""
    card = PaymentMethodRecord(id=ids.new_id("pm"), created=now, customer=customer.id, brand=brand, last4=last4, declines=declines)
    state.payment_methods[card.id] = card
    state.dirty = True
    if announce:
        events.emit(state, "payment_method.attached", objects.payment_method(state, card), created=now)
    return card


def cards_of(state: SandboxState, customer: CustomerRecord) -> list[PaymentMethodRecord]:
    """The cards attached to the customer now."""
    return [card for card in state.payment_methods.values() if card.customer == customer.id]


def set_payment_behavior(state: SandboxState, customer: CustomerRecord, behavior: str, now: int) -> None:
    """Make every card of the customer succeed or decline from now on.

    `succeed` also gives a customer without a default card a working one, as a customer
    who updates their card in the billing portal would.
    """
    for card in cards_of(state, customer):
        card.declines = behavior == "decline"
    if behavior == "succeed" and state.default_payment_method(None, customer) is None:
        card = add_card(state, customer, now=now)
        customer.invoice_settings["default_payment_method"] = card.id
    state.dirty = True


# -- the PaymentMethods API -------------------------------------------------------------

TYPES = Enum("card")


def get_payment_method(state: SandboxState, payment_method_id: str, *, status: int = 404, param: str = "payment_method") -> PaymentMethodRecord:
    card = state.payment_methods.get(payment_method_id)
    if card is None:
        raise errors.invalid_request(f"No such PaymentMethod: '{payment_method_id}'", param=param, code="resource_missing", status=status)
    return card


@route("GET", "/v1/payment_methods/{payment_method}", endpoint({}))
def retrieve_payment_method(call: Call) -> dict[str, Any]:
    return objects.payment_method(call.state, get_payment_method(call.state, call.path_args["payment_method"]))


def _list(call: Call, customer_id: str | None, url: str) -> dict[str, Any]:
    state = call.state
    rows = newest_first(
        state.payment_methods, lambda card: card.customer is not None and (customer_id is None or card.customer == customer_id)
    )
    return paginate(
        rows,
        call.params,
        url=url,
        render=lambda card: objects.payment_method(state, card),
        collection=state.payment_methods,
        resource="payment_method",
    )


@route(
    "GET",
    "/v1/payment_methods",
    list_endpoint({"allow_redisplay": Enum("always", "limited", "unspecified"), "customer": Str(), "type": TYPES}, not_simulated=("customer_account",)),
)
def list_payment_methods(call: Call) -> dict[str, Any]:
    customer_id = call.params.get("customer")
    if customer_id is not None:
        call.state.get_customer(customer_id, param="customer")
    return _list(call, customer_id, "/v1/payment_methods")


@route(
    "GET",
    "/v1/customers/{customer}/payment_methods",
    list_endpoint({"allow_redisplay": Enum("always", "limited", "unspecified"), "type": TYPES}),
)
def list_customer_payment_methods(call: Call) -> dict[str, Any]:
    customer = call.state.get_customer(call.path_args["customer"], status=404, param="customer")
    return _list(call, customer.id, f"/v1/customers/{customer.id}/payment_methods")


@route("GET", "/v1/customers/{customer}/payment_methods/{payment_method}", endpoint({}))
def retrieve_customer_payment_method(call: Call) -> dict[str, Any]:
    customer = call.state.get_customer(call.path_args["customer"], status=404, param="customer")
    card = get_payment_method(call.state, call.path_args["payment_method"])
    if card.customer != customer.id:
        raise errors.invalid_request(
            f"No such PaymentMethod: '{card.id}' for customer '{customer.id}'", param="payment_method", code="resource_missing", status=404
        )
    return objects.payment_method(call.state, card)


@route("POST", "/v1/payment_methods/{payment_method}/attach", endpoint({"customer": Str()}, not_simulated=("customer_account",)))
def attach_payment_method(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params
    if "customer" not in params:
        raise errors.missing_parameter("customer")
    customer = state.get_customer(params["customer"], param="customer")
    state.check_clock_ready(customer.test_clock)
    now = state.now(customer.test_clock)
    payment_method_id = call.path_args["payment_method"]
    if payment_method_id in TEST_CARDS or payment_method_id in DECLINED_ON_ATTACH:
        # Stripe's test tokens make a new card each time they are attached.
        card = attach_test_card(state, customer, payment_method_id, param="payment_method", now=now)
        return objects.payment_method(state, card)
    card = get_payment_method(state, payment_method_id)
    if card.customer == customer.id:
        return objects.payment_method(state, card)
    if card.customer is not None:
        raise errors.invalid_request(
            "The payment method you provided has already been attached to a customer.", param="payment_method", code="payment_method_unexpected_state"
        )
    raise errors.invalid_request(
        "This PaymentMethod was previously used without being attached to a Customer or was detached from a Customer, "
        "and may not be used again.",
        param="payment_method",
        code="payment_method_unexpected_state",
    )


@route("POST", "/v1/payment_methods/{payment_method}/detach", endpoint({}))
def detach_payment_method(call: Call) -> dict[str, Any]:
    state = call.state
    card = get_payment_method(state, call.path_args["payment_method"])
    if card.customer is None:
        raise errors.invalid_request(
            "The payment method you provided is not attached to a customer so detachment is impossible.",
            param="payment_method",
            code="payment_method_unexpected_state",
        )
    customer = state.customers[card.customer]
    state.check_clock_ready(customer.test_clock)
    detach(state, card, state.now(customer.test_clock))
    return objects.payment_method(state, card)


def detach(state: SandboxState, card: PaymentMethodRecord, now: int) -> None:
    """Detach a card: it is no longer anyone's default (customer and subscriptions)."""
    customer = state.customers[card.customer or ""]
    if customer.invoice_settings.get("default_payment_method") == card.id:
        before = objects.customer(state, customer)
        customer.invoice_settings["default_payment_method"] = None
        events.emit_updated(state, "customer.updated", before, objects.customer(state, customer), created=now)
    for subscription in state.subscriptions.values():
        if subscription.default_payment_method == card.id:
            before = objects.subscription(state, subscription)
            subscription.default_payment_method = None
            events.emit_updated(state, "customer.subscription.updated", before, objects.subscription(state, subscription), created=now)
    card.customer = None
    state.dirty = True
    events.emit(state, "payment_method.detached", objects.payment_method(state, card), created=now)

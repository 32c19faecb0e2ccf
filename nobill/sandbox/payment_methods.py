"""Stripe's test payment methods, attached to customers, and whether charges to them fail.

The sandbox has no PaymentMethods API; cards come from Stripe's test tokens passed as a
customer's `payment_method` (e.g. `pm_card_visa`), from completing a Checkout Session,
or from the control API. A card either succeeds or declines every charge.
"""

from __future__ import annotations

from nobill.sandbox import errors, ids
from nobill.sandbox.records import CustomerRecord, PaymentMethodRecord
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


def attach_test_card(state: SandboxState, customer: CustomerRecord, token: str, *, param: str, now: int) -> PaymentMethodRecord:
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
    return add_card(state, customer, now=now, brand=brand, last4=last4, declines=declines)


def add_card(state: SandboxState, customer: CustomerRecord, *, now: int, brand: str = "visa", last4: str = "4242", declines: bool = False) -> PaymentMethodRecord:
    card = PaymentMethodRecord(id=ids.new_id("pm"), created=now, customer=customer.id, brand=brand, last4=last4, declines=declines)
    state.payment_methods[card.id] = card
    state.dirty = True
    return card


def cards_of(state: SandboxState, customer: CustomerRecord) -> list[PaymentMethodRecord]:
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

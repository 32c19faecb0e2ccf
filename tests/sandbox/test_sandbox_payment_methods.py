"""The PaymentMethods API: retrieve, list (also per customer), attach test cards, detach,
with `payment_method.attached/detached` events."""

from __future__ import annotations

import pytest
import stripe

from sandbox_helpers import stripe_example_objects
from test_sandbox_object_shapes import check_parsed


def test_attach_list_retrieve_and_detach_cards(client, catalog):
    fixtures = stripe_example_objects()
    customer = client.v1.customers.create(
        {"email": "pm@example.com", "payment_method": "pm_card_visa", "invoice_settings": {"default_payment_method": "pm_card_visa"}}
    )
    default = customer.invoice_settings.default_payment_method
    visa = check_parsed(client.v1.payment_methods.retrieve(default), stripe.PaymentMethod, fixtures)
    assert (visa["card"]["brand"], visa["card"]["last4"], visa["customer"], visa["billing_details"]["email"]) == (
        "visa", "4242", customer.id, "pm@example.com"
    )
    mastercard = client.v1.payment_methods.attach("pm_card_mastercard", {"customer": customer.id})
    assert mastercard.id.startswith("pm_") and mastercard.id != "pm_card_mastercard"
    assert (mastercard.card.brand, mastercard.customer) == ("mastercard", customer.id)
    listed = client.v1.customers.payment_methods.list(customer.id)
    assert [pm.id for pm in listed.data] == [mastercard.id, default]
    assert [pm.id for pm in client.v1.payment_methods.list({"customer": customer.id, "type": "card"}).data] == [mastercard.id, default]
    assert client.v1.customers.payment_methods.retrieve(customer.id, mastercard.id).card.last4 == "4444"
    with pytest.raises(stripe.CardError):
        client.v1.payment_methods.attach("pm_card_chargeDeclined", {"customer": customer.id})

    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.base.id}], "default_payment_method": default})
    detached = client.v1.payment_methods.detach(default)
    assert detached.customer is None
    assert client.v1.customers.retrieve(customer.id).invoice_settings.default_payment_method is None
    assert client.v1.subscriptions.retrieve(subscription.id).default_payment_method is None
    assert [pm.id for pm in client.v1.customers.payment_methods.list(customer.id).data] == [mastercard.id]
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_methods.attach(default, {"customer": customer.id})
    assert caught.value.code == "payment_method_unexpected_state"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_methods.retrieve("pm_missing")
    assert caught.value.http_status == 404
    types = [e.type for e in client.v1.events.list({"type": "payment_method.*"}).data]
    assert types == ["payment_method.detached", "payment_method.attached", "payment_method.attached"]
    # Updating the default to a card of the customer works; a detached card does not.
    client.v1.customers.update(customer.id, {"invoice_settings": {"default_payment_method": mastercard.id}})
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.update(customer.id, {"invoice_settings": {"default_payment_method": default}})

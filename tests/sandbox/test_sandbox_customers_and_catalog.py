"""Customers, Products and Prices: each resource's lifecycle through the stripe client."""

from __future__ import annotations

from decimal import Decimal

import pytest
import stripe


def test_customer_lifecycle_with_events(client):
    customer = client.v1.customers.create({"email": "ada@example.com", "name": "Ada", "metadata": {"org": "o1", "tier": "pro"}})
    assert customer.id.startswith("cus_") and customer.livemode is False and customer.balance == 0
    assert client.v1.customers.retrieve(customer.id).name == "Ada"
    updated = client.v1.customers.update(customer.id, {"name": "Ada L.", "metadata": {"tier": "", "seats": "3"}})
    assert updated.name == "Ada L."
    assert updated.metadata.to_dict() == {"org": "o1", "seats": "3"}  # merged key by key; "" removes
    assert [c.id for c in client.v1.customers.list({"email": "ada@example.com"}).data] == [customer.id]
    event = client.v1.events.list({"type": "customer.updated"}).data[0]
    assert event.data.previous_attributes["name"] == "Ada"
    assert event.data.object.name == "Ada L."
    assert event.request.id == updated.last_response.request_id
    gone = client.v1.customers.delete(customer.id)
    assert gone.deleted is True
    assert client.v1.customers.retrieve(customer.id).deleted is True
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.customers.update(customer.id, {"name": "x"})
    assert caught.value.http_status == 404
    assert client.v1.customers.list({"email": "ada@example.com"}).data == []
    assert [e.type for e in client.v1.events.list().data] == ["customer.deleted", "customer.updated", "customer.created"]


def test_customers_on_a_test_clock_live_in_its_time(client, clock):
    customer = client.v1.customers.create({"test_clock": clock.id})
    assert customer.test_clock == clock.id
    assert customer.created == clock.frozen_time
    assert [c.id for c in client.v1.customers.list({"test_clock": clock.id}).data] == [customer.id]
    client.v1.customers.create({"test_clock": clock.id})
    client.v1.customers.create({"test_clock": clock.id})
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.customers.create({"test_clock": clock.id})
    assert caught.value.param == "test_clock"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.customers.create({"test_clock": "clock_missing"})
    assert caught.value.code == "resource_missing"


def test_test_cards_attach_as_stripe_test_tokens_do(client):
    customer = client.v1.customers.create({"payment_method": "pm_card_visa", "invoice_settings": {"default_payment_method": "pm_card_visa"}})
    card = customer.invoice_settings.default_payment_method
    assert card.startswith("pm_") and card != "pm_card_visa"
    with pytest.raises(stripe.CardError) as caught:
        client.v1.customers.create({"payment_method": "pm_card_chargeDeclined"})
    assert caught.value.code == "card_declined"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.customers.create({"payment_method": "pm_card_unknown"})
    assert caught.value.param == "payment_method"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.customers.update(customer.id, {"invoice_settings": {"default_payment_method": "pm_not_attached"}})
    assert caught.value.param == "invoice_settings[default_payment_method]"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.update(customer.id, {"invoice_prefix": "lower"})


def test_product_lifecycle(client):
    product = client.v1.products.create(
        {"name": "Team", "description": "For teams", "metadata": {"plan": "team"}, "default_price_data": {"currency": "usd", "unit_amount": 900, "recurring": {"interval": "month"}}}
    )
    assert product.id.startswith("prod_") and product.active and product.type == "service"
    price = client.v1.prices.retrieve(product.default_price)
    assert (price.product, price.unit_amount, price.recurring.interval) == (product.id, 900, "month")
    custom = client.v1.products.create({"id": "plan_enterprise", "name": "Enterprise"})
    assert custom.id == "plan_enterprise"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.products.create({"id": "plan_enterprise", "name": "Again"})
    assert caught.value.code == "resource_already_exists"
    archived = client.v1.products.update(custom.id, {"active": False, "description": "gone"})
    assert archived.active is False and archived.description == "gone"
    assert [p.id for p in client.v1.products.list({"active": True}).data] == [product.id]
    assert [p.id for p in client.v1.products.list({"ids": [custom.id]}).data] == [custom.id]
    assert client.v1.products.update(custom.id, {"description": ""}).description is None
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.products.delete(product.id)
    assert "has one or more user-created prices" in caught.value.user_message
    assert client.v1.products.delete(custom.id).deleted is True
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.products.retrieve(custom.id)
    types = [e.type for e in client.v1.events.list().data]
    assert types.count("product.created") == 2 and "product.updated" in types and "product.deleted" in types


def test_prices_flat_per_seat_and_metered(client, catalog):
    assert (catalog.base.unit_amount, catalog.base.recurring.usage_type, catalog.base.billing_scheme) == (2000, "licensed", "per_unit")
    assert catalog.usage.unit_amount is None and catalog.usage.unit_amount_decimal == Decimal("0.5")
    assert catalog.usage.recurring.meter == catalog.meter.id and catalog.usage.recurring.usage_type == "metered"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.prices.create({"product": catalog.product.id, "currency": "usd", "unit_amount": 1, "recurring": {"interval": "month", "usage_type": "metered"}})
    assert caught.value.param == "recurring[meter]"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.prices.create(
            {"product": catalog.product.id, "currency": "usd", "unit_amount": 1, "recurring": {"interval": "month", "usage_type": "metered", "meter": "mtr_missing"}}
        )
    assert caught.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.prices.create({"product": catalog.product.id, "currency": "usd", "unit_amount": 1, "recurring": {"interval": "month", "interval_count": 13}})
    assert caught.value.param == "recurring[interval_count]"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.prices.create({"product": catalog.product.id, "currency": "usd", "unit_amount": 1, "unit_amount_decimal": "1"})
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.prices.create({"currency": "usd", "unit_amount": 1})
    assert caught.value.param == "product"
    one_time = client.v1.prices.create({"product_data": {"name": "Setup fee"}, "currency": "EUR", "unit_amount": 5000})
    assert one_time.type == "one_time" and one_time.recurring is None and one_time.currency == "eur"
    assert client.v1.products.retrieve(one_time.product).name == "Setup fee"


def test_lookup_keys_are_unique_and_can_be_transferred(client, catalog):
    assert [p.id for p in client.v1.prices.list({"lookup_keys": ["pro_base", "pro_seat"]}).data] == [catalog.seat.id, catalog.base.id]
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.prices.create({"product": catalog.product.id, "currency": "usd", "unit_amount": 2500, "recurring": {"interval": "month"}, "lookup_key": "pro_base"})
    assert caught.value.param == "lookup_key" and catalog.base.id in caught.value.user_message
    newer = client.v1.prices.create(
        {"product": catalog.product.id, "currency": "usd", "unit_amount": 2500, "recurring": {"interval": "month"}, "lookup_key": "pro_base", "transfer_lookup_key": True}
    )
    assert [p.id for p in client.v1.prices.list({"lookup_keys": ["pro_base"]}).data] == [newer.id]
    assert client.v1.prices.retrieve(catalog.base.id).lookup_key is None


def test_price_update_and_list_filters(client, catalog):
    updated = client.v1.prices.update(catalog.base.id, {"active": False, "nickname": "Legacy", "metadata": {"v": "1"}})
    assert (updated.active, updated.nickname, updated.metadata["v"]) == (False, "Legacy", "1")
    assert client.v1.events.list({"type": "price.updated"}).data[0].data.previous_attributes["active"] is True
    assert catalog.base.id not in [p.id for p in client.v1.prices.list({"active": True}).data]
    metered = client.v1.prices.list({"recurring": {"usage_type": "metered"}}).data
    assert [p.id for p in metered] == [catalog.usage.id]
    assert len(client.v1.prices.list({"product": catalog.product.id, "type": "recurring"}).data) == 3
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.prices.update(catalog.base.id, {"unit_amount": 5})  # type: ignore[typeddict-unknown-key]
    assert caught.value.code == "parameter_unknown"

"""Idempotency-Key: replay of the first answer, mismatches, and what is (not) remembered."""

from __future__ import annotations

import json

import pytest
import stripe

from nobill.sandbox import errors
from nobill.sandbox.idempotency import IdempotencyStore, StoredResponse
from sandbox_helpers import http, new_client


def test_the_same_key_replays_the_first_response(sandbox, client):
    first = client.v1.customers.create({"email": "once@example.com"}, {"idempotency_key": "signup-42"})
    again = client.v1.customers.create({"email": "once@example.com"}, {"idempotency_key": "signup-42"})
    assert again.id == first.id
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert again.last_response.headers["Original-Request"] == first.last_response.request_id
    assert len(client.v1.customers.list({"email": "once@example.com"}).data) == 1
    assert len(client.v1.events.list({"type": "customer.created"}).data) == 1


def test_the_same_key_with_other_parameters_or_another_endpoint_is_an_idempotency_error(client):
    client.v1.customers.create({"email": "a@example.com"}, {"idempotency_key": "k-1"})
    with pytest.raises(stripe.IdempotencyError) as caught:
        client.v1.customers.create({"email": "b@example.com"}, {"idempotency_key": "k-1"})
    assert caught.value.http_status == 400
    assert caught.value.error.type == "idempotency_error"
    assert "same parameters" in caught.value.user_message
    with pytest.raises(stripe.IdempotencyError) as caught:
        client.v1.products.create({"name": "x"}, {"idempotency_key": "k-1"})
    assert "same endpoint" in caught.value.user_message


def test_parameter_order_on_the_wire_does_not_matter(sandbox):
    headers = {"Authorization": "Bearer sk_test_x", "Idempotency-Key": "ordered", "Content-Type": "application/x-www-form-urlencoded"}
    status, _, first = http(sandbox.url + "/v1/customers", "POST", b"email=o%40example.com&name=O", headers)
    assert status == 200
    status, replay_headers, second = http(sandbox.url + "/v1/customers", "POST", b"name=O&email=o%40example.com", headers)
    assert status == 200 and replay_headers.get("Idempotent-Replayed") == "true"
    assert json.loads(first)["id"] == json.loads(second)["id"]


def test_a_request_rejected_by_validation_leaves_the_key_unused(client):
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.create({"emali": "x@example.com"}, {"idempotency_key": "fix-and-retry"})  # type: ignore[typeddict-unknown-key]
    customer = client.v1.customers.create({"email": "x@example.com"}, {"idempotency_key": "fix-and-retry"})
    assert customer.email == "x@example.com"


def test_a_card_error_is_remembered_and_replayed(client, control, catalog):
    customer = client.v1.customers.create(
        {"payment_method": "pm_card_chargeCustomerFail", "invoice_settings": {"default_payment_method": "pm_card_chargeCustomerFail"}}
    )
    params = {"customer": customer.id, "items": [{"price": catalog.base.id}], "payment_behavior": "error_if_incomplete"}
    with pytest.raises(stripe.CardError) as first:
        client.v1.subscriptions.create(params, {"idempotency_key": "charge-1"})
    control("POST", f"/_sandbox/customers/{customer.id}/payment_behavior", {"behavior": "succeed"})
    with pytest.raises(stripe.CardError) as replayed:
        client.v1.subscriptions.create(params, {"idempotency_key": "charge-1"})
    assert replayed.value.headers["Idempotent-Replayed"] == "true"
    assert replayed.value.json_body == first.value.json_body
    assert client.v1.subscriptions.create(params, {"idempotency_key": "charge-2"}).status == "active"


def test_keys_are_scoped_to_the_api_key(sandbox):
    one = new_client(sandbox.url, api_key="sk_test_one").v1.customers.create({}, {"idempotency_key": "shared"})
    two = new_client(sandbox.url, api_key="sk_test_two").v1.customers.create({}, {"idempotency_key": "shared"})
    assert one.id != two.id


def test_a_key_in_use_by_a_running_request_is_a_409():
    store = IdempotencyStore()
    assert store.begin("sk_test_a", "k", "POST /v1/customers", "{}") is None
    with pytest.raises(errors.StripeError) as caught:
        store.begin("sk_test_a", "k", "POST /v1/customers", "{}")
    assert (caught.value.status, caught.value.code) == (409, "idempotency_key_in_use")
    store.finish("sk_test_a", "k", StoredResponse("POST /v1/customers", "{}", 200, b"{}", "req_1", 1e12))
    assert store.begin("sk_test_a", "k", "POST /v1/customers", "{}").request_id == "req_1"
    with pytest.raises(errors.StripeError) as caught:
        store.begin("sk_test_a", "x" * 256, "POST /v1/customers", "{}")
    assert caught.value.status == 400

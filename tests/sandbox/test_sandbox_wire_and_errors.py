"""Wire compatibility: the real stripe client over plain HTTP, API keys, Stripe's error
objects and statuses, lists and pagination, expand[]."""

from __future__ import annotations

import base64
import json
import logging

import pytest
import stripe

from sandbox_helpers import http, new_client


def test_the_default_stripe_client_works_with_only_base_addresses(sandbox, monkeypatch):
    # The documented way to point stripe-python 16 at the sandbox: no custom HTTP client.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    client = stripe.StripeClient("sk_test_default", base_addresses={"api": sandbox.url, "meter_events": sandbox.url})
    customer = client.v1.customers.create({"email": "plain@example.com"})
    assert customer.id.startswith("cus_") and len(customer.id) == 18
    assert client.v1.customers.retrieve(customer.id).email == "plain@example.com"


def test_v1_meter_events_need_only_the_api_base_address(sandbox, catalog):
    # v1 calls (meter events included) go to the "api" base; "meter_events" serves v2 streams,
    # and "connect"/"files" are not used by anything NOBill calls.
    client = stripe.StripeClient(
        "sk_test_api_only", base_addresses={"api": sandbox.url}, http_client=new_client(sandbox.url)._requestor._client
    )
    customer = client.v1.customers.create({})
    event = client.v1.billing.meter_events.create({"event_name": "api_calls", "payload": {"stripe_customer_id": customer.id, "value": "1"}})
    assert event.event_name == "api_calls"


@pytest.mark.parametrize("key", ["sk_live_123456789", "pk_test_123456789", "rk_live_x", "sk_test_", "rk_test_", "whatever"])
def test_keys_other_than_test_secret_keys_are_refused_with_401(sandbox, key):
    client = new_client(sandbox.url, api_key=key)
    with pytest.raises(stripe.AuthenticationError) as caught:
        client.v1.customers.list()
    assert caught.value.http_status == 401
    assert caught.value.error.type == "invalid_request_error"  # what Stripe sends with a 401
    assert "Invalid API Key provided" in caught.value.user_message


# A live key pointed at the sandbox by mistake must not end up in its answer or its log.
LIVE_KEY = "sk_live_51HxAbCdEfGhIjKlMnOpQrStUvWxYz0123456789aBcDeFgHiJkLmNoPqRsTuVwXyZ98765"
MISTAKEN_KEYS = {
    "live-secret": (LIVE_KEY, "sk_live_********************8765"),
    "live-restricted": ("rk_live_51HxRestrictedKeyValue0123456789", "rk_live_********************6789"),
    "publishable": ("pk_test_51HxPublishableKeyValue0123", "pk_test_********************0123"),
    "short-live": ("sk_live_1234", "sk_live_********************"),
    "no-known-prefix": ("mysecretpassword_x_y_verylongtail", "********************tail"),
    "short-no-prefix": ("hunter2", "********************"),
}


@pytest.mark.parametrize(("key", "masked"), MISTAKEN_KEYS.values(), ids=MISTAKEN_KEYS.keys())
def test_a_refused_key_is_masked_like_stripe_does_in_the_answer_and_the_log(sandbox, caplog, key, masked):
    client = new_client(sandbox.url, api_key=key)
    with caplog.at_level(logging.DEBUG), pytest.raises(stripe.AuthenticationError) as caught:
        client.v1.customers.create({"email": "someone@example.com"})

    message = caught.value.user_message
    assert message.startswith(f"Invalid API Key provided: {masked} ") or message == f"Invalid API Key provided: {masked}"
    secret = key.removeprefix(key[:8]) if key[2:3] == "_" and key[7:8] == "_" else key
    # Nothing of the secret shows but (for a long one) its last four characters, as Stripe does.
    shown = message.removeprefix("Invalid API Key provided: ").split(" ")[0]
    assert not any(secret[i : i + 5] in shown for i in range(len(secret) - 4)), message
    assert key not in message
    assert key not in json.dumps(caught.value.json_body)
    sandbox_records = [record for record in caplog.records if record.name.startswith("nobill.sandbox")]
    logged = "\n".join(f"{record.getMessage()} {vars(record)}" for record in sandbox_records)
    assert key not in logged and secret[:8] not in logged


def test_restricted_test_keys_are_accepted_with_every_permission(sandbox):
    client = new_client(sandbox.url, api_key="rk_test_restricted_key")
    customer = client.v1.customers.create({"email": "rk@example.com"})
    assert client.v1.customers.retrieve(customer.id).email == "rk@example.com"
    client.v1.webhook_endpoints.create({"url": "https://example.com/hook", "enabled_events": ["*"]})


def test_the_api_version_must_exist_and_be_the_one_the_sandbox_renders(sandbox):
    assert new_client(sandbox.url, stripe_version="2026-10-28.endive").v1.customers.list().object == "list"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        new_client(sandbox.url, stripe_version="1999-01-01.bogus").v1.customers.list()
    assert (caught.value.http_status, caught.value.user_message) == (400, "Invalid Stripe API version: 1999-01-01.bogus")
    with pytest.raises(stripe.InvalidRequestError) as caught:
        new_client(sandbox.url).v1.customers.list(options={"stripe_version": "2025-03-31.basil"})
    assert caught.value.http_status == 400
    assert "renders API version 2026-10-28.endive only" in caught.value.user_message
    client = new_client(sandbox.url)
    explicit = client.v1.webhook_endpoints.create(
        {"url": "https://example.com/hook", "enabled_events": ["*"], "api_version": "2026-10-28.endive"}
    )
    assert explicit.api_version == "2026-10-28.endive"
    for version, message in (("2024-06-20", "does not simulate"), ("2030-01-01.zinnia", "Invalid Stripe API version")):
        with pytest.raises(stripe.InvalidRequestError) as caught:
            client.v1.webhook_endpoints.create({"url": "https://example.com/hook", "enabled_events": ["*"], "api_version": version})  # type: ignore[typeddict-item]
        assert caught.value.param == "api_version" and message in caught.value.user_message


def test_the_known_versions_are_the_ones_stripe_python_lists():
    import typing

    from stripe.params import WebhookEndpointCreateParams

    from nobill.sandbox.api_versions import KNOWN_VERSIONS

    annotation = WebhookEndpointCreateParams.__annotations__["api_version"]
    listed = set(typing.get_args(typing.get_args(annotation)[0]))
    assert listed == KNOWN_VERSIONS


def test_error_doc_urls_point_at_the_code_page_as_stripe_does(client):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.test_helpers.test_clocks.create({})  # type: ignore[typeddict-item]
    assert caught.value.error.doc_url == "https://stripe.com/docs/error-codes/parameter-missing"


def test_a_request_without_key_is_401_and_any_sk_test_key_works_with_bearer_or_basic(sandbox):
    status, _, body = http(sandbox.url + "/v1/customers")
    assert status == 401
    assert json.loads(body)["error"]["message"].startswith("You did not provide an API key")
    status, _, _ = http(sandbox.url + "/v1/customers", headers={"Authorization": "Bearer sk_test_anything_at_all"})
    assert status == 200
    basic = base64.b64encode(b"sk_test_curl:").decode()
    status, _, _ = http(sandbox.url + "/v1/customers", headers={"Authorization": f"Basic {basic}"})
    assert status == 200


def test_unknown_parameters_are_rejected_like_stripe_top_level_and_nested(client, catalog):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.customers.create({"emial": "typo@example.com"})  # type: ignore[typeddict-unknown-key]
    assert caught.value.http_status == 400
    assert caught.value.param == "emial"
    assert caught.value.code == "parameter_unknown"
    assert caught.value.user_message == "Received unknown parameter: emial"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.prices.create(
            {"product": catalog.product.id, "currency": "usd", "unit_amount": 1, "recurring": {"interval": "month", "every": 2}}  # type: ignore[typeddict-unknown-key]
        )
    assert caught.value.param == "recurring[every]"
    assert caught.value.user_message == "Received unknown parameter: recurring[every]"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.subscriptions.create({"customer": "cus_x", "items": [{"price": "p", "qty": 1}]})  # type: ignore[typeddict-unknown-key]
    assert caught.value.param == "items[0][qty]"


def test_missing_required_parameters_and_bad_values(client, catalog):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.prices.create({"product": catalog.product.id, "unit_amount": 100})  # type: ignore[typeddict-item]
    assert (caught.value.code, caught.value.param, caught.value.user_message) == (
        "parameter_missing",
        "currency",
        "Missing required param: currency.",
    )
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.raw_request("post", "/v1/prices", product=catalog.product.id, currency="usd", unit_amount="ten")
    assert (caught.value.code, caught.value.param) == ("parameter_invalid_integer", "unit_amount")
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.prices.create({"product": catalog.product.id, "currency": "usd", "unit_amount": 1, "recurring": {"interval": "fortnight"}})
    assert caught.value.param == "recurring[interval]"
    assert "must be one of day, month, week, or year" in caught.value.user_message
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.products.create({"name": ""})
    assert (caught.value.code, caught.value.param) == ("parameter_invalid_empty", "name")
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.products.list({"active": "maybe"})  # type: ignore[typeddict-item]
    assert caught.value.param == "active"


def test_bad_ids_are_404_in_the_path_and_400_in_parameters(client):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.customers.retrieve("cus_doesnotexist")
    assert caught.value.http_status == 404
    assert caught.value.code == "resource_missing"
    assert caught.value.user_message == "No such customer: 'cus_doesnotexist'"
    assert caught.value.request_id.startswith("req_")
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.subscriptions.create({"customer": "cus_doesnotexist", "items": [{"price": "price_x"}]})
    assert caught.value.http_status == 400
    assert (caught.value.code, caught.value.param) == ("resource_missing", "customer")


def test_real_parameters_the_sandbox_does_not_model_fail_loudly(client):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.customers.create({"tax_id_data": [{"type": "eu_vat", "value": "FR123"}]})
    assert caught.value.param == "tax_id_data"
    assert "does not simulate" in caught.value.user_message


def test_error_objects_on_the_wire(sandbox):
    status, headers, body = http(
        sandbox.url + "/v1/customers",
        "POST",
        b"nickname=x",
        {"Authorization": "Bearer sk_test_x", "Content-Type": "application/x-www-form-urlencoded"},
    )
    error = json.loads(body)["error"]
    assert status == 400
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "parameter_unknown"
    assert error["param"] == "nickname"
    assert error["message"] == "Received unknown parameter: nickname"
    assert headers["Request-Id"].startswith("req_")
    status, _, body = http(sandbox.url + "/v1/nothing_here", headers={"Authorization": "Bearer sk_test_x"})
    assert status == 404
    assert json.loads(body)["error"]["message"].startswith("Unrecognized request URL (GET: /v1/nothing_here)")


def test_declined_payments_raise_card_error(client, control, catalog):
    customer = client.v1.customers.create({"payment_method": "pm_card_visa", "invoice_settings": {"default_payment_method": "pm_card_visa"}})
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.base.id}]})
    assert subscription.status == "active"
    control("POST", f"/_sandbox/customers/{customer.id}/payment_behavior", {"behavior": "decline"})
    with pytest.raises(stripe.CardError) as caught:
        client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": catalog.seat.id}], "payment_behavior": "error_if_incomplete"})
    assert caught.value.http_status == 402
    assert caught.value.code == "card_declined"
    with pytest.raises(stripe.CardError):
        client.v1.customers.create({"payment_method": "pm_card_chargeDeclined"})


def test_lists_page_newest_first_with_limit_starting_after_and_ending_before(client):
    created = [client.v1.customers.create({"email": f"p{i}@example.com"}).id for i in range(25)]
    newest_first = list(reversed(created))
    first = client.v1.customers.list({"limit": 10})
    assert first.object == "list" and first.url == "/v1/customers" and first.has_more
    assert [c.id for c in first.data] == newest_first[:10]
    second = client.v1.customers.list({"limit": 10, "starting_after": first.data[-1].id})
    assert [c.id for c in second.data] == newest_first[10:20] and second.has_more
    third = client.v1.customers.list({"limit": 10, "starting_after": second.data[-1].id})
    assert [c.id for c in third.data] == newest_first[20:] and not third.has_more
    back = client.v1.customers.list({"limit": 5, "ending_before": third.data[0].id})
    assert [c.id for c in back.data] == newest_first[15:20] and back.has_more
    assert [c.id for c in client.v1.customers.list({"limit": 7}).auto_paging_iter()] == newest_first
    assert len(client.v1.customers.list().data) == 10  # Stripe's default limit
    for bad in (0, 101):
        with pytest.raises(stripe.InvalidRequestError) as caught:
            client.v1.customers.list({"limit": bad})
        assert caught.value.param == "limit"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.customers.list({"starting_after": "cus_unknown"})
    assert caught.value.param == "starting_after"


def test_expand_replaces_ids_with_objects(client, control, catalog):
    customer = client.v1.customers.create({"email": "x@example.com", "payment_method": "pm_card_visa", "invoice_settings": {"default_payment_method": "pm_card_visa"}})
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": catalog.base.id}], "expand": ["latest_invoice", "customer"]}
    )
    assert isinstance(subscription.latest_invoice, stripe.Invoice)
    assert subscription.latest_invoice.status == "paid"
    assert isinstance(subscription.customer, stripe.Customer)
    retrieved = client.v1.subscriptions.retrieve(subscription.id, {"expand": ["items.data.price.product"]})
    assert isinstance(retrieved["items"].data[0].price.product, stripe.Product)
    listed = client.v1.subscriptions.list({"expand": ["data.customer"]})
    assert listed.data[0].customer.email == "x@example.com"
    price = client.v1.prices.retrieve(catalog.base.id, {"expand": ["product"]})
    assert price.product.name == "Pro"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.subscriptions.retrieve(subscription.id, {"expand": ["status"]})
    assert "cannot be expanded" in caught.value.user_message

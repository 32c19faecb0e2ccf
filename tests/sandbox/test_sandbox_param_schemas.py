"""The sandbox serves real Stripe endpoints and accepts only real Stripe parameters: every
route maps to a stripe-python service call, and every parameter name in its schema
(at any depth) is declared by stripe-python's typed parameters for that call."""

from __future__ import annotations

import re
import sys
import typing

import typing_extensions

import pytest
from stripe._request_options import RequestOptions

from pathlib import Path

from nobill.sandbox import routing
from nobill.sandbox.stripe_endpoints import STRIPE_V1_ENDPOINTS
from nobill.sandbox.params import Array, Hash, NotSimulated, Spec

# (method, path template) → (module of stripe.params, typed parameters class)
STRIPE_PARAMS = {
    ("POST", "/v1/customers"): ("stripe.params", "CustomerCreateParams"),
    ("GET", "/v1/customers/{customer}"): ("stripe.params", "CustomerRetrieveParams"),
    ("POST", "/v1/customers/{customer}"): ("stripe.params", "CustomerUpdateParams"),
    ("DELETE", "/v1/customers/{customer}"): ("stripe.params", "CustomerDeleteParams"),
    ("GET", "/v1/customers"): ("stripe.params", "CustomerListParams"),
    ("GET", "/v1/payment_methods/{payment_method}"): ("stripe.params", "PaymentMethodRetrieveParams"),
    ("GET", "/v1/payment_methods"): ("stripe.params", "PaymentMethodListParams"),
    ("POST", "/v1/payment_methods/{payment_method}/attach"): ("stripe.params", "PaymentMethodAttachParams"),
    ("POST", "/v1/payment_methods/{payment_method}/detach"): ("stripe.params", "PaymentMethodDetachParams"),
    ("GET", "/v1/customers/{customer}/payment_methods"): ("stripe.params", "CustomerPaymentMethodListParams"),
    ("GET", "/v1/customers/{customer}/payment_methods/{payment_method}"): ("stripe.params", "CustomerPaymentMethodRetrieveParams"),
    ("GET", "/v1/customers/search"): ("stripe.params", "CustomerSearchParams"),
    ("GET", "/v1/products/search"): ("stripe.params", "ProductSearchParams"),
    ("GET", "/v1/prices/search"): ("stripe.params", "PriceSearchParams"),
    ("POST", "/v1/products"): ("stripe.params", "ProductCreateParams"),
    ("GET", "/v1/products/{id}"): ("stripe.params", "ProductRetrieveParams"),
    ("POST", "/v1/products/{id}"): ("stripe.params", "ProductUpdateParams"),
    ("DELETE", "/v1/products/{id}"): ("stripe.params", "ProductDeleteParams"),
    ("GET", "/v1/products"): ("stripe.params", "ProductListParams"),
    ("POST", "/v1/prices"): ("stripe.params", "PriceCreateParams"),
    ("GET", "/v1/prices/{price}"): ("stripe.params", "PriceRetrieveParams"),
    ("POST", "/v1/prices/{price}"): ("stripe.params", "PriceUpdateParams"),
    ("GET", "/v1/prices"): ("stripe.params", "PriceListParams"),
    ("POST", "/v1/billing/meters"): ("stripe.params.billing", "MeterCreateParams"),
    ("GET", "/v1/billing/meters/{id}"): ("stripe.params.billing", "MeterRetrieveParams"),
    ("POST", "/v1/billing/meters/{id}"): ("stripe.params.billing", "MeterUpdateParams"),
    ("POST", "/v1/billing/meters/{id}/deactivate"): ("stripe.params.billing", "MeterDeactivateParams"),
    ("POST", "/v1/billing/meters/{id}/reactivate"): ("stripe.params.billing", "MeterReactivateParams"),
    ("GET", "/v1/billing/meters"): ("stripe.params.billing", "MeterListParams"),
    ("GET", "/v1/billing/meters/{id}/event_summaries"): ("stripe.params.billing", "MeterEventSummaryListParams"),
    ("POST", "/v1/billing/meter_events"): ("stripe.params.billing", "MeterEventCreateParams"),
    ("POST", "/v1/billing/meter_event_adjustments"): ("stripe.params.billing", "MeterEventAdjustmentCreateParams"),
    ("POST", "/v1/checkout/sessions"): ("stripe.params.checkout", "SessionCreateParams"),
    ("GET", "/v1/checkout/sessions/{session}"): ("stripe.params.checkout", "SessionRetrieveParams"),
    ("POST", "/v1/checkout/sessions/{session}/expire"): ("stripe.params.checkout", "SessionExpireParams"),
    ("GET", "/v1/checkout/sessions"): ("stripe.params.checkout", "SessionListParams"),
    ("GET", "/v1/checkout/sessions/{session}/line_items"): ("stripe.params.checkout", "SessionLineItemListParams"),
    ("POST", "/v1/subscriptions"): ("stripe.params", "SubscriptionCreateParams"),
    ("GET", "/v1/subscriptions/{subscription_exposed_id}"): ("stripe.params", "SubscriptionRetrieveParams"),
    ("POST", "/v1/subscriptions/{subscription_exposed_id}"): ("stripe.params", "SubscriptionUpdateParams"),
    ("DELETE", "/v1/subscriptions/{subscription_exposed_id}"): ("stripe.params", "SubscriptionCancelParams"),
    ("GET", "/v1/subscriptions"): ("stripe.params", "SubscriptionListParams"),
    ("POST", "/v1/subscriptions/{subscription}/resume"): ("stripe.params", "SubscriptionResumeParams"),
    ("POST", "/v1/subscription_items"): ("stripe.params", "SubscriptionItemCreateParams"),
    ("GET", "/v1/subscription_items/{item}"): ("stripe.params", "SubscriptionItemRetrieveParams"),
    ("POST", "/v1/subscription_items/{item}"): ("stripe.params", "SubscriptionItemUpdateParams"),
    ("DELETE", "/v1/subscription_items/{item}"): ("stripe.params", "SubscriptionItemDeleteParams"),
    ("GET", "/v1/subscription_items"): ("stripe.params", "SubscriptionItemListParams"),
    ("GET", "/v1/invoices/{invoice}"): ("stripe.params", "InvoiceRetrieveParams"),
    ("GET", "/v1/invoices"): ("stripe.params", "InvoiceListParams"),
    ("GET", "/v1/invoices/{invoice}/lines"): ("stripe.params", "InvoiceLineItemListParams"),
    ("POST", "/v1/invoices/{invoice}/pay"): ("stripe.params", "InvoicePayParams"),
    ("POST", "/v1/invoices/{invoice}/finalize"): ("stripe.params", "InvoiceFinalizeInvoiceParams"),
    ("POST", "/v1/invoices/{invoice}/void"): ("stripe.params", "InvoiceVoidInvoiceParams"),
    ("POST", "/v1/invoices/{invoice}/mark_uncollectible"): ("stripe.params", "InvoiceMarkUncollectibleParams"),
    ("POST", "/v1/invoices/create_preview"): ("stripe.params", "InvoiceCreatePreviewParams"),
    ("POST", "/v1/invoiceitems"): ("stripe.params", "InvoiceItemCreateParams"),
    ("GET", "/v1/invoiceitems/{invoiceitem}"): ("stripe.params", "InvoiceItemRetrieveParams"),
    ("POST", "/v1/invoiceitems/{invoiceitem}"): ("stripe.params", "InvoiceItemUpdateParams"),
    ("DELETE", "/v1/invoiceitems/{invoiceitem}"): ("stripe.params", "InvoiceItemDeleteParams"),
    ("GET", "/v1/invoiceitems"): ("stripe.params", "InvoiceItemListParams"),
    ("POST", "/v1/test_helpers/test_clocks"): ("stripe.params.test_helpers", "TestClockCreateParams"),
    ("GET", "/v1/test_helpers/test_clocks/{test_clock}"): ("stripe.params.test_helpers", "TestClockRetrieveParams"),
    ("GET", "/v1/test_helpers/test_clocks"): ("stripe.params.test_helpers", "TestClockListParams"),
    ("DELETE", "/v1/test_helpers/test_clocks/{test_clock}"): ("stripe.params.test_helpers", "TestClockDeleteParams"),
    ("POST", "/v1/test_helpers/test_clocks/{test_clock}/advance"): ("stripe.params.test_helpers", "TestClockAdvanceParams"),
    ("POST", "/v1/webhook_endpoints"): ("stripe.params", "WebhookEndpointCreateParams"),
    ("GET", "/v1/webhook_endpoints/{webhook_endpoint}"): ("stripe.params", "WebhookEndpointRetrieveParams"),
    ("POST", "/v1/webhook_endpoints/{webhook_endpoint}"): ("stripe.params", "WebhookEndpointUpdateParams"),
    ("DELETE", "/v1/webhook_endpoints/{webhook_endpoint}"): ("stripe.params", "WebhookEndpointDeleteParams"),
    ("GET", "/v1/webhook_endpoints"): ("stripe.params", "WebhookEndpointListParams"),
    ("POST", "/v1/billing_portal/configurations"): ("stripe.params.billing_portal", "ConfigurationCreateParams"),
    ("GET", "/v1/billing_portal/configurations/{configuration}"): ("stripe.params.billing_portal", "ConfigurationRetrieveParams"),
    ("POST", "/v1/billing_portal/configurations/{configuration}"): ("stripe.params.billing_portal", "ConfigurationUpdateParams"),
    ("GET", "/v1/billing_portal/configurations"): ("stripe.params.billing_portal", "ConfigurationListParams"),
    ("POST", "/v1/billing_portal/sessions"): ("stripe.params.billing_portal", "SessionCreateParams"),
    ("GET", "/v1/events"): ("stripe.params", "EventListParams"),
    ("GET", "/v1/events/{id}"): ("stripe.params", "EventRetrieveParams"),
}
REQUEST_OPTIONS = set(RequestOptions.__annotations__)


def annotation_text(annotation: object) -> str:
    text = getattr(annotation, "__forward_arg__", None) or repr(annotation)
    for argument in typing.get_args(annotation):
        text += " " + annotation_text(argument)
    return text


def typed_keys(classes: list[type]) -> dict[str, str]:
    keys: dict[str, str] = {}
    for cls in classes:
        for name, annotation in cls.__annotations__.items():
            if name not in REQUEST_OPTIONS:
                keys[name] = keys.get(name, "") + " " + annotation_text(annotation)
    return keys


def referenced_classes(annotation: str, module_name: str) -> list[type]:
    module = sys.modules[module_name]
    found = []
    for name in set(re.findall(r"[A-Z][A-Za-z0-9]+Params[A-Za-z0-9]*", annotation)):
        candidate = getattr(module, name, None)
        if isinstance(candidate, type) and typing_extensions.is_typeddict(candidate):
            found.append(candidate)
    return found


def unknown_names(spec: Spec, classes: list[type], path: str) -> list[str]:
    if isinstance(spec, Array):
        return unknown_names(spec.of, classes, path + "[]")
    if not isinstance(spec, Hash):
        return []
    keys = typed_keys(classes)
    problems = []
    for name, child in spec.fields.items():
        if name not in keys:
            problems.append(f"{path}[{name}]" if path else name)
            continue
        holds_object = isinstance(child, Hash) or (isinstance(child, Array) and isinstance(child.of, Hash))
        if holds_object and not isinstance(child, NotSimulated):
            nested = [c for cls in classes for c in referenced_classes(keys[name], cls.__module__)]
            if not nested:
                problems.append(f"{path}[{name}]: stripe-python declares no object here")
                continue
            problems += unknown_names(child, nested, f"{path}[{name}]" if path else name)
    return problems


def typed_params_class(module: str, name: str) -> type:
    import importlib

    return getattr(importlib.import_module(module), name)


def test_every_route_is_a_stripe_endpoint_we_know():
    served = {(r.method, r.template) for r in routing.load_routes()}
    assert served == set(STRIPE_PARAMS)
    real = {tuple(entry.split(" ", 1)) for entry in STRIPE_V1_ENDPOINTS}
    # Path parameter names are ours; compare the shapes.
    shape = lambda template: re.sub(r"\{\w+\}", "{}", template)  # noqa: E731
    assert {(m, shape(t)) for m, t in served} <= {(m, shape(t)) for m, t in real}


def stripe_python_endpoints() -> set[str]:
    import stripe

    found = set()
    for path in Path(stripe.__file__).parent.rglob("*_service.py"):
        for match in re.finditer(r'self\._request\(\s*"(get|post|delete)",\s*"(/v1/[^"]*)"', path.read_text(encoding="utf-8")):
            found.add(f"{match.group(1).upper()} {match.group(2)}")
    return found


def test_the_list_of_stripe_endpoints_is_the_one_stripe_python_calls():
    assert set(STRIPE_V1_ENDPOINTS) == stripe_python_endpoints()


def test_real_endpoints_the_sandbox_does_not_serve_are_refused_with_a_clear_400(client):
    import stripe

    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.coupons.create({"percent_off": 10})
    assert caught.value.http_status == 400
    assert "does not simulate POST /v1/coupons" in caught.value.user_message
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.subscriptions.migrate("sub_x", {"billing_mode": {"type": "flexible"}})
    assert caught.value.http_status == 400 and "/v1/subscriptions/{subscription}/migrate" in caught.value.user_message


@pytest.mark.parametrize(("method", "template"), sorted(STRIPE_PARAMS))
def test_every_accepted_parameter_is_a_real_stripe_parameter(method, template):
    route = next(r for r in routing.load_routes() if (r.method, r.template) == (method, template))
    params_class = typed_params_class(*STRIPE_PARAMS[(method, template)])
    assert unknown_names(route.schema, [params_class], "") == []


def test_the_check_itself_catches_an_invented_parameter():
    from nobill.sandbox.params import Str

    invented = Hash({"email": Str(), "recurring": Hash({"interval": Str(), "every": Str()}), "nickname_typo": Str()})
    from stripe.params import PriceCreateParams

    assert unknown_names(invented, [PriceCreateParams], "") == ["email", "recurring[every]", "nickname_typo"]

"""The customer portal: `/v1/billing_portal/configurations` (create, retrieve, update,
list) and `/v1/billing_portal/sessions` (create), and what a customer does in the portal
(`perform`): update the card, cancel or change a subscription, update their details.

Changes made in the portal go through the same billing engine as API calls and arrive as
the same webhooks (`payment_method.attached`, `customer.updated`,
`customer.subscription.updated`, invoices), with `request.id` null as Stripe sends for
changes the customer makes. A session's `url` opens a page that performs these actions;
`POST /_sandbox/billing_portal/sessions/{id}/actions` performs them from tests.

As in a Stripe account whose portal settings were saved in the Dashboard, a default
configuration exists (created on first use): invoice history, card updates, cancellation
at period end, and quantity changes with prorations.
"""

from __future__ import annotations

from typing import Any

from nobill.sandbox import errors, events, ids, lifecycle, objects, subscriptions
from nobill.sandbox.listing import newest_first, paginate
from nobill.sandbox.params import UNSET, Array, Bool, Enum, Hash, Metadata, Str, endpoint, list_endpoint, merge_metadata, or_none
from nobill.sandbox.payment_methods import attach_test_card
from nobill.sandbox.records import PortalConfigurationRecord, PortalSessionRecord, SubscriptionRecord
from nobill.sandbox.routing import Call, route
from nobill.sandbox.state import SandboxState

CUSTOMER_FIELDS = ("address", "email", "name", "phone", "shipping", "tax_id")
CANCELLATION_OPTIONS = ("customer_service", "low_quality", "missing_features", "other", "switched_service", "too_complex", "too_expensive", "unused")

FEATURES = Hash(
    {
        "customer_update": Hash({"allowed_updates": Array(Enum(*CUSTOMER_FIELDS), emptyable=True), "enabled": Bool()}),
        "invoice_history": Hash({"enabled": Bool()}, required=("enabled",)),
        "payment_method_update": Hash({"enabled": Bool()}, required=("enabled",), not_simulated=("payment_method_configuration",)),
        "subscription_cancel": Hash(
            {
                "cancellation_reason": Hash(
                    {"enabled": Bool(), "options": Array(Enum(*CANCELLATION_OPTIONS), emptyable=True)},
                    not_simulated=("feedback_options",),
                ),
                "enabled": Bool(),
                "mode": Enum("at_period_end", "immediately"),
                "proration_behavior": Enum("always_invoice", "create_prorations", "none"),
            }
        ),
        "subscription_update": Hash(
            {
                "default_allowed_updates": Array(Enum("price", "promotion_code", "quantity"), emptyable=True),
                "enabled": Bool(),
                "products": Array(Hash({"prices": Array(Str()), "product": Str()}, required=("prices", "product"), not_simulated=("adjustable_quantity",)), emptyable=True),
                "proration_behavior": Enum("always_invoice", "create_prorations", "none"),
            },
            not_simulated=("billing_cycle_anchor", "schedule_at_period_end", "trial_update_behavior"),
        ),
    },
    not_simulated=("subscription_pause",),
)
BUSINESS_PROFILE = Hash(
    {
        "headline": Str(max_length=60, emptyable=True),
        "privacy_policy_url": Str(emptyable=True),
        "terms_of_service_url": Str(emptyable=True),
    }
)
CONFIGURATION_FIELDS = {
    "business_profile": BUSINESS_PROFILE,
    "default_return_url": Str(emptyable=True),
    "features": FEATURES,
    "login_page": Hash({"enabled": Bool()}, required=("enabled",)),
    "metadata": Metadata(),
    "name": Str(max_length=256, emptyable=True),
}


def default_features() -> dict[str, Any]:
    return {
        "customer_update": {"allowed_updates": ["email", "address"], "enabled": True},
        "invoice_history": {"enabled": True},
        "payment_method_update": {"enabled": True, "payment_method_configuration": None},
        "subscription_cancel": {
            "cancellation_reason": {"enabled": False, "options": []},
            "enabled": True,
            "mode": "at_period_end",
            "proration_behavior": "none",
        },
        "subscription_update": {
            "billing_cycle_anchor": None,
            "default_allowed_updates": ["quantity"],
            "enabled": True,
            "products": [],
            "proration_behavior": "create_prorations",
            "schedule_at_period_end": {"conditions": []},
            "trial_update_behavior": "end_trial",
        },
    }


def _merge_features(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = {name: dict(value) for name, value in current.items()}
    for name, value in update.items():
        for key, item in value.items():
            if key == "cancellation_reason":
                merged[name][key] = {**merged[name][key], **{k: ([] if v is UNSET else v) for k, v in item.items()}}
            else:
                merged[name][key] = [] if item is UNSET else item
    return merged


def default_configuration(state: SandboxState) -> PortalConfigurationRecord:
    for configuration in state.portal_configurations.values():
        if configuration.is_default:
            return configuration
    now = state.real_now()
    configuration = PortalConfigurationRecord(id=ids.new_id("bpc"), created=now, updated=now, features=default_features(), is_default=True)
    state.portal_configurations[configuration.id] = configuration
    state.dirty = True
    return configuration


def _apply_configuration(state: SandboxState, configuration: PortalConfigurationRecord, params: dict[str, Any]) -> None:
    if "features" in params:
        for product_spec in params["features"].get("subscription_update", {}).get("products") or []:
            state.get_product(product_spec["product"], param="features[subscription_update][products][][product]")
            for price_id in product_spec["prices"]:
                price = state.get_price(price_id, param="features[subscription_update][products][][prices]")
                if price.product != product_spec["product"]:
                    raise errors.invalid_request(f"Price {price_id} does not belong to product {product_spec['product']}.")
        configuration.features = _merge_features(configuration.features, params["features"])
    if "business_profile" in params:
        configuration.business_profile.update({k: or_none(v) for k, v in params["business_profile"].items()})
    if "default_return_url" in params:
        configuration.default_return_url = or_none(params["default_return_url"])
    if "login_page" in params:
        configuration.login_page_enabled = params["login_page"]["enabled"]
    if "metadata" in params:
        configuration.metadata = merge_metadata(configuration.metadata, params["metadata"])
    if "name" in params:
        configuration.name = or_none(params["name"])


def render_configuration(state: SandboxState, record: PortalConfigurationRecord) -> dict[str, Any]:
    features = record.features
    return {
        "id": record.id,
        "object": "billing_portal.configuration",
        "active": record.active,
        "application": None,
        "business_profile": dict(record.business_profile),
        "created": record.created,
        "default_return_url": record.default_return_url,
        "features": {
            "customer_update": dict(features["customer_update"]),
            "invoice_history": dict(features["invoice_history"]),
            "payment_method_update": {"enabled": features["payment_method_update"]["enabled"], "payment_method_configuration": None},
            "subscription_cancel": {
                **features["subscription_cancel"],
                "cancellation_reason": dict(features["subscription_cancel"]["cancellation_reason"]),
            },
            "subscription_update": {
                **features["subscription_update"],
                "products": [
                    {"adjustable_quantity": {"enabled": False, "maximum": None, "minimum": 1}, "prices": list(p["prices"]), "product": p["product"]}
                    for p in features["subscription_update"]["products"]
                ],
            },
        },
        "is_default": record.is_default,
        "livemode": False,
        "login_page": {"enabled": record.login_page_enabled, "url": None},
        "metadata": dict(record.metadata),
        "name": record.name,
        "updated": record.updated,
    }


def render_session(state: SandboxState, record: PortalSessionRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "billing_portal.session",
        "configuration": record.configuration,
        "created": record.created,
        "customer": record.customer,
        "customer_account": None,
        "flow": None,
        "livemode": False,
        "locale": record.locale,
        "on_behalf_of": None,
        "return_url": record.return_url,
        "url": f"{state.base_url}/billing_portal/{record.id}",
    }


# -- configurations -------------------------------------------------------------------


@route("POST", "/v1/billing_portal/configurations", endpoint(CONFIGURATION_FIELDS, required=("features",)))
def create_configuration(call: Call) -> dict[str, Any]:
    state = call.state
    now = state.real_now()
    configuration = PortalConfigurationRecord(id=ids.new_id("bpc"), created=now, updated=now, features=default_features())
    # Features not named are off, as on Stripe.
    for name in ("customer_update", "payment_method_update", "subscription_cancel", "subscription_update", "invoice_history"):
        configuration.features[name]["enabled"] = False
    _apply_configuration(state, configuration, call.params)
    state.portal_configurations[configuration.id] = configuration
    state.dirty = True
    return render_configuration(state, configuration)


def _get_configuration(state: SandboxState, configuration_id: str, *, status: int = 404, param: str = "configuration") -> PortalConfigurationRecord:
    configuration = state.portal_configurations.get(configuration_id)
    if configuration is None:
        raise errors.no_such("billing_portal.configuration", configuration_id, status=status, param=param)
    return configuration


@route("GET", "/v1/billing_portal/configurations/{configuration}", endpoint({}))
def retrieve_configuration(call: Call) -> dict[str, Any]:
    return render_configuration(call.state, _get_configuration(call.state, call.path_args["configuration"]))


@route("POST", "/v1/billing_portal/configurations/{configuration}", endpoint({**CONFIGURATION_FIELDS, "active": Bool()}))
def update_configuration(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params
    configuration = _get_configuration(state, call.path_args["configuration"])
    if params.get("active") is False and configuration.is_default:
        raise errors.invalid_request("The default configuration cannot be deactivated.", param="active")
    _apply_configuration(state, configuration, params)
    if "active" in params:
        configuration.active = params["active"]
    configuration.updated = state.real_now()
    state.dirty = True
    return render_configuration(state, configuration)


@route("GET", "/v1/billing_portal/configurations", list_endpoint({"active": Bool(), "is_default": Bool()}))
def list_configurations(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params
    default_configuration(state)
    rows = newest_first(
        state.portal_configurations,
        lambda c: all(name not in params or getattr(c, name) == params[name] for name in ("active", "is_default")),
    )
    return paginate(
        rows,
        params,
        url="/v1/billing_portal/configurations",
        render=lambda c: render_configuration(state, c),
        collection=state.portal_configurations,
        resource="billing_portal.configuration",
    )


# -- sessions -------------------------------------------------------------------------


@route(
    "POST",
    "/v1/billing_portal/sessions",
    endpoint(
        {"configuration": Str(), "customer": Str(), "locale": Str(), "return_url": Str()},
        not_simulated=("customer_account", "flow_data", "on_behalf_of"),
    ),
)
def create_session(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params
    if "customer" not in params:
        raise errors.missing_parameter("customer")
    customer = state.get_customer(params["customer"], param="customer")
    if "configuration" in params:
        configuration = _get_configuration(state, params["configuration"], status=400)
        if not configuration.active:
            raise errors.invalid_request("The configuration is not active.", param="configuration")
    else:
        configuration = default_configuration(state)
    session = PortalSessionRecord(
        id=ids.new_id("bps"),
        created=state.now(customer.test_clock),
        customer=customer.id,
        configuration=configuration.id,
        return_url=params.get("return_url") or configuration.default_return_url,
        locale=params.get("locale"),
    )
    state.portal_sessions[session.id] = session
    state.dirty = True
    return render_session(state, session)


# -- what the customer does in the portal ---------------------------------------------------

ACTIONS = ("update_payment_method", "cancel_subscription", "update_subscription", "update_customer")


def _customer_subscription(state: SandboxState, session: PortalSessionRecord, subscription_id: Any) -> SubscriptionRecord:
    subscription = state.subscriptions.get(str(subscription_id))
    if subscription is None or subscription.customer != session.customer or subscription.status in subscriptions.ENDED:
        raise errors.invalid_request(f"The customer has no live subscription {subscription_id}.", param="subscription")
    state.check_clock_ready(subscription.test_clock)
    return subscription


def _feature(configuration: PortalConfigurationRecord, name: str) -> dict[str, Any]:
    feature: dict[str, Any] = configuration.features[name]
    if not feature.get("enabled"):
        raise errors.invalid_request(f"The portal configuration {configuration.id} does not enable {name}.", param="action")
    return feature


def perform(state: SandboxState, session_id: str, action: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Do what the customer does in the portal (state lock held); returns the changed object."""
    session = state.portal_sessions.get(session_id)
    if session is None:
        raise errors.no_such("billing_portal.session", session_id, status=404)
    configuration = state.portal_configurations[session.configuration]
    customer = state.get_customer(session.customer)
    state.check_clock_ready(customer.test_clock)
    now = state.now(customer.test_clock)
    if action == "update_payment_method":
        _feature(configuration, "payment_method_update")
        card = attach_test_card(state, customer, str(payload.get("card", "pm_card_visa")), param="card", now=now)
        before = objects.customer(state, customer)
        customer.invoice_settings["default_payment_method"] = card.id
        events.emit_updated(state, "customer.updated", before, objects.customer(state, customer), created=now)
        for subscription in state.subscriptions.values():
            if subscription.customer == customer.id and subscription.default_payment_method and subscription.status not in subscriptions.ENDED:
                previous = objects.subscription(state, subscription)
                subscription.default_payment_method = card.id
                events.emit_updated(state, "customer.subscription.updated", previous, objects.subscription(state, subscription), created=now)
        state.dirty = True
        return objects.payment_method(state, card)
    if action == "cancel_subscription":
        feature = _feature(configuration, "subscription_cancel")
        subscription = _customer_subscription(state, session, payload.get("subscription"))
        reason = payload.get("reason")
        if reason is not None and (not feature["cancellation_reason"]["enabled"] or reason not in feature["cancellation_reason"]["options"]):
            raise errors.invalid_request(f"The portal does not offer the cancellation reason {reason!r}.", param="reason")
        if feature["mode"] == "immediately":
            lifecycle.cancel(
                state, subscription, now, reason="cancellation_requested", prorate=feature["proration_behavior"] != "none", feedback=reason
            )
        else:
            before = objects.subscription(state, subscription)
            subscription.cancel_at_period_end = True
            subscription.cancel_at = subscription.current_period_end
            subscription.canceled_at = now
            subscription.cancellation_details = {"comment": None, "feedback": reason, "reason": "cancellation_requested"}
            state.dirty = True
            events.emit_updated(state, "customer.subscription.updated", before, objects.subscription(state, subscription), created=now)
        return objects.subscription(state, subscription)
    if action == "update_subscription":
        feature = _feature(configuration, "subscription_update")
        subscription = _customer_subscription(state, session, payload.get("subscription"))
        change = _portal_change(state, subscription, feature, payload)
        before = objects.subscription(state, subscription)
        before_change = lifecycle.snapshot(state, subscription)
        behavior = feature["proration_behavior"]
        outcome = lifecycle.change_items(state, subscription, [change], now=now, proration_behavior=behavior)
        subscriptions.finish_change(
            state, subscription, before, before_change, now=now, outcome=outcome, credit_unused=False,
            proration_behavior=behavior, payment_behavior="allow_incomplete",
        )
        return objects.subscription(state, subscription)
    if action == "update_customer":
        feature = _feature(configuration, "customer_update")
        before = objects.customer(state, customer)
        for name, value in payload.items():
            if name in ("action",):
                continue
            if name not in ("email", "name", "phone") or name not in feature["allowed_updates"]:
                raise errors.invalid_request(f"The portal does not let customers update {name}.", param=name)
            setattr(customer, name, value)
        state.dirty = True
        after = objects.customer(state, customer)
        events.emit_updated(state, "customer.updated", before, after, created=now)
        return after
    raise errors.invalid_request(f"Unknown portal action {action!r}; one of: {', '.join(ACTIONS)}.", param="action")


def _portal_change(state: SandboxState, subscription: SubscriptionRecord, feature: dict[str, Any], payload: dict[str, Any]) -> lifecycle.ItemChange:
    """The item change a customer picks in the portal: a quantity and/or a configured price."""
    licensed = [item for item in state.items_of(subscription) if item.quantity is not None]
    if not licensed:
        raise errors.invalid_request("The subscription has no item whose quantity or price a customer can change.")
    item = licensed[0]
    allowed = feature["default_allowed_updates"]
    price = None
    if "price" in payload:
        offered = {price_id for product in feature["products"] for price_id in product["prices"]}
        if "price" not in allowed or payload["price"] not in offered:
            raise errors.invalid_request(f"The portal does not offer the price {payload['price']}.", param="price")
        price = state.get_price(str(payload["price"]), param="price")
    quantity = payload.get("quantity")
    if quantity is not None and ("quantity" not in allowed or not isinstance(quantity, int) or quantity < 1):
        raise errors.invalid_request("The portal does not allow this quantity change.", param="quantity")
    if price is None and quantity is None:
        raise errors.missing_parameter("quantity")
    return lifecycle.ItemChange(item=item, price=price, quantity=quantity, param="items[0]")

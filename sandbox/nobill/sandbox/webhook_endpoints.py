"""Webhook endpoints: `/v1/webhook_endpoints` create (answers with the `whsec_` secret),
retrieve, update, delete, list. Delivery itself is in `webhook_delivery.py`."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from nobill.sandbox import api_versions, errors, ids, objects
from nobill.sandbox.events import EMITTED_EVENT_TYPES
from nobill.sandbox.listing import newest_first, paginate
from nobill.sandbox.params import Array, Bool, Metadata, Str, endpoint, list_endpoint, merge_metadata, or_none
from nobill.sandbox.records import WebhookEndpointRecord
from nobill.sandbox.routing import Call, route
from nobill.sandbox.settings import API_VERSION

# Real Stripe event types of the families NOBill touches that the sandbox never emits;
# endpoints may still subscribe to them, as on Stripe.
OTHER_STRIPE_EVENT_TYPES = (
    "billing.alert.triggered",
    "billing.credit_balance_transaction.created",
    "billing.credit_grant.created",
    "billing.credit_grant.updated",
    "charge.captured",
    "charge.dispute.closed",
    "charge.dispute.created",
    "charge.dispute.funds_reinstated",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.updated",
    "charge.expired",
    "charge.failed",
    "charge.pending",
    "charge.refund.updated",
    "charge.refunded",
    "charge.succeeded",
    "charge.updated",
    "checkout.session.async_payment_failed",
    "checkout.session.async_payment_succeeded",
    "customer.discount.created",
    "customer.discount.deleted",
    "customer.discount.updated",
    "customer.source.created",
    "customer.source.deleted",
    "customer.source.expiring",
    "customer.source.updated",
    "customer.tax_id.created",
    "customer.tax_id.deleted",
    "customer.tax_id.updated",
    "entitlements.active_entitlement_summary.updated",
    "invoice.finalization_failed",
    "invoice.overdue",
    "invoice.overpaid",
    "invoice.payment_action_required",
    "invoice.payment_attempt_required",
    "invoice.sent",
    "invoice.upcoming",
    "invoice.will_be_due",
    "invoice_payment.paid",
    "payment_intent.amount_capturable_updated",
    "payment_intent.canceled",
    "payment_intent.created",
    "payment_intent.partially_funded",
    "payment_intent.payment_failed",
    "payment_intent.processing",
    "payment_intent.requires_action",
    "payment_intent.succeeded",
    "payment_method.automatically_updated",
    "payment_method.updated",
    "plan.created",
    "plan.deleted",
    "plan.updated",
    "price.deleted",
    "setup_intent.canceled",
    "setup_intent.created",
    "setup_intent.requires_action",
    "setup_intent.setup_failed",
    "setup_intent.succeeded",
    "subscription_schedule.aborted",
    "subscription_schedule.canceled",
    "subscription_schedule.completed",
    "subscription_schedule.created",
    "subscription_schedule.expiring",
    "subscription_schedule.released",
    "subscription_schedule.updated",
    "test_helpers.test_clock.internal_failure",
)
ACCEPTED_EVENT_TYPES = frozenset(("*",) + EMITTED_EVENT_TYPES + OTHER_STRIPE_EVENT_TYPES)


def _check_url(url: str, param: str = "url") -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise errors.invalid_request(f"Invalid URL: {url}. URLs must begin with http:// or https://", param=param)
    return url


def _check_events(enabled: list[str]) -> list[str]:
    if not enabled:
        raise errors.missing_parameter("enabled_events")
    for index, name in enumerate(enabled):
        if name not in ACCEPTED_EVENT_TYPES:
            raise errors.invalid_request(
                f"Invalid enabled_events[{index}]: must be one of the Stripe event types, or '*' ('{name}' is not).",
                param=f"enabled_events[{index}]",
            )
    return list(dict.fromkeys(enabled))


@route(
    "POST",
    "/v1/webhook_endpoints",
    endpoint(
        {
            "api_version": Str(),
            "connect": Bool(),
            "description": Str(max_length=5000, emptyable=True),
            "enabled_events": Array(Str()),
            "metadata": Metadata(),
            "url": Str(max_length=5000),
        },
        required=("enabled_events", "url"),
    ),
)
def create_webhook_endpoint(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params
    if params.get("connect"):
        raise errors.not_simulated("connect")
    api_versions.check(params.get("api_version"), param="api_version")
    endpoint_record = WebhookEndpointRecord(
        id=ids.new_id("we"),
        created=state.real_now(),
        url=_check_url(params["url"]),
        enabled_events=_check_events(params["enabled_events"]),
        secret=ids.secret(),
        description=or_none(params.get("description")),
        metadata=merge_metadata({}, params["metadata"]) if params.get("metadata") else {},
        api_version=params.get("api_version"),
    )
    state.webhook_endpoints[endpoint_record.id] = endpoint_record
    state.dirty = True
    return objects.webhook_endpoint(state, endpoint_record, with_secret=True)


@route("GET", "/v1/webhook_endpoints/{webhook_endpoint}", endpoint({}))
def retrieve_webhook_endpoint(call: Call) -> dict[str, Any]:
    record = call.state.get_webhook_endpoint(call.path_args["webhook_endpoint"], status=404, param="webhook_endpoint")
    return objects.webhook_endpoint(call.state, record)


@route(
    "POST",
    "/v1/webhook_endpoints/{webhook_endpoint}",
    endpoint(
        {
            "description": Str(max_length=5000, emptyable=True),
            "disabled": Bool(),
            "enabled_events": Array(Str()),
            "metadata": Metadata(),
            "url": Str(max_length=5000),
        }
    ),
)
def update_webhook_endpoint(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params
    record = state.get_webhook_endpoint(call.path_args["webhook_endpoint"], status=404, param="webhook_endpoint")
    if "url" in params:
        record.url = _check_url(params["url"])
    if "enabled_events" in params:
        record.enabled_events = _check_events(params["enabled_events"])
    if "description" in params:
        record.description = or_none(params["description"])
    if "metadata" in params:
        record.metadata = merge_metadata(record.metadata, params["metadata"])
    if "disabled" in params:
        record.status = "disabled" if params["disabled"] else "enabled"
    state.dirty = True
    return objects.webhook_endpoint(state, record)


@route("DELETE", "/v1/webhook_endpoints/{webhook_endpoint}", endpoint({}, expand=False))
def delete_webhook_endpoint(call: Call) -> dict[str, Any]:
    state = call.state
    record = state.get_webhook_endpoint(call.path_args["webhook_endpoint"], status=404, param="webhook_endpoint")
    del state.webhook_endpoints[record.id]
    state.dirty = True
    return objects.deleted(record.id, "webhook_endpoint")


@route("GET", "/v1/webhook_endpoints", list_endpoint({}))
def list_webhook_endpoints(call: Call) -> dict[str, Any]:
    state = call.state
    return paginate(
        newest_first(state.webhook_endpoints),
        call.params,
        url="/v1/webhook_endpoints",
        render=lambda record: objects.webhook_endpoint(state, record),
        collection=state.webhook_endpoints,
        resource="webhook_endpoint",
    )

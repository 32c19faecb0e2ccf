"""Customers: `/v1/customers` create, retrieve, update, delete, list."""

from __future__ import annotations

import re
from typing import Any

from nobill.sandbox import errors, events, ids, lifecycle, objects
from nobill.sandbox.listing import newest_first, paginate
from nobill.sandbox.params import (
    CREATED_FILTER,
    Array,
    Enum,
    Hash,
    Int,
    Metadata,
    Str,
    endpoint,
    in_range,
    list_endpoint,
    merge_metadata,
    or_none,
)
from nobill.sandbox.payment_methods import attach_test_card
from nobill.sandbox.records import CustomerRecord
from nobill.sandbox.routing import Call, route
from nobill.sandbox.state import SandboxState

MAX_CUSTOMERS_PER_TEST_CLOCK = 3
_INVOICE_PREFIX = re.compile(r"^[A-Z0-9]{3,12}$")

ADDRESS_FIELDS = {name: Str(max_length=200) for name in ("city", "country", "line1", "line2", "postal_code", "state")}
ADDRESS = Hash(ADDRESS_FIELDS, emptyable=True)
SHIPPING = Hash(
    {"address": Hash(ADDRESS_FIELDS), "name": Str(max_length=5000), "phone": Str(max_length=5000)},
    required=("address", "name"),
    emptyable=True,
)
INVOICE_SETTINGS = Hash(
    {
        "custom_fields": Array(
            Hash({"name": Str(max_length=40), "value": Str(max_length=140)}, required=("name", "value")),
            max_items=4,
            emptyable=True,
        ),
        "default_payment_method": Str(),
        "footer": Str(),
    },
    not_simulated=("rendering_options",),
)
CUSTOMER_FIELDS = {
    "address": ADDRESS,
    "balance": Int(),
    "description": Str(),
    "email": Str(max_length=512),
    "invoice_prefix": Str(),
    "invoice_settings": INVOICE_SETTINGS,
    "metadata": Metadata(),
    "name": Str(max_length=256),
    "next_invoice_sequence": Int(minimum=1),
    "phone": Str(max_length=20),
    "preferred_locales": Array(Str()),
    "shipping": SHIPPING,
    "tax_exempt": Enum("exempt", "none", "reverse", emptyable=True),
}
# Real Stripe parameters that change tax, Connect or legacy-source behaviour the sandbox
# does not model.
NOT_SIMULATED_COMMON = ("business_name", "cash_balance", "individual_name", "source", "tax", "validate")

CUSTOMER_CREATE = endpoint(
    {**CUSTOMER_FIELDS, "payment_method": Str(), "test_clock": Str()},
    not_simulated=NOT_SIMULATED_COMMON + ("tax_id_data",),
)
CUSTOMER_UPDATE = endpoint(CUSTOMER_FIELDS, not_simulated=NOT_SIMULATED_COMMON + ("default_source",))


def _apply_fields(state: SandboxState, customer: CustomerRecord, params: dict[str, Any], *, new_card: tuple[str, str] | None) -> None:
    for name in ("description", "email", "name", "phone"):
        if name in params:
            setattr(customer, name, or_none(params[name]))
    if "address" in params:
        customer.address = or_none(params["address"])
    if "shipping" in params:
        customer.shipping = or_none(params["shipping"])
    if "balance" in params:
        customer.balance = params["balance"]
    if "metadata" in params:
        customer.metadata = merge_metadata(customer.metadata, params["metadata"])
    if "preferred_locales" in params:
        customer.preferred_locales = list(params["preferred_locales"])
    if "tax_exempt" in params:
        customer.tax_exempt = params["tax_exempt"] or "none"
    if "next_invoice_sequence" in params:
        customer.next_invoice_sequence = params["next_invoice_sequence"]
    if "invoice_prefix" in params:
        if not _INVOICE_PREFIX.match(params["invoice_prefix"]):
            raise errors.invalid_request(
                "Invalid invoice_prefix: must be 3-12 uppercase letters or numbers.", param="invoice_prefix"
            )
        customer.invoice_prefix = params["invoice_prefix"]
    settings = params.get("invoice_settings")
    if settings:
        if "custom_fields" in settings:
            customer.invoice_settings["custom_fields"] = or_none(settings["custom_fields"])
        if "footer" in settings:
            customer.invoice_settings["footer"] = settings["footer"]
        if "default_payment_method" in settings:
            wanted = settings["default_payment_method"]
            if new_card is not None and wanted == new_card[0]:
                # `payment_method=pm_card_visa` with `default_payment_method=pm_card_visa`
                # names the card this request attached, as in Stripe's test-clock guides.
                wanted = new_card[1]
            card = state.payment_methods.get(wanted)
            if card is None or card.customer != customer.id:
                raise errors.invalid_request(
                    f"The customer does not have a payment method with the ID {wanted}. "
                    "The payment method must be attached to the customer.",
                    param="invoice_settings[default_payment_method]",
                    code="resource_missing",
                )
            customer.invoice_settings["default_payment_method"] = card.id


@route("POST", "/v1/customers", CUSTOMER_CREATE)
def create_customer(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params
    clock_id = params.get("test_clock")
    if clock_id is not None:
        state.get_test_clock(clock_id, param="test_clock")
        state.check_clock_ready(clock_id)
        attached = sum(1 for c in state.customers.values() if c.test_clock == clock_id and not c.deleted)
        if attached >= MAX_CUSTOMERS_PER_TEST_CLOCK:
            raise errors.invalid_request(
                f"A test clock can have at most {MAX_CUSTOMERS_PER_TEST_CLOCK} customers.", param="test_clock"
            )
    now = state.now(clock_id)
    customer = CustomerRecord(id=ids.new_id("cus"), created=now, invoice_prefix=ids.invoice_prefix(), test_clock=clock_id)
    new_card = None
    if "payment_method" in params:
        card = attach_test_card(state, customer, params["payment_method"], param="payment_method", now=now, announce=False)
        new_card = (params["payment_method"], card.id)
    try:
        _apply_fields(state, customer, params, new_card=new_card)
    except errors.StripeError:
        if new_card is not None:
            state.payment_methods.pop(new_card[1], None)
        raise
    state.customers[customer.id] = customer
    state.dirty = True
    rendered = objects.customer(state, customer)
    events.emit(state, "customer.created", rendered, created=now)
    if new_card is not None:
        card = state.payment_methods[new_card[1]]
        events.emit(state, "payment_method.attached", objects.payment_method(state, card), created=now)
    return rendered


@route("GET", "/v1/customers/{customer}", endpoint({}))
def retrieve_customer(call: Call) -> dict[str, Any]:
    customer_id = call.path_args["customer"]
    customer = call.state.customers.get(customer_id)
    if customer is None:
        raise errors.no_such("customer", customer_id, status=404, param="id")
    if customer.deleted:
        return objects.deleted(customer.id, "customer")
    return objects.customer(call.state, customer)


@route("POST", "/v1/customers/{customer}", CUSTOMER_UPDATE)
def update_customer(call: Call) -> dict[str, Any]:
    state = call.state
    customer = state.get_customer(call.path_args["customer"], status=404, param="id")
    state.check_clock_ready(customer.test_clock)
    before = objects.customer(state, customer)
    _apply_fields(state, customer, call.params, new_card=None)
    state.dirty = True
    after = objects.customer(state, customer)
    events.emit_updated(state, "customer.updated", before, after, created=state.now(customer.test_clock))
    return after


@route("DELETE", "/v1/customers/{customer}", endpoint({}, expand=False))
def delete_customer(call: Call) -> dict[str, Any]:
    state = call.state
    customer = state.get_customer(call.path_args["customer"], status=404, param="id")
    state.check_clock_ready(customer.test_clock)
    delete(state, customer)
    return objects.deleted(customer.id, "customer")


def delete(state: SandboxState, customer: CustomerRecord) -> None:
    """Deleting a customer cancels its subscriptions at once, as on Stripe."""
    now = state.now(customer.test_clock)
    for subscription in list(state.subscriptions.values()):
        if subscription.customer == customer.id and subscription.status not in ("canceled", "incomplete_expired"):
            lifecycle.cancel(state, subscription, now, reason="cancellation_requested")
    rendered = objects.customer(state, customer)
    customer.deleted = True
    state.dirty = True
    events.emit(state, "customer.deleted", rendered, created=now)


@route(
    "GET",
    "/v1/customers",
    list_endpoint({"created": CREATED_FILTER, "email": Str(max_length=512), "test_clock": Str()}),
)
def list_customers(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params

    def keep(customer: CustomerRecord) -> bool:
        return (
            not customer.deleted
            and ("email" not in params or customer.email == params["email"])
            and ("test_clock" not in params or customer.test_clock == params["test_clock"])
            and in_range(customer.created, params.get("created"))
        )

    return paginate(
        newest_first(state.customers, keep),
        params,
        url="/v1/customers",
        render=lambda customer: objects.customer(state, customer),
        collection=state.customers,
        resource="customer",
    )


"""Invoice items (`/v1/invoiceitems`): one-off charges and credits for a customer's next
invoice, or added to a draft invoice. Prorations made by subscription changes are
invoice items too, and are listed here."""

from __future__ import annotations

from typing import Any

from nobill.sandbox import errors, events, ids, objects
from nobill.sandbox.billing_periods import line_amount
from nobill.sandbox.invoicing import line_from_item
from nobill.sandbox.listing import newest_first, paginate
from nobill.sandbox.params import (
    CREATED_FILTER,
    Bool,
    DecimalString,
    Hash,
    Int,
    Metadata,
    Str,
    endpoint,
    in_range,
    list_endpoint,
    merge_metadata,
)
from nobill.sandbox.records import InvoiceItemRecord
from nobill.sandbox.routing import Call, route
from nobill.sandbox.state import SandboxState

NOT_SIMULATED = ("discounts", "price_data", "quantity_decimal", "tax_behavior", "tax_code", "tax_rates")
FIELDS = {
    "amount": Int(),
    "description": Str(max_length=500),
    "discountable": Bool(),
    "metadata": Metadata(),
    "period": Hash({"end": Int(), "start": Int()}, required=("end", "start")),
    "pricing": Hash({"price": Str()}),
    "quantity": Int(minimum=0),
    "unit_amount_decimal": DecimalString(minimum=None),
}
CREATE = endpoint(
    {**FIELDS, "currency": Str(), "customer": Str(), "invoice": Str(), "subscription": Str()},
    not_simulated=NOT_SIMULATED + ("customer_account",),
)
UPDATE = endpoint(FIELDS, not_simulated=NOT_SIMULATED + ("invoicing_rules",))


def _price_amount(state: SandboxState, record: InvoiceItemRecord, params: dict[str, Any]) -> None:
    """Set amount, currency, price and unit amount from whichever way the caller priced it."""
    pricing = params.get("pricing") or {}
    ways = [name for name in ("amount", "unit_amount_decimal") if name in params] + (["pricing[price]"] if "price" in pricing else [])
    if len(ways) > 1:
        raise errors.invalid_request(f"You may only specify one of these parameters: {', '.join(ways)}.", param=ways[1])
    if "quantity" in params:
        record.quantity = params["quantity"]
    if "price" in pricing:
        price = state.get_price(pricing["price"], param="pricing[price]")
        if price.type != "one_time":
            raise errors.invalid_request(
                "The price specified is a recurring price; invoice items only accept one-time prices.", param="pricing[price]"
            )
        record.price, record.currency, record.unit_amount_decimal = price.id, price.currency, price.unit_amount_decimal
    elif "unit_amount_decimal" in params:
        record.price, record.unit_amount_decimal = None, str(params["unit_amount_decimal"])
    elif "amount" in params:
        record.price, record.unit_amount_decimal = None, None
        record.amount = params["amount"]
        if "quantity" in params and params["quantity"] != 1:
            raise errors.invalid_request("`quantity` cannot be set with `amount`; use `unit_amount_decimal` instead.", param="quantity")
    if record.unit_amount_decimal is not None:
        record.amount = line_amount(record.unit_amount_decimal, record.quantity)


def _sync_line(state: SandboxState, record: InvoiceItemRecord) -> None:
    """An item on a draft invoice is one of its lines: keep the line in step."""
    if record.invoice is None:
        return
    invoice = state.invoices[record.invoice]
    invoice.lines = [line for line in invoice.lines if line.invoice_item != record.id] + [line_from_item(record)]


def _editable(state: SandboxState, record: InvoiceItemRecord) -> None:
    invoice = state.invoices.get(record.invoice or "")
    if invoice is not None and invoice.status != "draft":
        raise errors.invalid_request(
            f"Invoice item {record.id} is on invoice {invoice.id}, which is no longer a draft; it cannot be changed."
        )


@route("POST", "/v1/invoiceitems", CREATE)
def create_invoice_item(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params
    if "customer" not in params:
        raise errors.missing_parameter("customer")
    customer = state.get_customer(params["customer"], param="customer")
    state.check_clock_ready(customer.test_clock)
    now = state.now(customer.test_clock)
    pricing = params.get("pricing") or {}
    if not any(name in params for name in ("amount", "unit_amount_decimal")) and "price" not in pricing:
        raise errors.missing_parameter("amount")
    record = InvoiceItemRecord(
        id=ids.new_id("ii"),
        created=now,
        customer=customer.id,
        amount=0,
        currency=(params.get("currency") or customer.currency or "").lower(),
        description=params.get("description") or "",
        period_start=now,
        period_end=now,
        test_clock=customer.test_clock,
        metadata=merge_metadata({}, params["metadata"]) if params.get("metadata") else {},
        discountable=params.get("discountable", True),
    )
    _price_amount(state, record, params)
    if not record.currency:
        raise errors.missing_parameter("currency")
    if "period" in params:
        record.period_start, record.period_end = params["period"]["start"], params["period"]["end"]
    if "subscription" in params:
        subscription = state.get_subscription(params["subscription"], param="subscription")
        if subscription.customer != customer.id:
            raise errors.invalid_request("The subscription belongs to another customer.", param="subscription")
        record.subscription = subscription.id
    if "invoice" in params:
        invoice = state.get_invoice(params["invoice"], param="invoice")
        if invoice.customer != customer.id or invoice.status != "draft":
            raise errors.invalid_request("Invoice items can only be added to a draft invoice of the same customer.", param="invoice")
        record.invoice = invoice.id
    if customer.currency is not None and record.currency != customer.currency:
        raise errors.invalid_request(
            f"You cannot combine currencies on a single customer. This customer has had a subscription or payment in "
            f"{customer.currency}, but you are trying to pay in {record.currency}.",
            param="currency",
        )
    if not record.description:
        product = state.products.get(state.prices[record.price].product) if record.price else None
        record.description = product.name if product else "Invoice item"
    state.invoice_items[record.id] = record
    _sync_line(state, record)
    state.dirty = True
    rendered = objects.invoice_item(state, record)
    events.emit(state, "invoiceitem.created", rendered, created=now)
    return rendered


def _get(state: SandboxState, item_id: str) -> InvoiceItemRecord:
    record = state.invoice_items.get(item_id)
    if record is None:
        raise errors.no_such("invoiceitem", item_id, status=404, param="invoiceitem")
    return record


@route("GET", "/v1/invoiceitems/{invoiceitem}", endpoint({}))
def retrieve_invoice_item(call: Call) -> dict[str, Any]:
    return objects.invoice_item(call.state, _get(call.state, call.path_args["invoiceitem"]))


@route("POST", "/v1/invoiceitems/{invoiceitem}", UPDATE)
def update_invoice_item(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params
    record = _get(state, call.path_args["invoiceitem"])
    _editable(state, record)
    state.check_clock_ready(record.test_clock)
    _price_amount(state, record, params)
    if "description" in params:
        record.description = params["description"]
    if "discountable" in params:
        record.discountable = params["discountable"]
    if "metadata" in params:
        record.metadata = merge_metadata(record.metadata, params["metadata"])
    if "period" in params:
        record.period_start, record.period_end = params["period"]["start"], params["period"]["end"]
    _sync_line(state, record)
    state.dirty = True
    return objects.invoice_item(state, record)


@route("DELETE", "/v1/invoiceitems/{invoiceitem}", endpoint({}, expand=False))
def delete_invoice_item(call: Call) -> dict[str, Any]:
    state = call.state
    record = _get(state, call.path_args["invoiceitem"])
    _editable(state, record)
    state.check_clock_ready(record.test_clock)
    rendered = objects.invoice_item(state, record)
    if record.invoice is not None:
        invoice = state.invoices[record.invoice]
        invoice.lines = [line for line in invoice.lines if line.invoice_item != record.id]
    del state.invoice_items[record.id]
    state.dirty = True
    events.emit(state, "invoiceitem.deleted", rendered, created=state.now(record.test_clock))
    return objects.deleted(record.id, "invoiceitem")


@route(
    "GET",
    "/v1/invoiceitems",
    list_endpoint(
        {"created": CREATED_FILTER, "customer": Str(), "invoice": Str(), "pending": Bool()},
        not_simulated=("customer_account",),
    ),
)
def list_invoice_items(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params

    def keep(record: InvoiceItemRecord) -> bool:
        return (
            ("customer" not in params or record.customer == params["customer"])
            and ("invoice" not in params or record.invoice == params["invoice"])
            and ("pending" not in params or (record.invoice is None) == params["pending"])
            and in_range(record.created, params.get("created"))
        )

    return paginate(
        newest_first(state.invoice_items, keep),
        params,
        url="/v1/invoiceitems",
        render=lambda record: objects.invoice_item(state, record),
        collection=state.invoice_items,
        resource="invoiceitem",
    )



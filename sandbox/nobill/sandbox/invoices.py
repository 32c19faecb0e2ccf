"""Invoices: retrieve, list, lines, and the manual actions (pay, finalize, void,
mark uncollectible). Invoices are created by the billing engine (`lifecycle.py`)."""

from __future__ import annotations

from typing import Any

from nobill.sandbox import errors, invoicing, lifecycle, objects
from nobill.sandbox.listing import newest_first, paginate
from nobill.sandbox.params import CREATED_FILTER, Bool, Enum, Str, endpoint, in_range, list_endpoint
from nobill.sandbox.records import InvoiceRecord
from nobill.sandbox.routing import Call, route


@route("GET", "/v1/invoices/{invoice}", endpoint({}))
def retrieve_invoice(call: Call) -> dict[str, Any]:
    return objects.invoice(call.state, call.state.get_invoice(call.path_args["invoice"], status=404, param="invoice"))


@route(
    "GET",
    "/v1/invoices",
    list_endpoint(
        {
            "collection_method": Enum("charge_automatically", "send_invoice"),
            "created": CREATED_FILTER,
            "customer": Str(),
            "status": Enum("draft", "open", "paid", "uncollectible", "void"),
            "subscription": Str(),
        },
        not_simulated=("customer_account", "due_date"),
    ),
)
def list_invoices(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params

    def keep(invoice: InvoiceRecord) -> bool:
        return (
            all(name not in params or getattr(invoice, name) == params[name] for name in ("customer", "status", "subscription"))
            and params.get("collection_method", "charge_automatically") == "charge_automatically"
            and in_range(invoice.created, params.get("created"))
        )

    return paginate(
        newest_first(state.invoices, keep),
        params,
        url="/v1/invoices",
        render=lambda invoice: objects.invoice(state, invoice),
        collection=state.invoices,
        resource="invoice",
    )


@route("GET", "/v1/invoices/{invoice}/lines", list_endpoint({}))
def list_invoice_lines(call: Call) -> dict[str, Any]:
    state = call.state
    invoice = state.get_invoice(call.path_args["invoice"], status=404, param="invoice")
    # Lines keep their order on the invoice (oldest first).
    return paginate(
        invoice.lines,
        call.params,
        url=f"/v1/invoices/{invoice.id}/lines",
        render=lambda line: objects.invoice_line(state, invoice, line),
        resource="line_item",
    )


@route(
    "POST",
    "/v1/invoices/{invoice}/pay",
    endpoint(
        {"forgive": Bool(), "off_session": Bool(), "paid_out_of_band": Bool(), "payment_method": Str()},
        not_simulated=("mandate", "source"),
    ),
)
def pay_invoice(call: Call) -> dict[str, Any]:
    state, params = call.state, call.params
    invoice = state.get_invoice(call.path_args["invoice"], status=404, param="invoice")
    state.check_clock_ready(invoice.test_clock)
    now = state.now(invoice.test_clock)
    if invoice.status == "paid":
        raise errors.invalid_request("Invoice is already paid")
    if invoice.status == "void":
        raise errors.invalid_request("You cannot pay a void invoice.")
    if invoice.status == "draft":
        invoicing.finalize(state, invoice, now)
    if params.get("paid_out_of_band"):
        lifecycle.record_out_of_band_payment(state, invoice, now)
        return objects.invoice(state, invoice)
    subscription = state.subscriptions.get(invoice.subscription or "")
    if "payment_method" in params:
        card = state.payment_methods.get(params["payment_method"])
        if card is None or card.customer != invoice.customer:
            raise errors.invalid_request(
                f"No such PaymentMethod: '{params['payment_method']}'", param="payment_method", code="resource_missing"
            )
        if subscription is not None:
            subscription.default_payment_method = card.id
    outcome = lifecycle.charge(state, invoice, now)
    if not outcome.paid:
        if outcome.reason == "no_payment_method":
            raise errors.invalid_request(
                "This customer has no attached payment source or default payment method.", code="invoice_no_customer_payment_method"
            )
        raise errors.card_declined()
    return objects.invoice(state, invoice)


@route("POST", "/v1/invoices/{invoice}/finalize", endpoint({"auto_advance": Bool()}))
def finalize_invoice(call: Call) -> dict[str, Any]:
    state = call.state
    invoice = state.get_invoice(call.path_args["invoice"], status=404, param="invoice")
    state.check_clock_ready(invoice.test_clock)
    if invoice.status != "draft":
        raise errors.invalid_request("This invoice is already finalized, you can't re-finalize a non-draft invoice.")
    now = state.now(invoice.test_clock)
    invoice.auto_advance = call.params.get("auto_advance", invoice.auto_advance)
    if invoice.auto_advance:
        lifecycle.finalize_and_charge(state, invoice, now)
    else:
        invoicing.finalize(state, invoice, now)
    return objects.invoice(state, invoice)


@route("POST", "/v1/invoices/{invoice}/void", endpoint({}))
def void_invoice(call: Call) -> dict[str, Any]:
    state = call.state
    invoice = state.get_invoice(call.path_args["invoice"], status=404, param="invoice")
    state.check_clock_ready(invoice.test_clock)
    if invoice.status != "open":
        raise errors.invalid_request(f"You can only void open invoices; this invoice is `{invoice.status}`.")
    invoicing.void(state, invoice, state.now(invoice.test_clock))
    return objects.invoice(state, invoice)


@route("POST", "/v1/invoices/{invoice}/mark_uncollectible", endpoint({}))
def mark_invoice_uncollectible(call: Call) -> dict[str, Any]:
    state = call.state
    invoice = state.get_invoice(call.path_args["invoice"], status=404, param="invoice")
    state.check_clock_ready(invoice.test_clock)
    if invoice.status != "open":
        raise errors.invalid_request(f"You can only mark open invoices uncollectible; this invoice is `{invoice.status}`.")
    invoicing.mark_uncollectible(state, invoice, state.now(invoice.test_clock))
    return objects.invoice(state, invoice)

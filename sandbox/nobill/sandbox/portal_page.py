"""The customer portal page a billing portal session's `url` points at: the customer's
subscriptions, card and invoices, with forms that perform `billing_portal.perform`."""

from __future__ import annotations

import html
from urllib.parse import parse_qs

from nobill.sandbox import errors, objects
from nobill.sandbox.billing_periods import format_money
from nobill.sandbox.billing_portal import perform
from nobill.sandbox.checkout_page import _page
from nobill.sandbox.gateway import Response
from nobill.sandbox.state import SandboxState


def render(state: SandboxState, session_id: str, notice: str = "") -> Response:
    with state.lock:
        session = state.portal_sessions.get(session_id)
        if session is None:
            return _page("Portal session not found", "<p>This link is not valid.</p>", 404)
        customer = state.customers[session.customer]
        features = state.portal_configurations[session.configuration].features
        parts = [f"<p><b>{html.escape(notice)}</b></p>"] if notice else []
        parts.append(f"<p>{html.escape(customer.email or customer.id)}</p><h2>Subscriptions</h2>")
        for subscription in state.subscriptions.values():
            if subscription.customer != customer.id or subscription.status in ("canceled", "incomplete_expired"):
                continue
            items = ", ".join(
                f"{item.quantity if item.quantity is not None else 'metered'} × {html.escape(state.prices[item.price].product)}"
                for item in state.items_of(subscription)
            )
            forms = ""
            if features["subscription_update"]["enabled"] and "quantity" in features["subscription_update"]["default_allowed_updates"]:
                forms += (
                    f"<form method='post'><input type='hidden' name='action' value='update_subscription'>"
                    f"<input type='hidden' name='subscription' value='{subscription.id}'>"
                    "<label>Quantity <input name='quantity' type='number' min='1'></label><button>Update</button></form>"
                )
            if features["subscription_cancel"]["enabled"] and not subscription.cancel_at_period_end:
                forms += (
                    f"<form method='post'><input type='hidden' name='action' value='cancel_subscription'>"
                    f"<input type='hidden' name='subscription' value='{subscription.id}'><button>Cancel plan</button></form>"
                )
            parts.append(f"<p>{html.escape(subscription.id)} ({html.escape(subscription.status)}): {items}</p>{forms}")
        if features["payment_method_update"]["enabled"]:
            card = state.default_payment_method(None, customer)
            label = f"{card.brand} •••• {card.last4}" if card else "none"
            parts.append(
                f"<h2>Payment method</h2><p>{html.escape(label)}</p><form method='post'>"
                "<input type='hidden' name='action' value='update_payment_method'>"
                "<button name='card' value='pm_card_visa'>Use a card that works (4242)</button>"
                "<button name='card' value='pm_card_chargeCustomerFail'>Use a card that declines (0341)</button></form>"
            )
        if features["invoice_history"]["enabled"]:
            rows = "".join(
                f"<tr><td>{html.escape(invoice.number or invoice.id)}</td><td>{html.escape(invoice.status)}</td>"
                f"<td>{html.escape(format_money(str(objects.invoice(state, invoice)['total']), invoice.currency))}</td></tr>"
                for invoice in reversed(list(state.invoices.values()))
                if invoice.customer == customer.id and invoice.status != "draft"
            )
            parts.append(f"<h2>Invoices</h2><table>{rows}</table>")
        if session.return_url:
            parts.append(f"<p><a href='{html.escape(session.return_url)}'>Return</a></p>")
        return _page("Billing", "".join(parts))


def submit(state: SandboxState, session_id: str, body: bytes) -> Response:
    form = {k: v[0] for k, v in parse_qs(body.decode("utf-8")).items()}
    payload: dict[str, object] = dict(form)
    if "quantity" in form:
        try:
            payload["quantity"] = int(form["quantity"])
        except ValueError:
            return render(state, session_id, "The quantity must be a whole number.")
    try:
        with state.lock:
            perform(state, session_id, form.get("action", ""), payload)
    except errors.StripeError as error:
        return render(state, session_id, error.message)
    return render(state, session_id, "Saved.")

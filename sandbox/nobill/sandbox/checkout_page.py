"""The hosted Checkout page a session's `url` points at: a summary and buttons that
complete the session as a customer would, then redirect to `success_url`."""

from __future__ import annotations

import html
from urllib.parse import parse_qs

from nobill.sandbox import errors, objects
from nobill.sandbox.checkout import complete_session
from nobill.sandbox.billing_periods import format_money
from nobill.sandbox.gateway import Response
from nobill.sandbox.state import SandboxState

_BUTTONS = (
    ("succeeded", "Pay with a card that works (4242 4242 4242 4242)"),
    ("decline_later", "Pay with a card that declines later charges (4000 0000 0000 0341)"),
    ("card_declined", "Try a card that is declined (4000 0000 0000 0002)"),
)


def _page(title: str, body: str, status: int = 200) -> Response:
    document = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}"
        "button{display:block;margin:.5rem 0;padding:.6rem 1rem;font-size:1rem}"
        "td{padding:.2rem .8rem .2rem 0}</style></head>"
        f"<body><p><small>NOBill Stripe sandbox: test mode</small></p><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return Response(status, document.encode("utf-8"), content_type="text/html; charset=utf-8")


def render(state: SandboxState, session_id: str) -> Response:
    with state.lock:
        session = state.checkout_sessions.get(session_id)
        if session is None:
            return _page("Checkout session not found", "<p>This link is not valid.</p>", 404)
        if session.status != "open":
            return _page("Checkout session closed", f"<p>This session is {html.escape(session.status)}.</p>", 410)
        rows = []
        for index in range(len(session.line_items)):
            item = objects.checkout_line_item(state, session, index)
            price = item["price"]
            quantity = "metered" if item["quantity"] is None else str(item["quantity"])
            rows.append(
                f"<tr><td>{html.escape(item['description'] or '')}</td><td>{quantity}</td>"
                f"<td>{html.escape(format_money(price['unit_amount_decimal'], price['currency']))} / "
                f"{html.escape(price['recurring']['interval'])}</td></tr>"
            )
        trial = session.subscription_data.get("trial_period_days") or session.subscription_data.get("trial_end")
        due = format_money(str(session.amount_total), session.currency)
        buttons = "".join(
            f"<button name='outcome' value='{value}'>{html.escape(label)}</button>" for value, label in _BUTTONS
        )
        if session.payment_method_collection == "if_required" and session.amount_total == 0:
            buttons += "<button name='outcome' value='no_payment_method'>Start the trial without a card</button>"
        email = html.escape(session.customer_email or "")
        cancel = f"<p><a href='{html.escape(session.cancel_url)}'>Cancel</a></p>" if session.cancel_url else ""
        body = (
            f"<table>{''.join(rows)}</table>"
            f"<p>{'Free trial. ' if trial else ''}Due today: <b>{html.escape(due)}</b></p>"
            f"<form method='post'><label>Email <input name='email' value='{email}'></label>{buttons}</form>{cancel}"
        )
        return _page("Subscribe", body)


def submit(state: SandboxState, session_id: str, body: bytes) -> Response:
    form = {k: v[0] for k, v in parse_qs(body.decode("utf-8")).items()}
    with state.lock:
        session = state.checkout_sessions.get(session_id)
        if session is None:
            return _page("Checkout session not found", "<p>This link is not valid.</p>", 404)
        try:
            complete_session(state, session, form.get("outcome", "succeeded"), email=form.get("email") or None)
        except errors.StripeError as error:
            return _page("Payment failed", f"<p>{html.escape(error.message)}</p><p><a href=''>Try again</a></p>", 402 if error.status == 402 else 400)
        target = session.success_url
    if not target:
        return _page("Thank you", "<p>Your subscription has started.</p>")
    location = target.replace("{CHECKOUT_SESSION_ID}", session_id)
    return Response(303, b"", [("Location", location)], content_type="text/plain")

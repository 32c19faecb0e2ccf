"""Invoices as Stripe reports them (invoice webhooks), for ListInvoices."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert

from nobill.billing.tables import invoices
from nobill.db.unit_of_work import UnitOfWork


def _timestamp(value: Any) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(value, dt.timezone.utc) if isinstance(value, int) else None


def subscription_of(invoice: dict[str, Any]) -> str | None:
    """The subscription an invoice bills (since 2025-03-31.basil under parent.subscription_details)."""
    parent = invoice.get("parent") or {}
    details = parent.get("subscription_details") or {}
    subscription = details.get("subscription") or invoice.get("subscription")
    if isinstance(subscription, dict):
        return subscription.get("id")
    return subscription


def apply_invoice_snapshot(*, uow: UnitOfWork, org_id: str, invoice: dict[str, Any]) -> None:
    """Store the invoice as Stripe has it now (re-read, so the latest state wins)."""
    created = int(invoice["created"])
    values = {
        "org_id": org_id,
        "invoice_id": invoice["id"],
        "stripe_subscription_id": subscription_of(invoice),
        "number": invoice.get("number"),
        "status": invoice.get("status") or "draft",
        "currency": invoice.get("currency") or "usd",
        "amount_due": int(invoice.get("amount_due") or 0),
        "amount_paid": int(invoice.get("amount_paid") or 0),
        "period_start": _timestamp(invoice.get("period_start")),
        "period_end": _timestamp(invoice.get("period_end")),
        "created_at": _timestamp(created),
        "hosted_invoice_url": invoice.get("hosted_invoice_url"),
        "updated_at": dt.datetime.now(dt.timezone.utc),
        "sort_key": f"{created:012d}:{invoice['id']}",
    }
    statement = pg_insert(invoices).values(**values)
    uow.execute(
        statement.on_conflict_do_update(
            index_elements=["org_id", "invoice_id"],
            set_={key: statement.excluded[key] for key in values if key not in ("org_id", "invoice_id")},
        )
    )

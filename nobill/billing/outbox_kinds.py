"""The Stripe outbox's kinds: one explicit table of what runs each kind of row. A kind
that is added here is all there is to it; nothing registers itself by being imported.

Two shapes (nobill/billing/outbox.py, module docstring): a plain handler
`f(*, uow, gateway, row)` runs inside the row's own unit of work; a staged one
(prepare, call, record) holds no transaction while Stripe answers."""

from __future__ import annotations

from nobill.billing import customers, drift, enterprise, seats
from nobill.billing.outbox import Handler, StagedHandler

HANDLERS: dict[str, Handler] = {
    "create_customer": customers.create_customer,
    "set_enterprise_price": enterprise.create_price,
    drift.CORRECT_ITEMS: drift.correct_items,
}

STAGED: dict[str, StagedHandler] = {
    "sync_seats": seats.SYNC_SEATS,
}

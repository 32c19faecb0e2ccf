"""The webhook inbox under row-level security: IngestStripeEvents (through the real server)
routes each event at intake by the customer it names into that org's stripe_events, which
no other org and no unbound unit of work can read; an event whose customer no org owns
waits without its body in stripe_unrouted_events until its customer is recorded (then it
moves to the org and applies), or its retention ends. An event id stays unique across both
homes: a redelivery before or after routing is a duplicate."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select, text

from billing_helpers import BillingWorld, wait_for
from nobill.billing import accounts, inbox
from nobill.billing.tables import stripe_event_ids, stripe_unrouted_events
from nobill.db.unit_of_work import UnitOfWork
from nobill.stripe.webhooks import sign
from nobill.v1 import billing_pb2, billing_pb2_grpc
from support import bearer

R = billing_pb2


def _event(event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"evt_tenancy_{uuid.uuid4().hex}", "object": "event", "api_version": "2026-10-28.endive",
        "created": int(time.time()), "livemode": False, "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None}, "type": event_type, "data": {"object": obj},
    }


def _ingest(world: BillingWorld, *events: dict[str, Any]) -> list[int]:
    """IngestStripeEvents as the sidecar calls it; the outcome of each delivery."""
    deliveries = []
    for event in events:
        payload = json.dumps(event).encode()
        deliveries.append(R.StripeWebhookDelivery(payload=payload, signature_header=sign(payload, world.webhook_secret)))
    stub = billing_pb2_grpc.BillingServiceStub(world.channel)
    answer = stub.IngestStripeEvents(R.IngestStripeEventsRequest(deliveries=deliveries),
                                     metadata=bearer(world.ingest_token()), timeout=20)
    return [result.outcome for result in answer.results]


def _bodies(world: BillingWorld, event_id: str, org_id: str | None) -> list[Any]:
    """The bodies of `event_id` the app role can read in a unit of work bound to `org_id` (or to none)."""
    with UnitOfWork(world.database, org_id=org_id) as uow:
        return list(uow.execute(text("SELECT payload FROM stripe_events WHERE event_id = :id"), {"id": event_id}).scalars())


@pytest.fixture(scope="module")
def two_orgs(billing: BillingWorld) -> list[tuple[str, str]]:
    made = []
    for _ in range(2):
        _, org_id = billing.new_org()
        made.append((org_id, billing.customer_id(org_id)))
    return made


def test_a_routed_event_is_readable_only_in_its_orgs_unit_of_work(billing: BillingWorld, two_orgs) -> None:  # noqa: ANN001
    (org_a, customer_a), (org_b, customer_b) = two_orgs
    mine = _event("customer.updated", {"id": customer_a, "object": "customer", "email": "billing@a.example"})
    theirs = _event("customer.updated", {"id": customer_b, "object": "customer", "email": "billing@b.example"})

    assert _ingest(billing, mine, theirs) == [R.STRIPE_DELIVERY_OUTCOME_STORED] * 2  # one batch, two orgs

    [body] = _bodies(billing, mine["id"], org_a)
    assert body["data"]["object"]["email"] == "billing@a.example"
    assert _bodies(billing, mine["id"], org_b) == [], "another org cannot read it"
    assert _bodies(billing, mine["id"], None) == [], "nor can a unit of work bound to no org"
    assert [b["id"] for b in _bodies(billing, theirs["id"], org_b)] == [theirs["id"]]
    records = inbox.find(database=billing.database, event_ids=[mine["id"], theirs["id"]])
    assert {event_id: (r.org_id, r.state) for event_id, r in records.items()} == {
        mine["id"]: (org_a, "ignored"), theirs["id"]: (org_b, "ignored")}


def _stranger(world: BillingWorld) -> tuple[str, str, str]:
    """An org whose Stripe customer exists on Stripe but is not recorded in NOBill yet (the
    commit was lost), with a subscription on it: (org id, outbox row id, customer id)."""
    from nobill.billing import customers, outbox
    from nobill.stripe.gateway import StripeGateway
    from test_customers_and_outbox import _org_without_enqueue

    org_id, row_id = _org_without_enqueue(world)
    with UnitOfWork(world.database, org_id=org_id) as uow:  # rolled back: Stripe knows it, NOBill does not
        row = outbox.lock_pending(uow=uow, outbox_id=row_id)
        assert row is not None
        customers.create_customer(uow=uow, gateway=StripeGateway.from_settings(world.settings), row=row)
        customer_id = accounts.stripe_customer_id(uow=uow, org_id=org_id)
    assert customer_id
    return org_id, row_id, customer_id


def test_an_unrouted_event_waits_without_its_body_and_moves_to_its_org_once_routed(billing: BillingWorld) -> None:
    from nobill.billing import outbox
    from nobill.stripe.gateway import StripeGateway

    org_id, row_id, customer = _stranger(billing)
    base = billing.stripe.v1.prices.list({"lookup_keys": ["nobill_starter_base_monthly"]}).data[0]
    created = billing.stripe.v1.subscriptions.create({"customer": customer, "items": [{"price": base.id}], "trial_period_days": 7})
    handled = _event("customer.subscription.updated", {"id": created.id, "object": "subscription", "customer": customer})
    ignored = _event("customer.updated", {"id": customer, "object": "customer", "email": "secret@example.com"})

    assert _ingest(billing, handled, ignored) == [R.STRIPE_DELIVERY_OUTCOME_STORED] * 2
    with UnitOfWork(billing.database) as uow:
        waiting = uow.execute(
            select(stripe_unrouted_events.c.event_id, stripe_unrouted_events.c.target_kind, stripe_unrouted_events.c.target_id)
            .where(stripe_unrouted_events.c.event_id.in_([handled["id"], ignored["id"]]))
        ).all()
        assert [tuple(row) for row in waiting] == [(handled["id"], "subscription", created.id)], "the ignored one keeps only its id"
        assert uow.execute(select(func.count()).select_from(stripe_event_ids).where(
            stripe_event_ids.c.event_id.in_([handled["id"], ignored["id"]]), stripe_event_ids.c.org_id.is_(None))).scalar_one() == 2
    assert _bodies(billing, handled["id"], org_id) == [] and _bodies(billing, handled["id"], None) == []
    assert _ingest(billing, handled, ignored) == [R.STRIPE_DELIVERY_OUTCOME_DUPLICATE] * 2, "a redelivery while unrouted"

    # The customer is recorded (the outbox row runs again): what waited for it moves and applies.
    assert outbox.run(database=billing.database, gateway=StripeGateway.from_settings(billing.settings),
                      org_id=org_id, outbox_id=row_id) == "done"

    def applied() -> inbox.EventRecord | None:
        record = inbox.find(database=billing.database, event_ids=[handled["id"]])[handled["id"]]
        return record if record.state == "applied" else None

    record = wait_for(applied, timeout=30, what="the routed event to apply")
    assert record.org_id == org_id
    with UnitOfWork(billing.database, org_id=org_id) as uow:
        assert accounts.get(uow=uow, org_id=org_id).stripe_subscription_id == created.id
    with UnitOfWork(billing.database) as uow:
        assert uow.execute(select(func.count()).select_from(stripe_unrouted_events).where(
            stripe_unrouted_events.c.stripe_customer_id == customer)).scalar_one() == 0
    assert _ingest(billing, handled) == [R.STRIPE_DELIVERY_OUTCOME_DUPLICATE], "a redelivery after routing"


def test_unrouted_events_are_deleted_after_their_retention_and_stay_duplicates(billing: BillingWorld, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(inbox, "send", lambda *args, **kwargs: None)  # this test's own sweep sends nothing
    orphan = _event("invoice.paid", {"id": "in_nobodys", "object": "invoice", "customer": f"cus_nobody_{uuid.uuid4().hex[:8]}"})
    assert _ingest(billing, orphan) == [R.STRIPE_DELIVERY_OUTCOME_STORED]
    received = inbox.find(database=billing.database, event_ids=[orphan["id"]])[orphan["id"]].received_at
    retention = dt.timedelta(days=7)

    inbox.sweep(database=billing.database, now=received + retention - dt.timedelta(seconds=1), unrouted_retention=retention)
    assert inbox.find(database=billing.database, event_ids=[orphan["id"]])[orphan["id"]].state in ("pending", "parked")

    inbox.sweep(database=billing.database, now=received + retention + dt.timedelta(seconds=1), unrouted_retention=retention)
    record = inbox.find(database=billing.database, event_ids=[orphan["id"]])[orphan["id"]]
    assert (record.state, record.org_id) == ("expired", None), "only its id is left"
    assert _ingest(billing, orphan) == [R.STRIPE_DELIVERY_OUTCOME_DUPLICATE]

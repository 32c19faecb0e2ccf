"""The batch apply (inbox_apply.apply_events), called directly on events stored through the
real inbox, against the real database and the Stripe sandbox: one unit of work per org,
each distinct Stripe object re-read once however many events name it, every pending event
of the org covered, an unknown customer or a refused object holding back nothing else, and
Stripe's changes audited as reported by the last event that named them."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import update

from billing_helpers import BillingWorld, audit_events, control
from nobill.billing import accounts, inbox, inbox_apply
from nobill.billing.tables import subscriptions
from nobill.db.unit_of_work import UnitOfWork
from nobill.stripe.errors import StripeTransient
from nobill.stripe.gateway import StripeGateway
from nobill.stripe.webhooks import sign
from nobill.v1 import common_pb2
from support import Client


class CountingGateway:
    """The real gateway, counting the re-reads the apply makes."""

    def __init__(self, gateway: StripeGateway) -> None:
        self._gateway = gateway
        self.reads: Counter[str] = Counter()

    def retrieve_subscription(self, subscription_id: str) -> Any:
        self.reads[subscription_id] += 1
        return self._gateway.retrieve_subscription(subscription_id)

    def retrieve_invoice(self, invoice_id: str) -> Any:
        self.reads[invoice_id] += 1
        return self._gateway.retrieve_invoice(invoice_id)


class Org:
    def __init__(self, world: BillingWorld) -> None:
        self.owner: Client
        self.owner, self.org_id = world.new_org()
        world.subscribe(self.owner, self.org_id, common_pb2.PLAN_PRO)
        self.customer = world.customer_id(self.org_id)
        with UnitOfWork(world.database, org_id=self.org_id) as uow:
            subscription_id = accounts.get(uow=uow, org_id=self.org_id).stripe_subscription_id
        assert subscription_id
        self.subscription = subscription_id
        self.invoice = world.stripe.v1.subscriptions.retrieve(subscription_id).latest_invoice

    def subscription_event(self, **lies: Any) -> dict:
        # The event's copy of the object is never trusted: `lies` must not matter.
        return _event("customer.subscription.updated", {"id": self.subscription, "object": "subscription", "customer": self.customer, **lies})

    def invoice_event(self) -> dict:
        return _event("invoice.paid", {"id": self.invoice, "object": "invoice", "customer": self.customer})


def _event(event_type: str, obj: dict) -> dict:
    return {
        "id": f"evt_apply_{uuid.uuid4().hex}", "object": "event", "api_version": "2026-10-28.endive",
        "created": int(time.time()), "livemode": False, "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None}, "type": event_type, "data": {"object": obj},
    }


@pytest.fixture(scope="module")
def orgs(billing: BillingWorld) -> list[Org]:
    made = [Org(billing) for _ in range(3)]
    billing.wait_settled()
    return made


@pytest.fixture
def store(billing: BillingWorld, monkeypatch) -> Iterator[Any]:  # noqa: ANN001
    """Store events through the inbox with the apply message held back, so the test (not
    the world's worker) applies them."""
    sent: list[Any] = []
    monkeypatch.setattr(inbox, "send", lambda *args, **kwargs: sent.append(args))

    def stored(*events: dict) -> list[str]:
        deliveries = []
        for event in events:
            payload = json.dumps(event).encode()
            deliveries.append(inbox.Delivery(payload, sign(payload, billing.webhook_secret)))
        with UnitOfWork(billing.database) as uow:
            results = inbox.ingest_batch(uow=uow, deliveries=deliveries, secrets=billing.settings.stripe_webhook_secrets)
            uow.commit()
        assert all(result.outcome == inbox.STORED for result in results)
        return [event["id"] for event in events]

    yield stored


def _apply(world: BillingWorld, gateway: Any, event_ids: list[str], *, max_attempts: int = 3) -> Counter[str]:
    return inbox_apply.apply_events(
        database=world.database, gateway=gateway, event_ids=event_ids, max_attempts=max_attempts, seat_sync_delay=1
    )


def _rows(world: BillingWorld, event_ids: list[str]) -> dict[str, inbox.EventRecord]:
    return inbox.find(database=world.database, event_ids=event_ids)


@pytest.fixture
def gateway(billing: BillingWorld) -> CountingGateway:
    return CountingGateway(StripeGateway.from_settings(billing.settings))


def test_a_batch_spanning_several_orgs_reads_each_object_once(billing: BillingWorld, orgs: list[Org], store, gateway) -> None:  # noqa: ANN001
    events = []
    for org in orgs:
        events += [org.subscription_event(status="canceled"), org.subscription_event(), org.subscription_event()]
    events.append(orgs[0].invoice_event())
    event_ids = store(*events)

    assert _apply(billing, gateway, event_ids) == Counter({"applied": len(events)})

    assert gateway.reads == Counter({org.subscription: 1 for org in orgs} | {orgs[0].invoice: 1})
    rows = _rows(billing, event_ids)
    assert {row.state for row in rows.values()} == {"applied"}
    assert {event["id"]: rows[event["id"]].org_id for event in events} == {
        event["id"]: org.org_id for org in orgs for event in events if event["data"]["object"]["customer"] == org.customer
    }
    for org in orgs:  # the lie in the event's copy changed nothing
        assert billing.subscription(org.owner, org.org_id).status != common_pb2.SUBSCRIPTION_STATUS_CANCELED


def test_pending_events_of_the_org_outside_the_message_are_covered_by_its_read(billing: BillingWorld, orgs: list[Org], store, gateway) -> None:  # noqa: ANN001
    first, second = store(orgs[1].subscription_event(), orgs[1].subscription_event())

    assert _apply(billing, gateway, [first]) == Counter({"applied": 2})
    assert _apply(billing, gateway, [second]) == Counter(), "already applied: nothing to do"

    assert gateway.reads == Counter({orgs[1].subscription: 1})
    assert {row.state for row in _rows(billing, [first, second]).values()} == {"applied"}


def test_an_unknown_customer_does_not_hold_back_the_others(billing: BillingWorld, orgs: list[Org], store, gateway) -> None:  # noqa: ANN001
    stranger = _event("customer.subscription.updated", {"id": "sub_nobodys", "object": "subscription", "customer": "cus_nobodys"})
    known, unknown = store(orgs[2].subscription_event(), stranger)

    with pytest.raises(inbox_apply.UnknownCustomer):
        _apply(billing, gateway, [unknown, known])  # raised so the message is retried...
    rows = _rows(billing, [known, unknown])
    assert rows[known].state == "applied", "...but the known customer's event is applied meanwhile"
    assert (rows[unknown].state, rows[unknown].attempts) == ("pending", 1)
    assert "cus_nobodys" in (rows[unknown].reason or "")

    assert _apply(billing, gateway, [unknown, known], max_attempts=2) == Counter({"parked": 1})
    assert _rows(billing, [unknown])[unknown].state == "parked"
    assert gateway.reads == Counter({orgs[2].subscription: 1})


def test_an_object_stripe_refuses_parks_only_its_events(billing: BillingWorld, orgs: list[Org], store, gateway) -> None:  # noqa: ANN001
    org = orgs[0]
    missing = _event("customer.subscription.updated", {"id": "sub_deleted_long_ago", "object": "subscription", "customer": org.customer})
    gone, fine = store(missing, org.subscription_event())

    assert _apply(billing, gateway, [gone, fine]) == Counter({"applied": 1, "parked": 1})

    rows = _rows(billing, [gone, fine])
    assert rows[fine].state == "applied"
    assert rows[gone].state == "parked" and rows[gone].reason


def test_a_change_is_audited_as_reported_by_the_last_event_that_named_it(billing: BillingWorld, orgs: list[Org], store, gateway) -> None:  # noqa: ANN001
    org = orgs[1]
    # NOBill's mirror drifted from Stripe (say, a lost write); the next re-read corrects it.
    with UnitOfWork(billing.database, org_id=org.org_id) as uow:
        uow.execute(update(subscriptions).where(subscriptions.c.org_id == org.org_id).values(cancel_at_period_end=True))
        uow.commit()
    # Two deliveries, one after the other (within one batch, events are stored together).
    [earlier], [later] = store(org.subscription_event()), store(org.subscription_event())

    _apply(billing, gateway, [earlier, later])

    assert billing.subscription(org.owner, org.org_id).cancel_at_period_end is False
    [corrected] = [e for e in audit_events(org.owner, org.org_id) if e.request_id in (earlier, later)]
    assert corrected.action == "subscription.updated"
    assert corrected.actor.type == common_pb2.ACTOR_TYPE_STRIPE
    assert corrected.actor.id == corrected.request_id == later


def test_a_stripe_outage_leaves_the_events_pending_for_the_retry(billing: BillingWorld, orgs: list[Org], store, gateway) -> None:  # noqa: ANN001
    [event] = store(orgs[2].subscription_event())
    control(billing.sandbox_url, "POST", "faults", {"outage": {"seconds": 60, "mode": "503"}})
    try:
        with pytest.raises(StripeTransient):
            _apply(billing, gateway, [event])  # raised so the message is retried
        assert _rows(billing, [event])[event].state == "pending"
    finally:
        control(billing.sandbox_url, "DELETE", "faults")
    gateway._gateway.breaker.record_success()  # as after its cool-down
    assert _apply(billing, gateway, [event]) == Counter({"applied": 1})

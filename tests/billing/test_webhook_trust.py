"""Trust what Stripe says about an object, not what an event claims (ARCHITECTURE §14).

An attacker who can sign deliveries (a leaked endpoint secret) names org A's customer and
org B's subscription or invoice. The event is routed to A by the customer it claims, but
the object re-read from Stripe belongs to B's customer: the apply refuses it for good
(state `refused`, reason `object_customer_mismatch`), changes neither org, counts it and
leaves an audit record on A. Delivered over HTTP to the real sidecar and applied by the
world's real worker."""

from __future__ import annotations

import http.client
import json
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest

from billing_helpers import BillingWorld, audit_events, wait_for
from nobill.billing import accounts, inbox
from nobill.db.unit_of_work import UnitOfWork
from nobill.stripe.webhooks import sign
from nobill.v1 import audit_pb2, common_pb2
from support import Client

MISMATCH = "object_customer_mismatch"


class Org:
    def __init__(self, world: BillingWorld, plan: int) -> None:
        self.owner: Client
        self.owner, self.org_id = world.new_org()
        world.subscribe(self.owner, self.org_id, plan)
        self.customer = world.customer_id(self.org_id)
        self.subscription = self.account(world).stripe_subscription_id
        assert self.subscription
        self.invoice = world.stripe.v1.subscriptions.retrieve(self.subscription).latest_invoice
        assert self.invoice

    def account(self, world: BillingWorld) -> accounts.BillingAccount:
        with UnitOfWork(world.database, org_id=self.org_id) as uow:
            return accounts.get(uow=uow, org_id=self.org_id)

    def state(self, world: BillingWorld) -> tuple[Any, ...]:
        account = self.account(world)
        invoices = sorted(invoice.id for invoice in world.invoices(self.owner, self.org_id))
        return account.plan, account.status, account.stripe_subscription_id, account.current_period_end, invoices


@pytest.fixture(scope="module")
def orgs(billing: BillingWorld) -> tuple[Org, Org]:
    victim, other = Org(billing, common_pb2.PLAN_PRO), Org(billing, common_pb2.PLAN_STARTER)
    billing.wait_settled()
    return victim, other


def _event(event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"evt_trust_{uuid.uuid4().hex}", "object": "event", "api_version": "2026-10-28.endive",
        "created": int(time.time()), "livemode": False, "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None}, "type": event_type, "data": {"object": obj},
    }


def _deliver(world: BillingWorld, event: dict[str, Any]) -> None:
    """POST the event, signed with the endpoint's secret, to the real sidecar."""
    body = json.dumps(event).encode()
    url = urlsplit(world.webhooks_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    connection.request("POST", url.path, body=body, headers={
        "Content-Type": "application/json", "Stripe-Signature": sign(body, world.webhook_secret)})
    response = connection.getresponse()
    assert response.status == 200, response.read()
    connection.close()


def _settled_record(world: BillingWorld, event_id: str) -> inbox.EventRecord:
    def settled() -> inbox.EventRecord | None:
        record = inbox.find(database=world.database, event_ids=[event_id]).get(event_id)
        return record if record is not None and record.state not in ("pending", "waiting") else None

    return wait_for(settled, timeout=30, interval=0.2, what=f"the worker to settle {event_id}")


def _refused_count(event_type: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(
        "nobill_stripe_webhook_refused_total", {"type": event_type, "reason": MISMATCH}) or 0.0


def _assert_refused(world: BillingWorld, victim: Org, event: dict[str, Any], counted_before: float) -> None:
    record = _settled_record(world, event["id"])
    assert (record.state, record.reason) == ("refused", MISMATCH)
    assert record.org_id == victim.org_id  # routed by its customer claim, refused by the re-read
    assert _refused_count(event["type"]) == counted_before + 1
    [audited] = [e for e in audit_events(victim.owner, victim.org_id) if e.request_id == event["id"]]
    assert audited.action == "billing.webhook_refused"
    assert audited.actor.type == common_pb2.ACTOR_TYPE_STRIPE and audited.target_id == event["id"]
    assert audited.after["reason"] == MISMATCH
    report = victim.owner.audit.VerifyAuditChain(audit_pb2.VerifyAuditChainRequest(org_id=victim.org_id))
    assert report.valid, report.reason


def test_a_subscription_event_naming_another_orgs_subscription_is_refused(billing: BillingWorld, orgs: tuple[Org, Org]) -> None:
    victim, other = orgs
    before = victim.state(billing), other.state(billing)
    counted = _refused_count("customer.subscription.updated")
    forged = _event("customer.subscription.updated",
                    {"id": other.subscription, "object": "subscription", "customer": victim.customer, "status": "active"})

    _deliver(billing, forged)

    _assert_refused(billing, victim, forged, counted)
    assert (victim.state(billing), other.state(billing)) == before
    assert victim.account(billing).stripe_subscription_id == victim.subscription


def test_an_invoice_event_naming_another_orgs_invoice_is_refused(billing: BillingWorld, orgs: tuple[Org, Org]) -> None:
    victim, other = orgs
    before = victim.state(billing), other.state(billing)
    counted = _refused_count("invoice.paid")
    forged = _event("invoice.paid", {"id": other.invoice, "object": "invoice", "customer": victim.customer})

    _deliver(billing, forged)

    _assert_refused(billing, victim, forged, counted)
    assert other.invoice not in [invoice.id for invoice in billing.invoices(victim.owner, victim.org_id)]
    assert (victim.state(billing), other.state(billing)) == before


def test_a_checkout_naming_another_orgs_subscription_is_refused(billing: BillingWorld, orgs: tuple[Org, Org]) -> None:
    victim, other = orgs
    before = victim.state(billing), other.state(billing)
    counted = _refused_count("checkout.session.completed")
    forged = _event("checkout.session.completed", {
        "id": f"cs_forged_{uuid.uuid4().hex[:8]}", "object": "checkout.session", "mode": "subscription",
        "customer": victim.customer, "subscription": other.subscription})

    _deliver(billing, forged)

    _assert_refused(billing, victim, forged, counted)
    assert (victim.state(billing), other.state(billing)) == before


def test_the_orgs_own_objects_still_apply_alongside(billing: BillingWorld, orgs: tuple[Org, Org]) -> None:
    victim, other = orgs
    own = _event("invoice.paid", {"id": victim.invoice, "object": "invoice", "customer": victim.customer})
    _deliver(billing, own)
    record = _settled_record(billing, own["id"])
    assert (record.state, record.org_id) == ("applied", victim.org_id)
    assert victim.invoice in [invoice.id for invoice in billing.invoices(victim.owner, victim.org_id)]

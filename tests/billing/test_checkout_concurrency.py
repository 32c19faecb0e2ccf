"""CreateCheckoutSession next to the worker and the webhooks: a customer the worker commits
while checkout runs is found, not refused; and a slow Stripe during a checkout holds no lock
or transaction that the org's webhooks or other orgs' calls need."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg

from billing_helpers import BillingWorld, control, event_state, post_webhook, subscription_updated, wait_for
from nobill.billing import accounts, customers
from nobill.db.unit_of_work import UnitOfWork
from nobill.v1 import billing_pb2, common_pb2, tenancy_pb2

SLOW_STRIPE_MS = 3000


def _customer_committed(billing: BillingWorld, org_id: str) -> str | None:
    with UnitOfWork(billing.database, org_id=org_id) as uow:
        return accounts.stripe_customer_id(uow=uow, org_id=org_id)


def test_checkout_finds_the_customer_the_worker_commits_while_it_runs(billing: BillingWorld) -> None:
    """The worker is creating the customer (Stripe answers it slowly) when checkout first
    looks for it; the worker commits before checkout goes on. Checkout must use that customer
    (one customer on Stripe), not answer FAILED_PRECONDITION."""
    interleaved: list[str] = []

    def worker_commits_now(org_id: str) -> None:
        # Checkout has just read that the customer is missing: let the worker's commit land.
        wait_for(lambda: _customer_committed(billing, org_id), timeout=30, what="the worker to commit the customer")
        interleaved.append(org_id)

    control(billing.sandbox_url, "POST", "faults", {"latency": {"ms": 1500, "path_prefix": "/v1/customers"}})
    customers.after_customer_found_missing = worker_commits_now
    try:
        owner, org_id = billing.new_org()
        session = billing.checkout(owner, org_id, common_pb2.PLAN_PRO)
    finally:
        customers.after_customer_found_missing = None
        control(billing.sandbox_url, "DELETE", "faults")
    assert interleaved == [org_id], "the worker's commit landed between checkout's reads"
    customer_id = billing.customer_id(org_id)
    on_stripe = billing.stripe.v1.checkout.sessions.retrieve(session.checkout_session_id)
    assert on_stripe.customer == customer_id
    found = billing.stripe.v1.customers.search({"query": f"metadata['org_id']:'{org_id}'"}).data
    assert [customer.id for customer in found] == [customer_id], "the same idempotency key made one customer"


def _idle_transactions_holding_billing_locks(database_url: str) -> list[tuple[Any, ...]]:
    """Sessions idle in a transaction while holding a lock on an org's subscription or
    membership rows (a transaction left open across a call to Stripe)."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        return connection.execute(
            "SELECT a.pid, l.relation::regclass::text, l.mode, left(a.query, 120)"
            " FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid"
            " WHERE a.datname = current_database() AND a.state LIKE 'idle in transaction%%'"
            " AND l.relation IN ('subscriptions'::regclass, 'memberships'::regclass)"
        ).fetchall()


def test_a_slow_checkout_holds_nothing_the_orgs_webhooks_or_other_orgs_need(billing: BillingWorld, database_url: str) -> None:
    owner, org_id = billing.new_org()
    billing.subscribe(owner, org_id, common_pb2.PLAN_STARTER)
    owner.billing.CancelSubscription(billing_pb2.CancelSubscriptionRequest(org_id=org_id, at_period_end=False))
    billing.wait_subscription(owner, org_id, lambda s: s.status == common_pb2.SUBSCRIPTION_STATUS_CANCELED)
    billing.wait_settled(org_id)
    with UnitOfWork(billing.database, org_id=org_id) as uow:
        account = accounts.get(uow=uow, org_id=org_id)
    other_owner, other_org = billing.new_org()
    billing.customer_id(other_org)

    control(billing.sandbox_url, "POST", "faults", {"latency": {"ms": SLOW_STRIPE_MS, "path_prefix": "/v1/checkout"}})
    outcome: dict[str, Any] = {}

    def check_out() -> None:
        try:
            outcome["session"] = billing.checkout(owner, org_id, common_pb2.PLAN_PRO)
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = error

    checkout = threading.Thread(target=check_out)
    try:
        started = time.monotonic()
        checkout.start()
        time.sleep(0.5)  # checkout is waiting for Stripe's answer now
        assert checkout.is_alive()
        assert _idle_transactions_holding_billing_locks(database_url) == []

        # Other orgs' calls answer at once.
        for call in (
            lambda: other_owner.tenancy.GetOrganization(tenancy_pb2.GetOrganizationRequest(org_id=other_org)),
            lambda: other_owner.billing.GetSubscription(billing_pb2.GetSubscriptionRequest(org_id=other_org)),
        ):
            asked = time.monotonic()
            call()
            assert time.monotonic() - asked < 0.5

        # The org's own webhook is applied without waiting for the checkout.
        event = subscription_updated(account.stripe_subscription_id, account.stripe_customer_id, event_prefix="evt_slow_checkout")
        event_id = event["id"]
        delivered = time.monotonic()
        assert post_webhook(billing, event) == 200
        wait_for(lambda: event_state(billing, event_id) == "applied", timeout=10, interval=0.02, what="the webhook applied")
        applied_after = time.monotonic() - delivered
        assert checkout.is_alive(), "the webhook was applied while the checkout still waited for Stripe"
        assert applied_after < 2.5, f"applying the org's webhook took {applied_after:.1f} s"
        assert _idle_transactions_holding_billing_locks(database_url) == []
    finally:
        checkout.join(timeout=30)
        control(billing.sandbox_url, "DELETE", "faults")
    assert "error" not in outcome, outcome.get("error")
    assert outcome["session"].checkout_session_id.startswith("cs_")
    assert time.monotonic() - started >= SLOW_STRIPE_MS / 1000

"""Helpers for billing's end-to-end tests: a webhook receiver that forwards Stripe's
deliveries to IngestStripeEvent over gRPC, the sandbox's control API, test clocks
(advanced and polled until ready), and waiting for NOBill to converge."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import grpc
import psycopg
import requests
import stripe
from sqlalchemy import func, select

from nobill.billing import accounts, inbox
from nobill.billing.tables import stripe_event_ids, stripe_outbox
from nobill.db.unit_of_work import UnitOfWork
from nobill.v1 import billing_pb2, common_pb2, tenancy_pb2
from support import Client, mint, new_user

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def wait_for(predicate: Callable[[], Any], *, timeout: float = 20.0, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll until `predicate()` is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def control(base_url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call the sandbox's control API (/_sandbox/...); returns the JSON answer."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{base_url}/_sandbox/{path.lstrip('/')}", data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with _NO_PROXY.open(request, timeout=60) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def stripe_client(url: str) -> stripe.StripeClient:
    session = requests.Session()
    session.trust_env = False
    return stripe.StripeClient(
        "sk_test_nobill_tests", base_addresses={"api": url, "meter_events": url},
        http_client=stripe.RequestsClient(session=session), max_network_retries=0,
    )


@dataclass
class BillingWorld:
    """The running pieces: sandbox, NOBill server + worker (with Stripe), the database."""

    sandbox_url: str
    channel: grpc.Channel
    database: Any
    settings: Any
    stripe: stripe.StripeClient
    webhook_secret: str
    # The webhook sidecar's POST URL (the sandbox's endpoint delivers there).
    webhooks_url: str = ""
    # Events stored before this world started belong to an earlier test module's world.
    started_at: dt.datetime = dt.datetime.min.replace(tzinfo=dt.timezone.utc)

    # --- orgs ---------------------------------------------------------------------

    def new_org(self, name: str | None = None) -> tuple[Client, str]:
        owner = new_user(self.channel)
        org = owner.tenancy.CreateOrganization(
            tenancy_pb2.CreateOrganizationRequest(name=name or f"Org {uuid.uuid4().hex[:8]}")
        ).organization
        return owner, org.id

    def add_members(self, owner: Client, org_id: str, count: int) -> list[str]:
        ids = []
        for _ in range(count):
            member = owner.tenancy.AddMember(
                tenancy_pb2.AddMemberRequest(
                    org_id=org_id, email=f"m-{uuid.uuid4().hex[:10]}@example.com", role=common_pb2.ROLE_MEMBER
                )
            ).member
            ids.append(member.user_id)
        return ids

    def customer_id(self, org_id: str, *, timeout: float = 20.0) -> str:
        def found() -> str | None:
            with UnitOfWork(self.database, org_id=org_id) as uow:
                return accounts.stripe_customer_id(uow=uow, org_id=org_id)

        return wait_for(found, timeout=timeout, what=f"the Stripe customer of {org_id}")

    def test_clock(self, org_id: str) -> str:
        customer = self.stripe.v1.customers.retrieve(self.customer_id(org_id))
        assert customer.test_clock, "NOBILL_STRIPE_TEST_CLOCKS gives every customer a clock"
        return customer.test_clock if isinstance(customer.test_clock, str) else customer.test_clock.id

    # --- Stripe side ----------------------------------------------------------------

    def checkout(self, owner: Client, org_id: str, plan: int) -> billing_pb2.CreateCheckoutSessionResponse:
        return owner.billing.CreateCheckoutSession(
            billing_pb2.CreateCheckoutSessionRequest(
                org_id=org_id, plan=plan, success_url="https://example.com/ok", cancel_url="https://example.com/no"
            )
        )

    def complete_checkout(self, session_id: str, outcome: str = "succeeded") -> dict[str, Any]:
        return control(self.sandbox_url, "POST", f"checkout/sessions/{session_id}/complete", {"outcome": outcome})

    def subscribe(self, owner: Client, org_id: str, plan: int, outcome: str = "succeeded") -> billing_pb2.Subscription:
        """Checkout and complete it; wait until NOBill shows the Stripe subscription."""
        session = self.checkout(owner, org_id, plan)
        self.complete_checkout(session.checkout_session_id, outcome)
        return self.wait_subscription(owner, org_id, lambda s: s.plan == plan and s.status != common_pb2.SUBSCRIPTION_STATUS_CANCELED and s.current_period_end.seconds > 0)

    def advance(self, org_id: str, to: int) -> None:
        """Advance the org's test clock to `to` (unix time), polling until it is ready."""
        clock = self.test_clock(org_id)
        self.stripe.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": to})
        wait_for(
            lambda: self.stripe.v1.test_helpers.test_clocks.retrieve(clock).status == "ready",
            timeout=60, what="the test clock to be ready",
        )

    def clock_time(self, org_id: str) -> int:
        return self.stripe.v1.test_helpers.test_clocks.retrieve(self.test_clock(org_id)).frozen_time

    def stripe_subscription(self, subscription_id: str) -> Any:
        return self.stripe.v1.subscriptions.retrieve(subscription_id)

    # --- NOBill side ----------------------------------------------------------------

    def subscription(self, owner: Client, org_id: str) -> billing_pb2.Subscription:
        return owner.billing.GetSubscription(billing_pb2.GetSubscriptionRequest(org_id=org_id)).subscription

    def settled(self, org_id: str | None = None) -> bool:
        """No webhook in flight at the sandbox and nothing pending in NOBill's inbox/outbox."""
        idle = control(self.sandbox_url, "POST", "webhooks/wait", {"timeout": 10})
        if not idle.get("idle"):
            return False
        with UnitOfWork(self.database) as uow:
            stored = list(uow.execute(
                select(stripe_event_ids.c.event_id).where(stripe_event_ids.c.received_at >= self.started_at)
            ).scalars())
        if any(record.state == "pending" for record in inbox.find(database=self.database, event_ids=stored).values()):
            return False
        if org_id:
            with UnitOfWork(self.database, org_id=org_id) as uow:
                pending_rows = uow.execute(
                    select(func.count()).select_from(stripe_outbox).where(stripe_outbox.c.state == "pending")
                ).scalar_one()
            return pending_rows == 0
        return True

    def wait_settled(self, org_id: str | None = None, timeout: float = 60.0) -> None:
        wait_for(lambda: self.settled(org_id), timeout=timeout, interval=0.2, what="webhooks and jobs to settle")

    def wait_subscription(
        self, owner: Client, org_id: str, predicate: Callable[[billing_pb2.Subscription], bool], timeout: float = 30.0
    ) -> billing_pb2.Subscription:
        def check() -> billing_pb2.Subscription | None:
            current = self.subscription(owner, org_id)
            return current if predicate(current) else None

        return wait_for(check, timeout=timeout, what="the subscription to change")

    def entitlements(self, owner: Client, org_id: str) -> billing_pb2.GetEntitlementsResponse:
        return owner.billing.GetEntitlements(billing_pb2.GetEntitlementsRequest(org_id=org_id))

    def invoices(self, owner: Client, org_id: str) -> list[billing_pb2.Invoice]:
        return list(owner.billing.ListInvoices(billing_pb2.ListInvoicesRequest(org_id=org_id, page_size=100)).invoices)

    def ingest_token(self) -> str:
        return mint("webhook-sidecar", service=True, scopes=("webhooks:ingest",))


def utc(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)


def audit_events(client: Client, org_id: str) -> list[Any]:
    """Every audit event of the org, oldest first."""
    from nobill.v1 import audit_pb2

    events: list[Any] = []
    token = ""
    while True:
        page = client.audit.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(org_id=org_id, page_size=500, page_token=token, oldest_first=True)
        )
        events.extend(page.events)
        token = page.next_page_token
        if not token:
            return events


# --- holding nothing while Stripe answers (docs/ARCHITECTURE.md, "Calling Stripe") ----


def post_webhook(billing: BillingWorld, event: dict[str, Any]) -> int:
    """POST a signed event to the webhook sidecar, as Stripe would; returns the HTTP status."""
    from nobill.stripe.webhooks import sign

    body = json.dumps(event).encode()
    url = urlsplit(billing.webhooks_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.request(
            "POST", url.path, body=body,
            headers={"Content-Type": "application/json", "Stripe-Signature": sign(body, billing.webhook_secret)},
        )
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def subscription_updated(subscription_id: str, customer_id: str, *, event_prefix: str) -> dict[str, Any]:
    """A `customer.subscription.updated` event as Stripe sends it (the sidecar re-reads the object)."""
    return {
        "id": f"{event_prefix}_{uuid.uuid4().hex}", "object": "event", "api_version": "2026-10-28.endive",
        "created": int(time.time()), "livemode": False, "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "customer.subscription.updated",
        "data": {"object": {"id": subscription_id, "object": "subscription", "customer": customer_id}},
    }


def event_state(billing: BillingWorld, event_id: str) -> str | None:
    """The stored event's state, read where it lives (its org's events are under RLS)."""
    from nobill.billing import inbox

    record = inbox.find(database=billing.database, event_ids=[event_id]).get(event_id)
    return record.state if record else None


# The org's rows that its webhook apply, membership changes and billing jobs lock.
_ORG_ROWS = ("subscriptions", "stripe_outbox", "billing_due_work")


def locked_rows_of_org(database_url: str, org_id: str) -> list[str]:
    """The tables in which another transaction holds one of the org's rows locked right now
    (probed as superuser with FOR UPDATE NOWAIT, rolled back at once)."""
    held = []
    with psycopg.connect(database_url, autocommit=True) as connection:
        for table in _ORG_ROWS:
            try:
                with connection.transaction(force_rollback=True):
                    connection.execute(f"SELECT 1 FROM {table} WHERE org_id = %s FOR UPDATE NOWAIT", (org_id,))
            except psycopg.errors.LockNotAvailable:
                held.append(table)
    return held


def long_transactions(database_url: str, older_than_seconds: float = 0.8) -> list[tuple[Any, ...]]:
    """Sessions (other than this probe) in a transaction open longer than `older_than_seconds`,
    idle or not: a transaction left open across a call to Stripe."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        return connection.execute(
            "SELECT pid, state, now() - xact_start, left(query, 120) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL"
            " AND xact_start < clock_timestamp() - make_interval(secs => %s)",
            (older_than_seconds,),
        ).fetchall()

"""A Pro seat sync next to the org's webhooks and membership changes, with Stripe answering
the seat update slowly: while Stripe answers, the sync holds no lock on the org's rows and
no transaction; the org's webhook is applied and a member is added meanwhile; and the
member added while the update was in flight is not missed (Stripe ends at the member count)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from billing_helpers import BillingWorld, control, event_state, locked_rows_of_org, long_transactions, post_webhook, subscription_updated, wait_for
from nobill.billing import accounts
from nobill.db.unit_of_work import UnitOfWork
from nobill.stripe.gateway import StripeGateway
from nobill.v1 import common_pb2

SLOW_STRIPE_MS = 3000


@dataclass
class SeatUpdates:
    """The worker's calls to Stripe's subscription item update (it runs in this process)."""

    started: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    quantities: list[int] = field(default_factory=list)


@pytest.fixture
def seat_updates(monkeypatch: pytest.MonkeyPatch) -> Iterator[SeatUpdates]:
    calls = SeatUpdates()
    original = StripeGateway.update_subscription_item

    def watched(self: StripeGateway, item_id: str, *, params: dict, idempotency_key: str):  # noqa: ANN202
        calls.quantities.append(int(params["quantity"]))
        calls.started.set()
        try:
            return original(self, item_id, params=params, idempotency_key=idempotency_key)
        finally:
            calls.finished.set()

    monkeypatch.setattr(StripeGateway, "update_subscription_item", watched)
    yield calls


def _seat_quantity(billing: BillingWorld, subscription_id: str) -> int:
    on_stripe = billing.stripe.v1.subscriptions.retrieve(subscription_id)
    return next(item.quantity for item in on_stripe["items"].data if item.price.lookup_key == "nobill_pro_seat_monthly")


def _pro_org(billing: BillingWorld):  # noqa: ANN202
    owner, org_id = billing.new_org()
    billing.subscribe(owner, org_id, common_pb2.PLAN_PRO)
    billing.wait_settled(org_id)
    with UnitOfWork(billing.database, org_id=org_id) as uow:
        account = accounts.get(uow=uow, org_id=org_id)
    assert account.stripe_subscription_id and account.stripe_customer_id
    return owner, org_id, account


def _members(owner, org_id: str) -> int:  # noqa: ANN001
    from nobill.v1 import tenancy_pb2

    return len(owner.tenancy.ListMembers(tenancy_pb2.ListMembersRequest(org_id=org_id, page_size=100)).members)


def test_a_seat_sync_waiting_for_stripe_holds_no_lock_and_the_orgs_webhook_is_applied(
    billing: BillingWorld, database_url: str, seat_updates: SeatUpdates
) -> None:
    owner, org_id, account = _pro_org(billing)
    control(billing.sandbox_url, "POST", "faults", {"latency": {"ms": SLOW_STRIPE_MS, "path_prefix": "/v1/subscription_items"}})
    try:
        billing.add_members(owner, org_id, 1)
        assert seat_updates.started.wait(timeout=20), "the worker never asked Stripe to update the seats"
        time.sleep(0.6)  # into Stripe's 3 s answer
        assert not seat_updates.finished.is_set()
        assert locked_rows_of_org(database_url, org_id) == []
        assert long_transactions(database_url, older_than_seconds=0.5) == []

        # The org's own webhook is applied without waiting for the seat update.
        event = subscription_updated(account.stripe_subscription_id, account.stripe_customer_id, event_prefix="evt_slow_seats")
        event_id = event["id"]
        delivered = time.monotonic()
        assert post_webhook(billing, event) == 200
        wait_for(lambda: event_state(billing, event_id) == "applied", timeout=10, interval=0.02, what="the webhook applied")
        applied_after = time.monotonic() - delivered
        assert not seat_updates.finished.is_set(), "the webhook was applied while the seat update still waited for Stripe"
        assert applied_after < 2.5, f"applying the org's webhook took {applied_after:.1f} s"
        assert seat_updates.finished.wait(timeout=20)
    finally:
        control(billing.sandbox_url, "DELETE", "faults")
    billing.wait_settled(org_id)
    assert _seat_quantity(billing, account.stripe_subscription_id) == _members(owner, org_id) == 2
    assert billing.subscription(owner, org_id).seats == 2


def test_a_member_added_while_stripe_updates_the_seats_is_not_missed(
    billing: BillingWorld, seat_updates: SeatUpdates
) -> None:
    owner, org_id, account = _pro_org(billing)
    control(billing.sandbox_url, "POST", "faults", {"latency": {"ms": SLOW_STRIPE_MS, "path_prefix": "/v1/subscription_items"}})
    try:
        billing.add_members(owner, org_id, 1)
        assert seat_updates.started.wait(timeout=20), "the worker never asked Stripe to update the seats"
        assert seat_updates.quantities == [2]
        # A member joins while Stripe is setting the quantity to 2.
        asked = time.monotonic()
        billing.add_members(owner, org_id, 1)
        answered_after = time.monotonic() - asked
        assert not seat_updates.finished.is_set(), "the member was added only after the seat update finished"
        assert answered_after < 1.0, f"AddMember took {answered_after:.1f} s"
        assert seat_updates.finished.wait(timeout=20)
    finally:
        control(billing.sandbox_url, "DELETE", "faults")
    wait_for(lambda: _seat_quantity(billing, account.stripe_subscription_id) == 3, timeout=30, what="3 seats on Stripe")
    billing.wait_settled(org_id)
    assert _seat_quantity(billing, account.stripe_subscription_id) == _members(owner, org_id) == 3
    assert billing.subscription(owner, org_id).seats == 3
    assert seat_updates.quantities == [2, 3], "one update for each intent, none lost"

"""Trial expiry: an org whose trial ended without a subscription is canceled (after
asking Stripe), with an audit event; entitlements drop; a second run changes nothing."""

from __future__ import annotations

import datetime as dt

from billing_helpers import BillingWorld, audit_events
from nobill.billing import trials
from nobill.stripe.gateway import StripeGateway
from nobill.v1 import common_pb2


def test_a_trial_that_ends_without_checkout_is_canceled_once(billing: BillingWorld) -> None:
    owner, org_id = billing.new_org()
    billing.customer_id(org_id)
    trial_end = billing.subscription(owner, org_id).trial_end.ToDatetime(tzinfo=dt.timezone.utc)
    gateway = StripeGateway.from_settings(billing.settings)

    before = trials.expire_due(database=billing.database, gateway=gateway, now=trial_end - dt.timedelta(minutes=1))
    assert org_id not in before
    assert billing.entitlements(owner, org_id).access_allowed

    expired = trials.expire_due(database=billing.database, gateway=gateway, now=trial_end + dt.timedelta(minutes=1))
    assert org_id in expired
    subscription = billing.subscription(owner, org_id)
    assert subscription.status == common_pb2.SUBSCRIPTION_STATUS_CANCELED
    entitlements = billing.entitlements(owner, org_id)
    assert not entitlements.access_allowed and list(entitlements.features) == []
    events = [e for e in audit_events(owner, org_id) if e.action == "subscription.trial_expired"]
    assert len(events) == 1 and events[0].actor.type == common_pb2.ACTOR_TYPE_SYSTEM

    again = trials.expire_due(database=billing.database, gateway=gateway, now=trial_end + dt.timedelta(hours=1))
    assert org_id not in again
    assert len([e for e in audit_events(owner, org_id) if e.action == "subscription.trial_expired"]) == 1


def test_a_trial_whose_checkout_webhook_is_late_is_not_canceled(billing: BillingWorld) -> None:
    owner, org_id = billing.new_org()
    trial_end = billing.subscription(owner, org_id).trial_end.ToDatetime(tzinfo=dt.timezone.utc)
    session = billing.checkout(owner, org_id, common_pb2.PLAN_PRO)
    # Webhooks are held back: Stripe has the subscription, NOBill has not heard of it.
    from billing_helpers import control

    control(billing.sandbox_url, "POST", "webhooks/chaos", {"delay": 3})
    try:
        billing.complete_checkout(session.checkout_session_id)
        expired = trials.expire_due(
            database=billing.database, gateway=StripeGateway.from_settings(billing.settings),
            now=trial_end + dt.timedelta(minutes=1),
        )
    finally:
        control(billing.sandbox_url, "DELETE", "webhooks/chaos")
    assert org_id not in expired
    subscription = billing.subscription(owner, org_id)
    assert subscription.status == common_pb2.SUBSCRIPTION_STATUS_TRIALING and subscription.current_period_end.seconds > 0


def test_trial_expiry_waiting_for_stripe_holds_no_lock_on_the_org(
    billing: BillingWorld, database_url: str, monkeypatch
) -> None:  # noqa: ANN001
    """With Stripe answering trial expiry's look for a late subscription in 3 s, the org's
    rows are free meanwhile (a member is added at once), no transaction is open, and the
    trial is still canceled."""
    import threading
    import time

    from billing_helpers import control, locked_rows_of_org, long_transactions

    owner, org_id = billing.new_org()
    billing.customer_id(org_id)
    trial_end = billing.subscription(owner, org_id).trial_end.ToDatetime(tzinfo=dt.timezone.utc)
    asking = threading.Event()
    original = StripeGateway.list_subscriptions

    def watched(self: StripeGateway, customer: str):  # noqa: ANN202
        asking.set()
        return original(self, customer)

    monkeypatch.setattr(StripeGateway, "list_subscriptions", watched)
    outcome: dict[str, object] = {}

    def expire() -> None:
        try:
            outcome["expired"] = trials.expire_due(
                database=billing.database, gateway=StripeGateway.from_settings(billing.settings),
                now=trial_end + dt.timedelta(minutes=1),
            )
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = error

    control(billing.sandbox_url, "POST", "faults", {"latency": {"ms": 3000, "path_prefix": "/v1/subscriptions"}})
    running = threading.Thread(target=expire)
    try:
        running.start()
        assert asking.wait(timeout=20), "trial expiry never asked Stripe"
        time.sleep(1.0)  # well into Stripe's 3 s answer
        assert running.is_alive()
        assert locked_rows_of_org(database_url, org_id) == []
        assert long_transactions(database_url) == []
        asked = time.monotonic()
        billing.add_members(owner, org_id, 1)  # takes the org's subscription row lock
        assert time.monotonic() - asked < 1.0
        assert running.is_alive(), "the member was added only after trial expiry's Stripe call"
    finally:
        running.join(timeout=30)
        control(billing.sandbox_url, "DELETE", "faults")
    assert "error" not in outcome, outcome.get("error")
    assert org_id in outcome["expired"]
    assert billing.subscription(owner, org_id).status == common_pb2.SUBSCRIPTION_STATUS_CANCELED


def test_an_org_that_cannot_be_settled_does_not_keep_other_trials_running(billing: BillingWorld, superuser) -> None:
    """A sweep over every due org: one that fails (here its audit chain head was removed by
    the database superuser, so its audited cancel cannot commit) is logged and left due;
    the orgs after it still expire."""
    broken_owner, broken_org = billing.new_org()
    owner, org_id = billing.new_org()
    trial_end = billing.subscription(owner, org_id).trial_end.ToDatetime(tzinfo=dt.timezone.utc)
    superuser.execute("DELETE FROM audit_chain_heads WHERE org_id = %s", (broken_org,))

    expired = trials.expire_due(
        database=billing.database, gateway=StripeGateway.from_settings(billing.settings),
        now=trial_end + dt.timedelta(minutes=1),
    )
    assert org_id in expired and broken_org not in expired
    assert billing.subscription(owner, org_id).status == common_pb2.SUBSCRIPTION_STATUS_CANCELED
    assert billing.subscription(broken_owner, broken_org).status == common_pb2.SUBSCRIPTION_STATUS_TRIALING

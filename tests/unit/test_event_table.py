"""The one table of handled Stripe event types (nobill.billing.inbox_events.HANDLERS): what
each makes NOBill re-read, and which customer routes it; everything else is stored and
ignored."""

from __future__ import annotations

from typing import Any

import pytest

from nobill.billing.inbox_events import HANDLERS, Target, customer_of, owner_of, target_of


def _event(event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"id": "evt_1", "object": "event", "type": event_type, "data": {"object": obj}}


@pytest.mark.parametrize("event_type", ["customer.subscription.created", "customer.subscription.updated",
                                        "customer.subscription.deleted"])
def test_subscription_events_re_read_their_subscription(event_type: str) -> None:
    event = _event(event_type, {"id": "sub_1", "object": "subscription", "customer": "cus_1"})
    assert target_of(event) == Target("subscription", "sub_1")
    assert customer_of(event) == "cus_1"


@pytest.mark.parametrize("event_type", ["invoice.paid", "invoice.payment_failed"])
def test_invoice_events_re_read_their_invoice(event_type: str) -> None:
    event = _event(event_type, {"id": "in_1", "object": "invoice", "customer": {"id": "cus_1", "object": "customer"}})
    assert target_of(event) == Target("invoice", "in_1")
    assert customer_of(event) == "cus_1"  # an expanded customer routes the same way


def test_a_subscription_checkout_re_reads_its_subscription_and_a_payment_checkout_nothing() -> None:
    subscription = {"id": "cs_1", "object": "checkout.session", "mode": "subscription",
                    "subscription": "sub_1", "customer": "cus_1"}
    assert target_of(_event("checkout.session.completed", subscription)) == Target("subscription", "sub_1")
    expanded = dict(subscription, subscription={"id": "sub_2", "object": "subscription"})
    assert target_of(_event("checkout.session.completed", expanded)) == Target("subscription", "sub_2")
    payment = dict(subscription, mode="payment", subscription=None)
    assert target_of(_event("checkout.session.completed", payment)) is None
    unfinished = dict(subscription, subscription=None)
    assert target_of(_event("checkout.session.completed", unfinished)) is None


def test_types_not_in_the_table_are_ignored_and_the_table_is_what_the_docs_list() -> None:
    assert target_of(_event("customer.updated", {"id": "cus_1", "object": "customer"})) is None
    assert target_of(_event("charge.succeeded", {"id": "ch_1", "object": "charge", "customer": "cus_1"})) is None
    assert sorted(HANDLERS) == [
        "checkout.session.completed", "customer.subscription.created", "customer.subscription.deleted",
        "customer.subscription.updated", "invoice.paid", "invoice.payment_failed",
    ]


def test_a_customer_event_routes_by_its_own_id_and_objects_by_their_customer() -> None:
    assert customer_of(_event("customer.updated", {"id": "cus_9", "object": "customer"})) == "cus_9"
    assert owner_of({"id": "sub_1", "customer": None}) is None
    assert owner_of({"id": "sub_1", "customer": 42}) is None  # not a customer id: routes nowhere

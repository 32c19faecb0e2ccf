"""Billing's RPC-facing operations: read the subscription, entitlements and invoices;
start a checkout, change the plan, cancel. Changes to the subscription itself come only
from Stripe's webhooks (nobill/billing/inbox.py); these ask Stripe and record the request,
never with a transaction open while Stripe answers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy import select

from nobill import pagination
from nobill.audit import service as audit
from nobill.audit.actors import AuditContext
from nobill.billing import customers, outbox, plans, prices, subscriptions
from nobill.billing.plans import PlanCode, SubscriptionStatus
from nobill.billing.subscriptions import Subscription
from nobill.billing.tables import invoices, stripe_customers
from nobill.db.database import Database
from nobill.db.unit_of_work import UnitOfWork, transaction
from nobill.errors import FailedPrecondition, InvalidArgument, Unavailable
from nobill.stripe.errors import StripePermanent, StripeTransient
from nobill.stripe.gateway import StripeGateway
from nobill.tenancy import members as tenancy_members

# Stripe Checkout refuses a subscription_data[trial_end] less than 48 hours ahead.
MIN_CHECKOUT_TRIAL = dt.timedelta(hours=48, minutes=5)
_URL = re.compile(r"^https?://[^\s/]+[^\s]*$")


@dataclass(frozen=True)
class CheckoutSession:
    session_id: str
    url: str


@dataclass(frozen=True)
class Entitlements:
    plan: PlanCode
    status: SubscriptionStatus
    access_allowed: bool
    max_members: int
    metered_usage: bool
    features: tuple[str, ...]


@dataclass(frozen=True)
class Invoice:
    invoice_id: str
    number: str
    status: str
    currency: str
    amount_due: int
    amount_paid: int
    period_start: dt.datetime | None
    period_end: dt.datetime | None
    created_at: dt.datetime
    hosted_invoice_url: str


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _unavailable(gateway: StripeGateway, error: StripeTransient) -> Unavailable:
    retry_after = max(1, round(gateway.breaker.retry_after())) if gateway.breaker.state != "closed" else 5
    return Unavailable(f"Stripe is unavailable ({error.message}); retry in {retry_after} s", retry_after=retry_after)


def _check_url(value: str, field: str) -> None:
    if not value or len(value) > 2048 or not _URL.fullmatch(value):
        raise InvalidArgument(f"{field} must be an http(s) URL", field=field)


def _check_member_limit(uow: UnitOfWork, plan: PlanCode) -> None:
    details = plans.details(plan)
    if details.max_members:
        members = tenancy_members.count(uow=uow)
        if members > details.max_members:
            raise FailedPrecondition(
                f"the {details.display_name} plan allows {details.max_members} member"
                f"{'s' if details.max_members != 1 else ''} (limit max_members={details.max_members}); "
                f"the organization has {members}: remove members first"
            )


def get(*, uow: UnitOfWork, org_id: str) -> Subscription:
    return subscriptions.get(uow=uow, org_id=org_id)


def entitlements(*, uow: UnitOfWork, org_id: str, grace: dt.timedelta, now: dt.datetime | None = None) -> Entitlements:
    """What the org may use now: trialing/active yes; past_due for `grace` after it became
    past_due; incomplete and canceled no."""
    current = subscriptions.get(uow=uow, org_id=org_id)
    now = now or _now()
    if current.status in (SubscriptionStatus.TRIALING, SubscriptionStatus.ACTIVE):
        allowed = not (current.status is SubscriptionStatus.TRIALING and current.stripe_subscription_id is None
                       and current.trial_end is not None and current.trial_end <= now)
    elif current.status is SubscriptionStatus.PAST_DUE:
        allowed = current.past_due_since is not None and now < current.past_due_since + grace
    else:
        allowed = False
    details = plans.details(current.plan)
    return Entitlements(
        plan=current.plan,
        status=current.status,
        access_allowed=allowed,
        max_members=details.max_members,
        metered_usage=details.metered_usage,
        features=details.features if allowed else (),
    )


def list_invoices(*, uow: UnitOfWork, org_id: str, page_size: int, page_token: str) -> tuple[list[Invoice], str]:
    """The org's invoices, newest first, as Stripe's invoice webhooks reported them."""
    if page_size > 100:
        raise InvalidArgument("page_size must be at most 100", field="page_size")
    rows, next_token = pagination.fetch_page(
        uow,
        select(invoices),
        key=invoices.c.sort_key,
        key_type=str,
        page_size=page_size or 20,
        page_token=page_token,
        query=pagination.fingerprint("invoices", org_id),
        descending=True,
    )
    return [
        Invoice(
            invoice_id=row.invoice_id,
            number=row.number or "",
            status=row.status,
            currency=row.currency,
            amount_due=row.amount_due,
            amount_paid=row.amount_paid,
            period_start=row.period_start,
            period_end=row.period_end,
            created_at=row.created_at,
            hosted_invoice_url=row.hosted_invoice_url or "",
        )
        for row in rows
    ], next_token


def _enterprise_price(uow: UnitOfWork, org_id: str) -> str | None:
    return uow.execute(
        select(stripe_customers.c.enterprise_price_id).where(stripe_customers.c.org_id == org_id)
    ).scalar_one_or_none()


def _stripe_failed(gateway: StripeGateway, error: StripeTransient | StripePermanent, what: str) -> Exception:
    if isinstance(error, StripeTransient):
        return _unavailable(gateway, error)
    return FailedPrecondition(f"Stripe refused {what}: {error.message}")


# Each RPC below that calls Stripe runs in three steps (docs/ARCHITECTURE.md, "Calling
# Stripe"): the call's unit of work reads and decides, then commits and gives its connection
# back; Stripe is called with an idempotency key derived from local ids, with no
# transaction open; a second short unit of work records the outcome, re-checking the state.


def create_checkout_session(
    *,
    uow: UnitOfWork,
    database: Database,
    org_id: str,
    gateway: StripeGateway,
    context: AuditContext,
    plan: PlanCode,
    success_url: str,
    cancel_url: str,
) -> CheckoutSession:
    """A Stripe Checkout Session for `plan`. An org in its trial keeps the rest of it and
    needs no card while nothing is due; an org with a live subscription must use ChangePlan."""
    _check_url(success_url, "success_url")
    _check_url(cancel_url, "cancel_url")
    # NOTE: a plain read, no row lock: nothing is written here, and the decision is checked
    # again when the session is recorded.
    current = subscriptions.get(uow=uow, org_id=org_id)
    _refuse_live(current)
    _check_member_limit(uow, plan)
    now = _now()
    trial_end = None
    if current.status is SubscriptionStatus.TRIALING and current.trial_end and current.trial_end - now >= MIN_CHECKOUT_TRIAL:
        trial_end = int(current.trial_end.timestamp())
    seats = tenancy_members.count(uow=uow)
    enterprise_price_id = _enterprise_price(uow, org_id) if plan is PlanCode.ENTERPRISE else None
    customer = customers.find(uow=uow, org_id=org_id)
    uow.commit()
    uow.release()

    try:
        customer_id = customers.ensure(database=database, gateway=gateway, customer=customer)
        items = prices.line_items(gateway, plan, seats=seats, enterprise_price_id=enterprise_price_id)
        session = gateway.create_checkout_session(
            customer=customer_id,
            org_id=org_id,
            line_items=items,
            success_url=success_url,
            cancel_url=cancel_url,
            trial_end=trial_end,
            idempotency_key=f"nobill-checkout-{org_id}-{context.request_id}-{plan.value}",
        )
    except (StripeTransient, StripePermanent) as error:
        raise _stripe_failed(gateway, error, "the checkout") from error

    with transaction(database, org_id=org_id) as recording:
        # A subscription that went live meanwhile (another checkout completed): this
        # session's URL is not handed out.
        _refuse_live(subscriptions.get(uow=recording, org_id=org_id))
        audit.record(
            uow=recording,
            context=context,
            action="checkout.session_created",
            target_type="checkout_session",
            target_id=session["id"],
            after={"plan": plan.value, "trial_end": trial_end},
        )
    return CheckoutSession(session["id"], session.get("url") or "")


def _refuse_live(current: Subscription) -> None:
    if current.has_live_stripe_subscription:
        raise FailedPrecondition(
            f"the organization already has a {current.status.value} {current.plan.value} subscription; use ChangePlan"
        )


def change_plan(
    *, uow: UnitOfWork, database: Database, org_id: str, gateway: StripeGateway, context: AuditContext, plan: PlanCode
) -> Subscription:
    """Ask Stripe to move the live subscription to `plan` (prorated); returns the
    subscription with the pending change. The webhook confirms it."""
    current = subscriptions.get(uow=uow, org_id=org_id)
    if not current.has_live_stripe_subscription or current.stripe_subscription_id is None:
        raise FailedPrecondition("the organization has no live subscription; use CreateCheckoutSession")
    if plan is current.plan and current.pending_plan in (None, plan):
        return current
    _check_member_limit(uow, plan)
    seats = tenancy_members.count(uow=uow)
    enterprise_price_id = _enterprise_price(uow, org_id) if plan is PlanCode.ENTERPRISE else None
    subscription_id = current.stripe_subscription_id
    uow.commit()
    uow.release()

    try:
        snapshot = gateway.retrieve_subscription(subscription_id)
        items: list[dict[str, object]] = []
        for item in snapshot.get("items", {}).get("data", []):
            removal: dict[str, object] = {"id": item["id"], "deleted": True}
            if item.get("price", {}).get("recurring", {}).get("usage_type") == "metered":
                removal["clear_usage"] = False
            items.append(removal)
        items.extend(prices.line_items(gateway, plan, seats=seats, enterprise_price_id=enterprise_price_id))
        gateway.update_subscription(
            subscription_id,
            params={"items": items, "proration_behavior": "create_prorations", "metadata": {"org_id": org_id, "plan": plan.value}},
            idempotency_key=f"nobill-change-plan-{org_id}-{subscription_id}-{plan.value}-{context.request_id}",
        )
    except (StripeTransient, StripePermanent) as error:
        raise _stripe_failed(gateway, error, "the plan change") from error

    with transaction(database, org_id=org_id) as recording:
        subscriptions.set_pending_plan(uow=recording, org_id=org_id, plan=plan)
        audit.record(
            uow=recording,
            context=context,
            action="subscription.plan_change_requested",
            target_type="subscription",
            target_id=org_id,
            before={"plan": current.plan.value},
            after={"plan": plan.value},
        )
        return subscriptions.get(uow=recording, org_id=org_id)


def cancel(
    *, uow: UnitOfWork, database: Database, org_id: str, gateway: StripeGateway, context: AuditContext, at_period_end: bool
) -> Subscription:
    """Ask Stripe to cancel the live subscription at the period's end, or now; returns the
    subscription with the pending change (the webhook confirms it)."""
    current = subscriptions.get(uow=uow, org_id=org_id)
    if current.stripe_subscription_id is None or current.status is SubscriptionStatus.CANCELED:
        raise FailedPrecondition("the organization has no live subscription to cancel")
    subscription_id = current.stripe_subscription_id
    uow.commit()
    uow.release()

    try:
        if at_period_end:
            answer = gateway.update_subscription(
                subscription_id,
                params={"cancel_at_period_end": True},
                idempotency_key=f"nobill-cancel-{org_id}-{subscription_id}-at-period-end-{context.request_id}",
            )
        else:
            answer = gateway.cancel_subscription(
                subscription_id, idempotency_key=f"nobill-cancel-{org_id}-{subscription_id}-now"
            )
    except (StripeTransient, StripePermanent) as error:
        raise _stripe_failed(gateway, error, "the cancellation") from error

    with transaction(database, org_id=org_id) as recording:
        audit.record(
            uow=recording,
            context=context,
            action="subscription.cancel_requested",
            target_type="subscription",
            target_id=org_id,
            after={"at_period_end": at_period_end, "stripe_status": answer.get("status")},
        )
    # The pending change as Stripe answered it; the stored state changes with the webhook.
    pending_status = subscriptions.STATUS_FROM_STRIPE.get(answer.get("status", ""), current.status)
    return dataclasses.replace(
        current, status=pending_status, cancel_at_period_end=bool(answer.get("cancel_at_period_end"))
    )


def request_seat_sync(
    *, uow: UnitOfWork, org_id: str, context: AuditContext, delay_seconds: float | None = None
) -> None:
    """A membership changed: queue one coalesced seat sync if the org pays per seat. (An
    org without a Stripe subscription yet gets its seats from checkout; applying the
    subscription's first snapshot corrects any change in between.)"""
    current = subscriptions.get(uow=uow, org_id=org_id)
    if current.plan is not PlanCode.PRO or not current.has_live_stripe_subscription:
        return
    if delay_seconds is None:
        from nobill.jobs import runtime

        delay_seconds = runtime.settings().seat_sync_delay_seconds
    outbox.add_coalesced(
        uow=uow, org_id=org_id, kind="sync_seats", payload={}, context=context, delay_seconds=delay_seconds
    )

"""Trial expiry: orgs whose trial ended without a paid subscription are canceled (after
re-checking Stripe for a subscription whose webhook has not arrived yet).

Each org runs in three steps (docs/ARCHITECTURE.md, "Calling Stripe"): a short unit of work
reads and decides; Stripe is asked with no transaction open (reads only: no idempotency key
is involved); a second short unit of work takes the org's subscription row, checks again
and records."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

from nobill.audit.actors import AuditContext
from nobill.billing import accounts, actors_context, due_work, subscriptions
from nobill.billing.plans import SubscriptionStatus
from nobill.billing.subscriptions import Subscription
from nobill.db.database import Database
from nobill.db.unit_of_work import UnitOfWork
from nobill.stripe.errors import StripeFailure
from nobill.stripe.gateway import StripeGateway

log = logging.getLogger("nobill.billing.trials")


def expire_due(*, database: Database, gateway: StripeGateway, now: dt.datetime | None = None) -> list[str]:
    """Cancel every due, unpaid trial; returns the org ids canceled. Running it again
    changes nothing."""
    now = now or dt.datetime.now(dt.timezone.utc)
    context = actors_context.system("trial-expiry", f"trial-expiry-{uuid.uuid4().hex[:12]}")
    with UnitOfWork(database) as uow:
        orgs = due_work.due_orgs(uow=uow, kind=due_work.TRIAL_END, now=now)
    expired: list[str] = []
    for org_id in orgs:
        try:
            if _expire(database, gateway, org_id, context, now):
                expired.append(org_id)
        except Exception:
            # NOTE: one org that cannot be settled (a damaged audit chain, say) must not keep
            # every later org's trial running: its due mark stays, so the next run tries again.
            log.exception("trial expiry failed for an org; the others go on and it is tried again next run",
                          extra={"org_id": org_id})
    if expired:
        log.info("trials expired", extra={"orgs": expired})
    return expired


def _ended_unpaid(current: Subscription, now: dt.datetime) -> bool:
    return (
        current.status is SubscriptionStatus.TRIALING
        and current.stripe_subscription_id is None
        and current.trial_end is not None
        and current.trial_end <= now
    )


def _expire(database: Database, gateway: StripeGateway, org_id: str, context: AuditContext, now: dt.datetime) -> bool:
    """One org's trial: whether it was canceled now."""
    with UnitOfWork(database, org_id=org_id) as uow:
        if due_work.lock(uow=uow, org_id=org_id, kind=due_work.TRIAL_END) is None:
            return False
        customer_id = accounts.get(uow=uow, org_id=org_id).stripe_customer_id
        if not customer_id or not _ended_unpaid(subscriptions.get(uow=uow, org_id=org_id), now):
            # Nothing to ask Stripe: no customer means no subscription can exist.
            expired = subscriptions.expire_trial(uow=uow, org_id=org_id, context=context, now=now)
            due_work.clear(uow=uow, org_id=org_id, kind=due_work.TRIAL_END)
            uow.commit()
            return expired
        uow.commit()

    # A checkout may have finished with its webhook still on the way: ask Stripe, holding nothing.
    snapshot: dict[str, Any] | None = None
    try:
        found = gateway.list_subscriptions(customer_id)
        live = [s for s in found if s.get("status") not in ("canceled", "incomplete_expired")]
        if live:
            snapshot = gateway.retrieve_subscription(live[0]["id"])
    except StripeFailure as error:
        log.warning("trial expiry: Stripe unreachable, org left for the next run",
                    extra={"org_id": org_id, "error": error.message})
        return False

    with UnitOfWork(database, org_id=org_id) as uow:
        # NOTE: the subscription row before the due-work mark, as the webhook's apply takes them.
        current = subscriptions.get(uow=uow, org_id=org_id, for_update=True)
        if due_work.lock(uow=uow, org_id=org_id, kind=due_work.TRIAL_END) is None:
            return False  # another run, or the webhook's apply, settled it meanwhile
        expired = False
        if snapshot is not None:
            # Applied only while no webhook has recorded a subscription meanwhile: a webhook's
            # apply read Stripe after this read did, and its snapshot must not be overwritten.
            if current.stripe_subscription_id is None:
                subscriptions.apply_subscription_snapshot(uow=uow, org_id=org_id, snapshot=snapshot, context=context)
        else:
            expired = subscriptions.expire_trial(uow=uow, org_id=org_id, context=context, now=now)
        due_work.clear(uow=uow, org_id=org_id, kind=due_work.TRIAL_END)
        uow.commit()
        return expired

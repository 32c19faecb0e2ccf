"""Trial expiry: orgs whose trial ended without a paid subscription are canceled (after
re-checking Stripe for a subscription whose webhook has not arrived yet)."""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from nobill.billing import accounts, actors_context, due_work, subscriptions
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
        with UnitOfWork(database, org_id=org_id) as uow:
            if due_work.lock(uow=uow, org_id=org_id, kind=due_work.TRIAL_END) is None:
                continue
            subscriptions.get(uow=uow, org_id=org_id, for_update=True)  # before asking Stripe (see inbox.apply)
            account = accounts.get(uow=uow, org_id=org_id)
            if account.stripe_customer_id:
                # A checkout may have finished with its webhook still on the way: ask Stripe.
                try:
                    found = gateway.list_subscriptions(account.stripe_customer_id)
                except StripeFailure as error:
                    log.warning("trial expiry: Stripe unreachable, org left for the next run",
                                extra={"org_id": org_id, "error": error.message})
                    continue
                live = [s for s in found if s.get("status") not in ("canceled", "incomplete_expired")]
                if live:
                    subscriptions.apply_subscription_snapshot(
                        uow=uow, org_id=org_id, snapshot=gateway.retrieve_subscription(live[0]["id"]), context=context
                    )
                    due_work.clear(uow=uow, org_id=org_id, kind=due_work.TRIAL_END)
                    uow.commit()
                    continue
            if subscriptions.expire_trial(uow=uow, org_id=org_id, context=context, now=now):
                expired.append(org_id)
            due_work.clear(uow=uow, org_id=org_id, kind=due_work.TRIAL_END)
            uow.commit()
    if expired:
        log.info("trials expired", extra={"orgs": expired})
    return expired

"""`nobill stripe ...`: operations on Stripe (the catalog, parked webhook events, an Enterprise
price, failed changes, seat drift)."""

from __future__ import annotations

import argparse

from nobill import startup
from nobill.cli.arguments import operator_context, require_org_id
from nobill.config import Settings


def _sync(args: argparse.Namespace, settings: Settings) -> int:
    from nobill.billing.catalog_sync import sync

    runtime = startup.start(settings, audit_keys="off", stripe=True)
    print(f"syncing the plan catalog to Stripe ({settings.stripe_api_base or 'api.stripe.com'})", flush=True)
    with runtime:
        report = sync(runtime.gateway, progress=lambda line: print(f"  {line}", flush=True))
    print(
        f"done: {len(report.created)} created, {len(report.updated)} updated, {len(report.unchanged)} unchanged",
        flush=True,
    )
    return 0


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from nobill.billing import inbox

    with startup.start(settings, database=True, pool_size=2, broker=not args.list) as runtime:
        if args.list:
            for event in inbox.parked(database=runtime.database):
                print(f"{event['event_id']}  {event['event_type']}  {event['stripe_customer_id']}  {event['last_error']}")
            return 0
        replayed = inbox.replay(database=runtime.database, event_ids=args.event_id or None)
    print(f"replayed {len(replayed)} parked event(s)")
    for event_id in replayed:
        print(f"  {event_id}")
    return 0


def _enterprise_price(args: argparse.Namespace, settings: Settings) -> int:
    from nobill.billing import enterprise, outbox
    from nobill.db.unit_of_work import UnitOfWork
    from nobill.stripe.errors import StripeTransient

    require_org_id(args.org)
    runtime = startup.start(settings, audit_keys="required", database=True, pool_size=2, stripe=True, broker=True)
    with runtime:
        with UnitOfWork(runtime.database, org_id=args.org) as uow:
            outbox_id = enterprise.set_price(uow=uow, org_id=args.org, amount=args.amount, context=operator_context())
            uow.commit()
        print(f"recorded {args.amount} {args.org}; creating the Stripe price...", flush=True)
        try:
            outcome = outbox.run(database=runtime.database, gateway=runtime.gateway, org_id=args.org, outbox_id=outbox_id)
        except StripeTransient as error:
            print(f"Stripe is unavailable ({error.message}); the worker will retry", flush=True)
            return 0
        if outcome == "skipped":
            # NOTE: the worker (sent the same row after commit) got to it first; say how it ended.
            with UnitOfWork(runtime.database, org_id=args.org) as uow:
                outcome = outbox.state_of(uow=uow, outbox_id=outbox_id) or "skipped"
    print(f"Stripe price: {outcome}")
    return 0 if outcome in ("done", "pending") else 1


def _retry_failed(args: argparse.Namespace, settings: Settings) -> int:
    from nobill.billing import outbox
    from nobill.db.unit_of_work import UnitOfWork

    require_org_id(args.org)
    with startup.start(settings, audit_keys="required", database=True, pool_size=2, broker=True) as runtime:
        with UnitOfWork(runtime.database, org_id=args.org) as uow:
            retried = outbox.retry_failed(uow=uow, org_id=args.org, context=operator_context())
            uow.commit()
    print(f"{len(retried)} failed Stripe change(s) queued again")
    for outbox_id in retried:
        print(f"  {outbox_id}")
    return 0


def _reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from nobill.billing import seats

    runtime = startup.start(settings, audit_keys="required", database=True, pool_size=2, stripe=True, broker=True)
    with runtime:
        drifts = seats.reconcile(database=runtime.database, gateway=runtime.gateway)
    for drift in drifts:
        print(f"{drift.org_id}: {drift.message}")
    print(f"{len(drifts)} org(s) drifted")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add `nobill stripe` to the `nobill` command."""
    stripe = commands.add_parser("stripe", help="Stripe operations", description="Stripe operations (need STRIPE_API_KEY).")
    stripe_commands = stripe.add_subparsers(dest="stripe_command", required=True, metavar="SUBCOMMAND")
    sync = stripe_commands.add_parser(
        "sync",
        help="create or update products, prices and meters from the catalog",
        description="Make Stripe's products, prices (by lookup_key) and Billing Meters match "
        "nobill/billing/catalog.toml. Idempotent: a second run changes nothing.",
    )
    sync.set_defaults(handler=_sync)
    replay = stripe_commands.add_parser(
        "replay",
        help="replay parked webhook events",
        description="Put parked webhook events (all, or the ids given) back in the queue to be applied.",
    )
    replay.add_argument("event_id", nargs="*", help="event ids (evt_...); none: every parked event")
    replay.add_argument("--list", action="store_true", help="only list parked events")
    replay.set_defaults(handler=_replay)
    price = stripe_commands.add_parser(
        "enterprise-price",
        help="set an Enterprise org's own monthly base price",
        description="Create the org's own Enterprise base price on Stripe and move its live Enterprise "
        "subscription onto it; later checkouts use it.",
    )
    price.add_argument("--org", required=True, help="organization id (org_...)")
    price.add_argument("--amount", required=True, type=int, help="monthly amount in minor units (cents)")
    price.set_defaults(handler=_enterprise_price)
    retry = stripe_commands.add_parser(
        "retry-failed",
        help="queue an org's failed Stripe changes again",
        description="Put an org's Stripe changes that failed for good (GetSubscription's sync_error) back "
        "in the queue, once their cause is fixed.",
    )
    retry.add_argument("--org", required=True, help="organization id (org_...)")
    retry.set_defaults(handler=_retry_failed)
    reconcile = stripe_commands.add_parser(
        "reconcile-seats",
        help="compare Pro seat counts with members and fix drift",
        description="Compare each Pro subscription's seats on Stripe with the member count; queue a sync for each drift.",
    )
    reconcile.set_defaults(handler=_reconcile)

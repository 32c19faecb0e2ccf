"""The `nobill` command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from nobill import startup
from nobill.config import Settings, parse_address
from nobill.errors import ConfigError, DomainError, Unavailable
from nobill.jobs import commands as job_commands
from nobill.logs import configure_logging
from nobill.shutdown import stop_requested

log = logging.getLogger("nobill.cli")


# --- serve -------------------------------------------------------------------------


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    addr_source = "NOBILL_GRPC_ADDR"
    if args.addr:
        settings = settings.replace(grpc_addr=parse_address("--addr", args.addr))
        addr_source = "--addr"
    if args.usage_addr:
        settings = settings.replace(usage_grpc_addr=parse_address("--usage-addr", args.usage_addr))
    processes = _positive("--processes", args.processes) if args.processes is not None else settings.grpc_processes
    if processes > 1:
        return _serve_processes(settings, processes, addr_source)
    from nobill.api.server import build_server, serve_until
    from nobill.api.usage_server import start_usage_server
    from nobill.db.migrate import require_latest_schema

    stop = stop_requested()
    require_latest_schema(settings.require("database_url"))
    with startup.start(settings, jwt_keys=True, audit_keys="required", metrics=True, database=True) as runtime:
        running = build_server(settings, runtime.database, reuse_port=args.reuse_port, addr_source=addr_source)
        usage = start_usage_server(settings, runtime.database, reuse_port=args.reuse_port)
        log.info(
            "serving",
            extra={"addr": settings.grpc_addr, "port": running.port, "usage_port": usage.port, "pid": os.getpid()},
        )
        serve_until(stop, running)
        usage.stop(grace=5)
    return 0


def _serve_processes(settings: Settings, processes: int, addr_source: str) -> int:
    """Run `processes` single-process servers sharing one port through SO_REUSEPORT, so
    every core serves calls; forward SIGTERM/SIGINT and wait for all to drain."""
    import tempfile

    from nobill.api.server import bind_problem
    from nobill.db.migrate import require_latest_schema

    if settings.grpc_addr.endswith(":0"):
        raise ConfigError(addr_source, "several processes need a fixed port, not 0")
    if settings.usage_grpc_addr.endswith(":0"):
        raise ConfigError("NOBILL_USAGE_GRPC_ADDR", "several processes need a fixed port, not 0")
    # The children share the port with each other only; refuse a port someone else holds.
    for address, source in ((settings.grpc_addr, addr_source), (settings.usage_grpc_addr, "NOBILL_USAGE_GRPC_ADDR")):
        problem = bind_problem(address)
        if problem:
            raise ConfigError(source, f"cannot listen on {address}: {problem}")
    require_latest_schema(settings.require("database_url"))
    env = {
        **os.environ,
        "NOBILL_GRPC_ADDR": settings.grpc_addr,
        "NOBILL_USAGE_GRPC_ADDR": settings.usage_grpc_addr,
        "NOBILL_GRPC_PROCESSES": "1",
    }
    metrics_dir = None
    if settings.metrics_addr:
        # Each child writes its samples here; this process serves their sum.
        metrics_dir = tempfile.mkdtemp(prefix="nobill-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        env["NOBILL_METRICS_ADDR"] = ""
    children: list[subprocess.Popen] = []

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    # The children start the same way on their own; this process only serves the metrics sum.
    runtime = startup.start(settings, audit_keys="off", metrics=True)
    children.extend(
        subprocess.Popen([sys.executable, "-m", "nobill.cli", "serve", "--reuse-port"], env=env) for _ in range(processes)
    )
    log.info("serving", extra={"addr": settings.grpc_addr, "processes": processes, "pids": [c.pid for c in children]})
    codes = []
    for child in children:
        codes.append(child.wait())
        if metrics_dir:
            from nobill.metrics import mark_process_dead

            mark_process_dead(child.pid)
    runtime.close()
    if metrics_dir:
        import shutil

        shutil.rmtree(metrics_dir, ignore_errors=True)
    return max(codes, key=abs)


def _positive(name: str, value: int) -> int:
    if value <= 0:
        raise ConfigError(name, f"must be a positive number, got {value}")
    return value


# --- worker ------------------------------------------------------------------------


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from nobill.jobs.runner import run_worker

    threads = _positive("--threads", args.threads)
    settings.require("redis_url")
    if settings.database_url:
        from nobill.db.migrate import require_latest_schema

        require_latest_schema(settings.database_url)
    # The worker's actors build their database and Stripe gateway from these settings (jobs.runtime).
    with startup.start(settings, audit_keys="optional", metrics=True):
        run_worker(settings, threads=threads)
    return 0


# --- scheduler ---------------------------------------------------------------------


def _scheduler(args: argparse.Namespace, settings: Settings) -> int:
    from nobill.jobs.scheduler import run_scheduler

    with startup.start(settings, audit_keys="off"):
        run_scheduler(settings)
    return 0


# --- stripe ------------------------------------------------------------------------


def _stripe_sync(args: argparse.Namespace, settings: Settings) -> int:
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


def _stripe_replay(args: argparse.Namespace, settings: Settings) -> int:
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


def _stripe_enterprise_price(args: argparse.Namespace, settings: Settings) -> int:
    from nobill.billing import enterprise, outbox
    from nobill.db.unit_of_work import UnitOfWork
    from nobill.stripe.errors import StripeTransient

    _require_org_id(args.org)
    runtime = startup.start(settings, audit_keys="required", database=True, pool_size=2, stripe=True, broker=True)
    with runtime:
        with UnitOfWork(runtime.database, org_id=args.org) as uow:
            outbox_id = enterprise.set_price(uow=uow, org_id=args.org, amount=args.amount, context=_operator_context())
            uow.commit()
        print(f"recorded {args.amount} {args.org}; creating the Stripe price...", flush=True)
        try:
            outcome = outbox.run(database=runtime.database, gateway=runtime.gateway, org_id=args.org, outbox_id=outbox_id)
        except StripeTransient as error:
            print(f"Stripe is unavailable ({error.message}); the worker will retry", flush=True)
            return 0
    print(f"Stripe price: {outcome}")
    return 0 if outcome in ("done", "skipped") else 1


def _require_org_id(value: str) -> None:
    from nobill import ids

    if not ids.is_valid("org", value):
        raise ConfigError("--org", f"must be an organization id (org_...), got {value!r}")


def _operator_context():  # noqa: ANN202
    from nobill.audit.actors import Actor, ActorType, AuditContext

    operator = os.environ.get("USER", "operator")
    return AuditContext(Actor(ActorType.SYSTEM, f"cli:{operator}", f"operator {operator} (nobill CLI)"), f"cli-{os.getpid()}")


def _stripe_retry_failed(args: argparse.Namespace, settings: Settings) -> int:
    from nobill.billing import outbox
    from nobill.db.unit_of_work import UnitOfWork

    _require_org_id(args.org)
    with startup.start(settings, audit_keys="required", database=True, pool_size=2, broker=True) as runtime:
        with UnitOfWork(runtime.database, org_id=args.org) as uow:
            retried = outbox.retry_failed(uow=uow, org_id=args.org, context=_operator_context())
            uow.commit()
    print(f"{len(retried)} failed Stripe change(s) queued again")
    for outbox_id in retried:
        print(f"  {outbox_id}")
    return 0


def _stripe_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from nobill.billing import seats

    runtime = startup.start(settings, audit_keys="required", database=True, pool_size=2, stripe=True, broker=True)
    with runtime:
        drifts = seats.reconcile(database=runtime.database, gateway=runtime.gateway)
    for drift in drifts:
        print(f"{drift.org_id}: {drift.message}")
    print(f"{len(drifts)} org(s) drifted")
    return 0


# --- migrate -----------------------------------------------------------------------


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from nobill.db.migrate import draft_revision, upgrade

    startup.start(settings, audit_keys="off")
    if args.draft:
        path = draft_revision(settings.require("database_url"), args.draft)
        print(f"drafted {path}; review it (autogenerate misses RLS policies, grants and CHECK constraints)")
        return 0

    # Each revision applied is logged, so a long migration shows where it is.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.INFO)
    upgrade(settings.require("database_url"), app_role=settings.db_app_role, revision=args.revision)
    print(f"database migrated to {args.revision}")
    return 0


# --- token -------------------------------------------------------------------------


def _token(args: argparse.Namespace, settings: Settings) -> int:
    from nobill.auth.tokens import mint_token

    startup.start(settings, audit_keys="off")
    secret = settings.jwt_secret or _dev_secret(settings)
    if not secret:
        raise ConfigError("NOBILL_JWT_SECRET", "required to mint tokens (or run `nobill dev` first)")
    if args.service and not args.scope:
        raise ConfigError("--scope", "a service token needs at least one --scope")
    if not 0 < args.ttl <= settings.jwt_max_lifetime_seconds:
        # A longer-lived token would be refused by every server (NOBILL_JWT_MAX_LIFETIME_SECONDS).
        raise ConfigError("--ttl", f"must be between 1 and {settings.jwt_max_lifetime_seconds} seconds")
    token = mint_token(
        secret=secret,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        subject=args.subject,
        email=args.email,
        service=args.service,
        scopes=args.scope or (),
        orgs=args.org or (),
        ttl_seconds=args.ttl,
    )
    print(token)
    return 0


def _dev_secret(settings: Settings) -> str | None:
    path = Path(settings.data_dir) / "dev.json"
    if path.exists():
        return json.loads(path.read_text()).get("jwt_secret")
    return None


# --- audit -------------------------------------------------------------------------


def _audit_checkpoint(args: argparse.Namespace, settings: Settings) -> int:
    from nobill.audit import checkpoints, keys
    from nobill.audit import service as audit
    from nobill.db.unit_of_work import transaction

    with startup.start(settings, audit_keys="required", database=True, pool_size=1) as runtime:
        keyring = keys.current()
        with transaction(runtime.database) as uow:
            heads = audit.heads(uow=uow)
    wanted = set(args.org or ())
    taken = [
        checkpoints.sign(keyring, org_id=head.org_id, sequence=head.sequence, hash=head.hash)
        for head in heads
        if not wanted or head.org_id in wanted
    ]
    missing = wanted - {checkpoint.org_id for checkpoint in taken}
    if missing:
        raise ConfigError("--org", f"no audit chain for {', '.join(sorted(missing))}")
    document = checkpoints.dumps(taken)
    if args.output in (None, "-"):
        sys.stdout.write(document)
    else:
        path = Path(args.output)
        path.write_text(document)
        print(f"checkpoint of {len(taken)} organization(s) written to {path}", file=sys.stderr)
    return 0


def _audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    from nobill.audit import checkpoints, keys
    from nobill.audit import service as audit
    from nobill.db.unit_of_work import transaction
    from nobill.errors import InvalidArgument

    runtime = startup.start(settings, audit_keys="required")
    keyring = keys.current()
    entries: list[tuple[str, checkpoints.Checkpoint | None]] = []
    # NOTE: a bad --checkpoint stops before the database is opened (nothing to close yet).
    if args.checkpoint is not None:
        try:
            text = sys.stdin.read() if args.checkpoint == "-" else Path(args.checkpoint).read_text()
        except OSError as error:
            raise ConfigError("--checkpoint", f"cannot read {args.checkpoint}: {error.strerror or error}") from None
        try:
            entries = [(entry.org_id, entry) for entry in checkpoints.loads(text)]
        except InvalidArgument as error:
            raise ConfigError("--checkpoint", error.message) from None
    runtime.database = database = startup.connect_database(settings, pool_size=1)
    broken = 0
    try:
        if args.checkpoint is None:  # every org's chain alone
            with transaction(database) as uow:
                entries = [(org_id, None) for org_id in audit.org_ids(uow=uow)]
        if args.org:
            entries = [(org_id, entry) for org_id, entry in entries if org_id in set(args.org)]
        for position, (org_id, entry) in enumerate(entries, 1):
            try:
                if entry is not None:
                    checkpoints.check_signature(keyring, entry)
                with transaction(database, org_id=org_id) as uow:
                    report = audit.verify_chain(uow=uow, checkpoint=entry)
            except InvalidArgument as error:
                report = audit.ChainReport(False, 0, 0, error.message)
            status = "valid" if report.valid else f"BROKEN at event {report.first_broken_sequence}: {report.reason}"
            print(f"[{position}/{len(entries)}] {org_id}: {status} ({report.events_checked} events checked)")
            broken += not report.valid
    finally:
        runtime.close()
    print(f"{len(entries) - broken} of {len(entries)} organization(s) verified", file=sys.stderr)
    return 1 if broken else 0


def _audit_seal(args: argparse.Namespace, settings: Settings) -> int:
    from nobill.audit import service as audit
    from nobill.db.unit_of_work import transaction

    refused = 0
    with startup.start(settings, audit_keys="required", database=True, pool_size=1) as runtime:
        with transaction(runtime.database) as uow:
            org_ids = [org_id for org_id in audit.org_ids(uow=uow) if not args.org or org_id in set(args.org)]
        for org_id in org_ids:
            with transaction(runtime.database, org_id=org_id) as uow:
                report = audit.seal_chain(uow=uow)
            print(f"{org_id}: {report.message}" if report.sealed else f"{org_id}: NOT SEALED: {report.message}")
            refused += not report.sealed
    return 1 if refused else 0


# --- dev ---------------------------------------------------------------------------


def _dev(args: argparse.Namespace, settings: Settings) -> int:
    from nobill.dev import run_dev

    data_dir_source = "NOBILL_DATA_DIR"
    if args.data_dir:
        settings = settings.replace(data_dir=args.data_dir)
        data_dir_source = "--data-dir"
    addr_source = "NOBILL_GRPC_ADDR"
    if args.addr:
        settings = settings.replace(grpc_addr=parse_address("--addr", args.addr))
        addr_source = "--addr"
    run_dev(settings, ready_file=args.ready_file, addr_source=addr_source, data_dir_source=data_dir_source)
    return 0


# --- webhooks ----------------------------------------------------------------------


def _webhooks(args: argparse.Namespace, settings: Settings) -> int:
    from nobill.webhooks.runner import run_webhooks

    addr_source = "NOBILL_WEBHOOKS_ADDR"
    if args.addr:
        settings = settings.replace(webhooks_addr=parse_address("--addr", args.addr))
        addr_source = "--addr"
    if args.core:
        settings = settings.replace(core_addr=parse_address("--core", args.core))
    stop = stop_requested()
    with startup.start(settings, audit_keys="off"):
        run_webhooks(settings, stop, addr_source=addr_source)
    return 0


# --- sandbox -----------------------------------------------------------------------


def _sandbox(args: argparse.Namespace, settings: Settings) -> int:
    from nobill.sandbox import cli as sandbox_cli

    return sandbox_cli.run(args)


def _sandbox_missing(args: argparse.Namespace, settings: Settings) -> int:
    raise ConfigError("nobill sandbox", SANDBOX_MISSING)


# The sandbox is its own distribution (sandbox/pyproject.toml): see nobill.startup.
SANDBOX_MISSING = startup.SANDBOX_MISSING
sandbox_installed = startup.sandbox_installed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nobill",
        description="NOBill: multi-tenant, Stripe-backed billing platform service. "
        "Settings come from NOBILL_* environment variables (see README).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gRPC server", description="Run the gRPC server.")
    serve.add_argument("--addr", help="host:port to listen on (default: NOBILL_GRPC_ADDR)")
    serve.add_argument("--usage-addr", help="host:port of the usage server (default: NOBILL_USAGE_GRPC_ADDR)")
    serve.add_argument(
        "--processes", type=int, help="server processes sharing the port (default: NOBILL_GRPC_PROCESSES)"
    )
    # Set by `serve --processes N` on its children only: they share the port with each other.
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(handler=_serve)

    worker = commands.add_parser(
        "worker", help="run the Dramatiq job worker", description="Run the Dramatiq actors (needs NOBILL_REDIS_URL)."
    )
    worker.add_argument("--threads", type=int, default=8, help="worker threads (default: 8)")
    worker.set_defaults(handler=_worker)

    scheduler = commands.add_parser(
        "scheduler",
        help="enqueue periodic jobs",
        description="Enqueue the periodic jobs (outbox and inbox sweeps, trial expiry, seat reconciliation). "
        "Run one or more; a Redis lease makes one of them the leader.",
    )
    scheduler.set_defaults(handler=_scheduler)

    stripe = commands.add_parser("stripe", help="Stripe operations", description="Stripe operations (need STRIPE_API_KEY).")
    stripe_commands = stripe.add_subparsers(dest="stripe_command", required=True, metavar="SUBCOMMAND")
    sync = stripe_commands.add_parser(
        "sync",
        help="create or update products, prices and meters from the catalog",
        description="Make Stripe's products, prices (by lookup_key) and Billing Meters match "
        "nobill/billing/catalog.toml. Idempotent: a second run changes nothing.",
    )
    sync.set_defaults(handler=_stripe_sync)
    replay = stripe_commands.add_parser(
        "replay",
        help="replay parked webhook events",
        description="Put parked webhook events (all, or the ids given) back in the queue to be applied.",
    )
    replay.add_argument("event_id", nargs="*", help="event ids (evt_...); none: every parked event")
    replay.add_argument("--list", action="store_true", help="only list parked events")
    replay.set_defaults(handler=_stripe_replay)
    price = stripe_commands.add_parser(
        "enterprise-price",
        help="set an Enterprise org's own monthly base price",
        description="Create the org's own Enterprise base price on Stripe and move its live Enterprise "
        "subscription onto it; later checkouts use it.",
    )
    price.add_argument("--org", required=True, help="organization id (org_...)")
    price.add_argument("--amount", required=True, type=int, help="monthly amount in minor units (cents)")
    price.set_defaults(handler=_stripe_enterprise_price)
    retry = stripe_commands.add_parser(
        "retry-failed",
        help="queue an org's failed Stripe changes again",
        description="Put an org's Stripe changes that failed for good (GetSubscription's sync_error) back "
        "in the queue, once their cause is fixed.",
    )
    retry.add_argument("--org", required=True, help="organization id (org_...)")
    retry.set_defaults(handler=_stripe_retry_failed)
    reconcile = stripe_commands.add_parser(
        "reconcile-seats",
        help="compare Pro seat counts with members and fix drift",
        description="Compare each Pro subscription's seats on Stripe with the member count; queue a sync for each drift.",
    )
    reconcile.set_defaults(handler=_stripe_reconcile)

    migrate = commands.add_parser(
        "migrate", help="apply database migrations", description="Apply Alembic migrations to NOBILL_DATABASE_URL."
    )
    migrate.add_argument("--revision", default="head", help="target revision (default: head)")
    migrate.add_argument(
        "--draft", metavar="MESSAGE",
        help="instead of migrating, draft a new revision from the difference between the tables in "
        "nobill/*/tables.py and the (fully migrated) database",
    )
    migrate.set_defaults(handler=_migrate)

    token = commands.add_parser(
        "token",
        help="mint a development token",
        description="Mint an HS256 token with NOBILL_JWT_SECRET (or the secret `nobill dev` created).",
    )
    token.add_argument("--subject", "--sub", default="dev-user", help="the `sub` claim (default: dev-user)")
    token.add_argument("--email", help="the `email` claim of a user token")
    token.add_argument("--service", action="store_true", help="mint a service token instead of a user token")
    token.add_argument("--scope", action="append", help="a scope of a service token (repeatable)")
    token.add_argument("--org", action="append", help="an org id a service token may act for, or * (repeatable)")
    token.add_argument("--ttl", type=int, default=24 * 3600, help="lifetime in seconds (default: 86400)")
    token.set_defaults(handler=_token)

    job_commands.register(commands)

    audit = commands.add_parser(
        "audit",
        help="checkpoint and verify the audit chains",
        description="Export signed checkpoints of every organization's audit chain head, and verify the chains "
        "against them (NOBILL_DATABASE_URL, NOBILL_AUDIT_KEY). Keep checkpoints outside the database.",
    )
    audit_commands = audit.add_subparsers(dest="audit_command", required=True, metavar="SUBCOMMAND")
    checkpoint = audit_commands.add_parser(
        "checkpoint",
        help="write a signed checkpoint of each organization's chain head",
        description="Write a signed checkpoint (JSON) of each organization's audit chain head.",
    )
    checkpoint.add_argument("--output", "-o", help="file to write (default: stdout)")
    checkpoint.add_argument("--org", action="append", help="only this organization (repeatable)")
    checkpoint.set_defaults(handler=_audit_checkpoint)
    verify = audit_commands.add_parser(
        "verify",
        help="verify the audit chains, alone or against a checkpoint",
        description="Verify each organization's chain (each checkpointed one, with --checkpoint): every keyed hash, "
        "the head's seal, and that a checkpointed event is still there unchanged. Exit 1 if any chain is broken.",
    )
    verify.add_argument("--checkpoint", help="checkpoint file written by `nobill audit checkpoint` (- for stdin)")
    verify.add_argument("--org", action="append", help="only this organization (repeatable)")
    verify.set_defaults(handler=_audit_verify)
    seal = audit_commands.add_parser(
        "seal",
        help="seal the chain heads from before sealed heads (once, after upgrading)",
        description="Seal the head of each chain that has no seal (history from before migration 0007, or from "
        "before audit keys), once, right after upgrading. Exit 1 if a chain is refused: a chain that was sealed "
        "before and lost its seal was tampered with.",
    )
    seal.add_argument("--org", action="append", help="only this organization (repeatable)")
    seal.set_defaults(handler=_audit_seal)

    dev = commands.add_parser(
        "dev",
        help="run everything on embedded defaults",
        description="Start embedded PostgreSQL and Redis (unless NOBILL_DATABASE_URL / NOBILL_REDIS_URL are set), "
        "the Stripe sandbox (unless STRIPE_API_KEY is set; it keeps its port in the data dir), migrations, "
        "the catalog sync, then the gRPC and usage servers, the worker, the scheduler and the Stripe webhook "
        "sidecar (NOBILL_WEBHOOKS_ADDR). Print the addresses and a development token and write them to "
        "<data dir>/dev.json; write the settings other commands need to act on it to <data dir>/dev.env. "
        "Ctrl-C (SIGINT) or SIGTERM stops it: new work is refused, work in hand drains, the embedded "
        "servers stop last.",
    )
    dev.add_argument("--data-dir", help="where to keep all state (default: NOBILL_DATA_DIR or .nobill)")
    dev.add_argument("--addr", help="gRPC host:port (default: NOBILL_GRPC_ADDR)")
    dev.add_argument("--ready-file", help=argparse.SUPPRESS)
    dev.set_defaults(handler=_dev)

    webhooks = commands.add_parser(
        "webhooks",
        help="run the Stripe webhook sidecar",
        description="Accept Stripe webhooks on POST /stripe/webhooks and forward each (raw body and "
        "Stripe-Signature) to BillingService.IngestStripeEvent; answer 2xx only once the core has stored it. "
        "GET /healthz answers 200 while serving.",
    )
    webhooks.add_argument("--addr", help="host:port to listen on (default: NOBILL_WEBHOOKS_ADDR)")
    webhooks.add_argument("--core", help="the core's gRPC address (default: NOBILL_CORE_ADDR, else NOBILL_GRPC_ADDR)")
    webhooks.set_defaults(handler=_webhooks)

    sandbox = commands.add_parser(
        "sandbox",
        help="run the Stripe sandbox",
        description="A stateful, Stripe-compatible HTTP server for offline development and tests.",
    )
    if sandbox_installed():
        from nobill.sandbox import cli as sandbox_cli

        sandbox_cli.add_arguments(sandbox)
        sandbox.set_defaults(handler=_sandbox)
    else:
        sandbox.set_defaults(handler=_sandbox_missing)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        # Until a command's own start-up (nobill.startup) replaces it: errors in flags and
        # settings are still logged in the configured format.
        configure_logging(settings.log_level, settings.log_format)
        return args.handler(args, settings)
    except ConfigError as error:
        print(f"nobill: configuration error: {error.setting}: {error.problem}", file=sys.stderr)
        return 2
    except Unavailable as error:
        print(f"nobill: {error.message}", file=sys.stderr)
        return 3
    except DomainError as error:
        print(f"nobill: {error.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""`nobill worker`, `nobill scheduler` and `nobill jobs`: the processes that run jobs, and the
jobs the poison rule parked (nobill/jobs/poison.py)."""

from __future__ import annotations

import argparse
import json

from nobill import startup
from nobill.cli.arguments import positive
from nobill.config import Settings


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from nobill.jobs.runner import run_worker

    threads = positive("--threads", args.threads)
    settings.require("redis_url")
    if settings.database_url:
        from nobill.db.migrate import require_latest_schema

        require_latest_schema(settings.database_url)
    # The worker's actors build their database and Stripe gateway from these settings (jobs.runtime).
    with startup.start(settings, audit_keys="optional", metrics=True):
        run_worker(settings, threads=threads)
    return 0


def _scheduler(args: argparse.Namespace, settings: Settings) -> int:
    from nobill.jobs.scheduler import run_scheduler

    with startup.start(settings, audit_keys="off"):
        run_scheduler(settings)
    return 0


def _rule(settings: Settings):  # noqa: ANN202 - PoisonRule, imported lazily
    from nobill.jobs.poison import rule_for

    return rule_for(settings.require("redis_url"), namespace=settings.redis_namespace, threshold=settings.job_poison_after)


def list_parked(args: argparse.Namespace, settings: Settings) -> int:
    """Print each parked job: key, actor, arguments, failures, first/last seen, error."""
    startup.setup_logging(settings)
    jobs = _rule(settings).parked()
    for job in jobs:
        print(f"{job.key}  {job.actor}{tuple(job.arguments['args'])}  failed {job.count} times "
              f"({job.first_seen:%Y-%m-%d %H:%M:%S} .. {job.last_seen:%Y-%m-%d %H:%M:%S} UTC)")
        print(f"    {job.error}")
        if args.json:
            print("    " + json.dumps(job.arguments))
    print(f"{len(jobs)} parked job(s)")
    return 0


def replay_parked(args: argparse.Namespace, settings: Settings) -> int:
    """Unpark the named jobs (or all) and send each once more, its failure count reset."""
    if not args.key and not args.all:
        print("nobill jobs replay: name the jobs to replay (see `nobill jobs parked`), or --all")
        return 2
    with startup.start(settings, audit_keys="off", broker=True) as runtime:
        replayed = _rule(settings).replay(runtime.broker, None if args.all else args.key)
    print(f"replayed {len(replayed)} parked job(s)")
    for key in replayed:
        print(f"  {key}")
    missing = sorted(set(args.key or ()) - set(replayed))
    for key in missing:
        print(f"  not parked: {key}")
    return 1 if missing else 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add `nobill worker`, `nobill scheduler` and `nobill jobs` to the `nobill` command."""
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

    jobs = commands.add_parser("jobs", help="parked jobs", description="Jobs the poison rule parked (NOBILL_JOB_POISON_AFTER).")
    job_commands = jobs.add_subparsers(dest="jobs_command", required=True, metavar="COMMAND")
    parked = job_commands.add_parser("parked", help="list parked jobs", description="List parked jobs, oldest first.")
    parked.add_argument("--json", action="store_true", help="also print each job's arguments as JSON")
    parked.set_defaults(handler=list_parked)
    again = job_commands.add_parser(
        "replay", help="run parked jobs again",
        description="Unpark jobs and send each once more (fix the cause first: a job that fails the same way "
                    "NOBILL_JOB_POISON_AFTER times again is parked again).",
    )
    again.add_argument("key", nargs="*", help="job keys as `nobill jobs parked` prints them")
    again.add_argument("--all", action="store_true", help="every parked job")
    again.set_defaults(handler=replay_parked)

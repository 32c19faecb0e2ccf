"""`nobill migrate`: apply (or draft) database migrations."""

from __future__ import annotations

import argparse
import logging

from nobill import startup
from nobill.config import Settings


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


def register(commands: argparse._SubParsersAction) -> None:
    """Add `nobill migrate` to the `nobill` command."""
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

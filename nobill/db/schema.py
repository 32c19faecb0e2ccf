"""The schema as the code declares it: every domain's tables on one MetaData.

The SQLAlchemy tables are the source of truth; migrations must build exactly them.
Alembic's autogenerate compares the two (`migrations/env.py` uses `target_metadata()`),
and tests/db/test_schema_matches_migrations.py fails on any difference.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
from dataclasses import dataclass

from sqlalchemy import MetaData

from nobill.db.base import metadata


@dataclass(frozen=True)
class Exclusion:
    """An object the migrations create that the tables do not declare, on purpose."""

    kind: str  # as Alembic names it: "table", "index", "unique_constraint", "foreign_key_constraint", "column"
    pattern: str  # regular expression matched against the whole name
    why: str


# NOTE: keep this list short and say why for each entry; everything not listed here must be
# declared in a `nobill/<domain>/tables.py`. Typical entries: partitions a job creates at
# run time, e.g. Exclusion("table", r"usage_events_\d{6}", "monthly partitions made by the
# partition job; the parent table is declared").
EXCLUSIONS: tuple[Exclusion, ...] = (
    Exclusion("table", "alembic_version", "Alembic's own bookkeeping"),
    Exclusion(
        "table", r"usage_events_w\d+",
        "35-day partitions of usage_events made ahead by the partition job (nobill/usage/partitions.py); "
        "the partitioned parent is declared",
    ),
)


def excluded(kind: str, name: str | None) -> bool:
    return name is not None and any(e.kind == kind and re.fullmatch(e.pattern, name) for e in EXCLUSIONS)


def include_object(obj: object, name: str | None, kind: str, reflected: bool, compare_to: object) -> bool:
    """Alembic's `include_object` hook: skip the listed exclusions."""
    return not excluded(kind, name)


def target_metadata() -> MetaData:
    """The shared MetaData with every domain's tables on it: each `nobill.<domain>.tables`
    module is imported, so a new domain's tables are found without being listed here."""
    import nobill

    for module in pkgutil.iter_modules(nobill.__path__):
        name = f"nobill.{module.name}.tables"
        if module.ispkg and importlib.util.find_spec(name) is not None:
            importlib.import_module(name)
    return metadata

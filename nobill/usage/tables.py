"""Tables of the usage domain (kept in step with migrations/versions/0004_usage.py).

`usage_events` is partitioned by LIST (dedupe_window); its partitions `usage_events_w<N>`
are created and dropped at run time (nobill/usage/partitions.py) and are not declared here."""

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKeyConstraint,
    Identity,
    Integer,
    PrimaryKeyConstraint,
    Table,
    Text,
)

from nobill.db.base import metadata

usage_events = Table(
    "usage_events",
    metadata,
    Column("org_id", Text, nullable=False),
    Column("idempotency_key", Text, nullable=False),
    Column("dedupe_window", Integer, nullable=False),
    Column("metric", Text, nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("properties", Text),
    PrimaryKeyConstraint("org_id", "idempotency_key", "dedupe_window"),
    postgresql_partition_by="LIST (dedupe_window)",
)

# The aggregation outbox: one row per (batch, metric, period) written with the batch.
usage_deltas = Table(
    "usage_deltas",
    metadata,
    Column("org_id", Text, nullable=False),
    Column("delta_id", BigInteger, Identity(always=True), nullable=False),
    Column("metric", Text, nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("event_count", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("org_id", "delta_id"),
    ForeignKeyConstraint(["org_id"], ["organizations.org_id"]),
)

usage_totals = Table(
    "usage_totals",
    metadata,
    Column("org_id", Text, nullable=False),
    Column("metric", Text, nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("event_count", BigInteger, nullable=False),
    Column("reported_quantity", BigInteger, nullable=False, server_default="0"),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("org_id", "metric", "period_start"),
    ForeignKeyConstraint(["org_id"], ["organizations.org_id"]),
)

"""Tables of the usage domain (kept in step with migrations/versions/0004_usage.py, 0005, 0009).

`usage_events` is partitioned by LIST (dedupe_window); its partitions `usage_events_w<N>`
are created and dropped at run time (nobill/usage/partitions.py) and are not declared here."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Index,
    UniqueConstraint,
    text,
    Column,
    DateTime,
    ForeignKeyConstraint,
    Identity,
    Integer,
    Numeric,
    PrimaryKeyConstraint,
    Table,
    Text,
)

from nobill.db.base import metadata

usage_events = Table(
    "usage_events",
    metadata,
    # Opaque identifiers, compared byte by byte (migration 0005): cheaper index descents.
    Column("org_id", Text(collation="C"), nullable=False),
    Column("idempotency_key", Text(collation="C"), nullable=False),
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
    Column("period_end", DateTime(timezone=True), nullable=False),
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
    # NUMERIC (migration 0009): a period's total is unbounded (any number of events).
    Column("quantity", Numeric, nullable=False),
    Column("event_count", BigInteger, nullable=False),
    Column("reported_quantity", Numeric, nullable=False, server_default="0"),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("org_id", "metric", "period_start"),
    ForeignKeyConstraint(["org_id"], ["organizations.org_id"]),
)

# Reports of usage deltas to Stripe meters (pending before the call, sent after it).
usage_reports = Table(
    "usage_reports",
    metadata,
    Column("org_id", Text, nullable=False),
    Column("report_id", Text, nullable=False),
    Column("metric", Text, nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("identifier", Text, nullable=False),
    Column("stripe_customer_id", Text, nullable=False),
    Column("event_timestamp", DateTime(timezone=True), nullable=False),
    Column("state", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("claimed_until", DateTime(timezone=True)),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True)),
    PrimaryKeyConstraint("org_id", "report_id"),
    UniqueConstraint("org_id", "identifier"),
    ForeignKeyConstraint(["org_id"], ["organizations.org_id"]),
    CheckConstraint("state IN ('pending', 'sent', 'superseded', 'failed')", name="state"),
    Index("usage_reports_org_id_metric_idx", "org_id", "metric", unique=True, postgresql_where=text("state = 'pending'")),
)

# The last comparison of the org's reported totals with Stripe's meter summaries.
usage_reconciliations = Table(
    "usage_reconciliations",
    metadata,
    Column("org_id", Text, nullable=False),
    Column("checked_at", DateTime(timezone=True), nullable=False),
    Column("in_sync", Boolean, nullable=False),
    Column("drift_quantity", BigInteger, nullable=False),
    PrimaryKeyConstraint("org_id"),
    ForeignKeyConstraint(["org_id"], ["organizations.org_id"]),
)

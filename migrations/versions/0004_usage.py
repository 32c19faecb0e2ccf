"""Usage: events in 35-day partitions (exact deduplication, retention by DROP), per-batch
deltas (the aggregation outbox) and totals per org, metric and billing period.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import time

import sqlalchemy as sa
from alembic import op

from rls import app_role, isolate_tenant

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Must match nobill/usage/partitions.py.
WINDOW_DAYS = 35


def upgrade() -> None:
    role = app_role()
    # Events are partitioned by LIST on the dedupe window: floor(days since epoch of the
    # time of receipt / 35). A key is unique inside a window (primary key) and checked
    # against the previous window, so it counts once for at least 35 days; windows older
    # than that are dropped whole (no DELETE). No foreign key: a per-row check would cost
    # more than the write itself, and the org is checked by the permission check.
    op.execute(
        """CREATE TABLE usage_events (
            org_id text NOT NULL,
            idempotency_key text NOT NULL,
            dedupe_window integer NOT NULL,
            metric text NOT NULL,
            quantity bigint NOT NULL,
            occurred_at timestamptz NOT NULL,
            received_at timestamptz NOT NULL,
            properties text,
            CONSTRAINT usage_events_pkey PRIMARY KEY (org_id, idempotency_key, dedupe_window)
        ) PARTITION BY LIST (dedupe_window)"""
    )
    isolate_tenant("usage_events", privileges="SELECT, INSERT")

    op.create_table(
        "usage_deltas",
        sa.Column("org_id", sa.Text, sa.ForeignKey("organizations.org_id"), nullable=False),
        sa.Column("delta_id", sa.BigInteger, sa.Identity(always=True), nullable=False),
        sa.Column("metric", sa.Text, nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("quantity", sa.BigInteger, nullable=False),
        sa.Column("event_count", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "delta_id"),
    )
    # UPDATE only for SELECT ... FOR UPDATE (aggregators take rows); deltas are never changed.
    isolate_tenant("usage_deltas", privileges="SELECT, INSERT, UPDATE, DELETE")

    op.create_table(
        "usage_totals",
        sa.Column("org_id", sa.Text, sa.ForeignKey("organizations.org_id"), nullable=False),
        sa.Column("metric", sa.Text, nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("quantity", sa.BigInteger, nullable=False),
        sa.Column("event_count", sa.BigInteger, nullable=False),
        sa.Column("reported_quantity", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "metric", "period_start"),
    )
    isolate_tenant("usage_totals", privileges="SELECT, INSERT, UPDATE")

    # Reports of usage deltas to Stripe meters: pending before the call, sent after it. At
    # most one pending report per org and metric (one Stripe customer, one meter): one call
    # in flight per customer and meter, and a crash retries the same identifier.
    op.create_table(
        "usage_reports",
        sa.Column("org_id", sa.Text, sa.ForeignKey("organizations.org_id"), nullable=False),
        sa.Column("report_id", sa.Text, nullable=False),
        sa.Column("metric", sa.Text, nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("quantity", sa.BigInteger, nullable=False),
        sa.Column("identifier", sa.Text, nullable=False),
        sa.Column("stripe_customer_id", sa.Text, nullable=False),
        sa.Column("event_timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("claimed_until", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("org_id", "report_id"),
        sa.UniqueConstraint("org_id", "identifier"),
        sa.CheckConstraint("state IN ('pending', 'sent', 'superseded', 'failed')", name="usage_reports_state_check"),
    )
    op.create_index(
        "usage_reports_org_id_metric_idx", "usage_reports", ["org_id", "metric"],
        unique=True, postgresql_where=sa.text("state = 'pending'"),
    )
    isolate_tenant("usage_reports", privileges="SELECT, INSERT, UPDATE")
    op.create_table(
        "usage_reconciliations",
        sa.Column("org_id", sa.Text, sa.ForeignKey("organizations.org_id"), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("in_sync", sa.Boolean, nullable=False),
        sa.Column("drift_quantity", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("org_id"),
    )
    isolate_tenant("usage_reconciliations", privileges="SELECT, INSERT, UPDATE")

    # Partitions are created ahead of time by a job (and on demand by ingestion) through
    # this function: the app role owns nothing and cannot run DDL itself.
    op.execute(
        """CREATE FUNCTION nobill_usage_ensure_partition(dedupe_window integer) RETURNS text
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
        DECLARE
            name text := 'usage_events_w' || dedupe_window;
        BEGIN
            IF to_regclass(name) IS NULL THEN
                EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF usage_events FOR VALUES IN (%s)',
                               name, dedupe_window);
                EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', name);
                EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', name);
                EXECUTE format('CREATE POLICY tenant_isolation ON %I '
                               'USING (org_id = current_setting(''nobill.org_id'', true)) '
                               'WITH CHECK (org_id = current_setting(''nobill.org_id'', true))', name);
            END IF;
            RETURN name;
        END $$"""
    )
    op.execute(
        """CREATE FUNCTION nobill_usage_drop_partitions_before(dedupe_window integer) RETURNS SETOF text
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
        DECLARE
            part record;
        BEGIN
            FOR part IN
                SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = 'usage_events'::regclass
                  AND c.relname ~ '^usage_events_w[0-9]+$'
                  AND substring(c.relname from 15)::integer < dedupe_window
            LOOP
                EXECUTE format('DROP TABLE %I', part.relname);
                RETURN NEXT part.relname;
            END LOOP;
        END $$"""
    )
    # The one look across orgs: which orgs have deltas waiting to be aggregated. It
    # returns org ids only; each org's aggregation runs in a unit of work bound to it.
    op.execute(
        """CREATE FUNCTION nobill_usage_orgs_with_deltas() RETURNS SETOF text
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
            SELECT DISTINCT org_id FROM usage_deltas
        $$"""
    )
    # Orgs with usage not yet reported to Stripe (or a report waiting): ids only.
    op.execute(
        """CREATE FUNCTION nobill_usage_orgs_to_report() RETURNS SETOF text
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
            SELECT org_id FROM usage_totals WHERE quantity > reported_quantity
            UNION SELECT org_id FROM usage_reports WHERE state = 'pending'
        $$"""
    )
    # Orgs with usage reported in the last `days` days: what reconciliation compares.
    op.execute(
        """CREATE FUNCTION nobill_usage_orgs_reported_since(since timestamptz) RETURNS SETOF text
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
            SELECT DISTINCT org_id FROM usage_reports WHERE created_at >= since
        $$"""
    )
    for function in (
        "nobill_usage_orgs_to_report()",
        "nobill_usage_orgs_reported_since(timestamptz)",
        "nobill_usage_ensure_partition(integer)",
        "nobill_usage_drop_partitions_before(integer)",
        "nobill_usage_orgs_with_deltas()",
    ):
        op.execute(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC")
        op.execute(f'GRANT EXECUTE ON FUNCTION {function} TO "{role}"')

    current = int(time.time() // 86400) // WINDOW_DAYS
    for window in (current - 1, current, current + 1):
        op.execute(f"SELECT nobill_usage_ensure_partition({window})")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS nobill_usage_orgs_reported_since(timestamptz)")
    op.execute("DROP FUNCTION IF EXISTS nobill_usage_orgs_to_report()")
    op.drop_table("usage_reconciliations")
    op.drop_table("usage_reports")
    op.execute("DROP FUNCTION IF EXISTS nobill_usage_orgs_with_deltas()")
    op.execute("DROP FUNCTION IF EXISTS nobill_usage_drop_partitions_before(integer)")
    op.execute("DROP FUNCTION IF EXISTS nobill_usage_ensure_partition(integer)")
    op.drop_table("usage_totals")
    op.drop_table("usage_deltas")
    op.execute("DROP TABLE usage_events")

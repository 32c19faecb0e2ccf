"""Billing: Stripe customers, the Stripe outbox, invoices, the webhook inbox and the
global routing tables; subscriptions gain Stripe's state.

Revision ID: 0003
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from rls import app_role, isolate_tenant

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    role = app_role()
    # The customer id lives in stripe_customers now (one place, created by the outbox).
    op.drop_column("subscriptions", "stripe_customer_id")
    op.add_column("subscriptions", sa.Column("current_period_start", sa.DateTime(timezone=True)))
    op.add_column("subscriptions", sa.Column("stripe_status", sa.Text))
    op.add_column("subscriptions", sa.Column("past_due_since", sa.DateTime(timezone=True)))
    op.add_column("subscriptions", sa.Column("pending_plan", sa.Text))
    op.add_column(
        "subscriptions", sa.Column("has_payment_method", sa.Boolean, nullable=False, server_default=sa.text("false"))
    )
    op.add_column("subscriptions", sa.Column("metered", sa.Boolean, nullable=False, server_default=sa.text("false")))
    op.add_column("subscriptions", sa.Column("sync_error", sa.Text))
    op.create_check_constraint("subscriptions_plan_check", "subscriptions", "plan IN ('starter', 'pro', 'enterprise')")
    op.create_check_constraint(
        "subscriptions_status_check",
        "subscriptions",
        "status IN ('trialing', 'active', 'past_due', 'canceled', 'incomplete')",
    )
    op.create_check_constraint(
        "subscriptions_pending_plan_check",
        "subscriptions",
        "pending_plan IS NULL OR pending_plan IN ('starter', 'pro', 'enterprise')",
    )

    op.create_table(
        "stripe_customers",
        sa.Column("org_id", sa.Text, sa.ForeignKey("organizations.org_id"), primary_key=True),
        sa.Column("stripe_customer_id", sa.Text),
        sa.Column("test_clock_id", sa.Text),
        sa.Column("enterprise_price_id", sa.Text),
        sa.Column("enterprise_base_amount", sa.BigInteger),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "invoices",
        sa.Column("org_id", sa.Text, sa.ForeignKey("organizations.org_id"), nullable=False),
        sa.Column("invoice_id", sa.Text, nullable=False),
        sa.Column("stripe_subscription_id", sa.Text),
        sa.Column("number", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("amount_due", sa.BigInteger, nullable=False),
        sa.Column("amount_paid", sa.BigInteger, nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True)),
        sa.Column("period_end", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hosted_invoice_url", sa.Text),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sort_key", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("org_id", "invoice_id"),
    )
    op.create_index("invoices_org_id_sort_key_idx", "invoices", ["org_id", "sort_key"])
    op.create_table(
        "stripe_outbox",
        sa.Column("org_id", sa.Text, sa.ForeignKey("organizations.org_id"), nullable=False),
        sa.Column("outbox_id", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("idempotency_key", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("requested_by", JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("org_id", "outbox_id"),
        sa.CheckConstraint(
            "kind IN ('create_customer', 'sync_seats', 'set_enterprise_price')", name="stripe_outbox_kind_check"
        ),
        sa.CheckConstraint("state IN ('pending', 'done', 'failed')", name="stripe_outbox_state_check"),
    )
    op.create_index(
        "stripe_outbox_org_id_pending_seat_sync_idx",
        "stripe_outbox",
        ["org_id", "kind"],
        unique=True,
        postgresql_where=sa.text("state = 'pending' AND kind = 'sync_seats'"),
    )
    for table in ("stripe_customers", "invoices", "stripe_outbox"):
        isolate_tenant(table)
    # A user listing their orgs sees each org's subscription (own_subscriptions, 0001);
    # nothing else here is visible outside a unit of work bound to the org.

    # --- global, narrow: routing and the inbox (docs/BILLING.md, "Work across orgs") ---
    op.create_table(
        "stripe_customer_routes",
        sa.Column("stripe_customer_id", sa.Text, primary_key=True),
        sa.Column("org_id", sa.Text, sa.ForeignKey("organizations.org_id"), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "billing_due_work",
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("org_id", sa.Text, sa.ForeignKey("organizations.org_id"), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kind", "org_id"),
        sa.CheckConstraint("kind IN ('outbox', 'trial_end')", name="billing_due_work_kind_check"),
    )
    op.create_index("billing_due_work_kind_due_at_idx", "billing_due_work", ["kind", "due_at"])
    op.create_table(
        "stripe_events",
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("stripe_customer_id", sa.Text),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("org_id", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("last_error", sa.Text),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("state IN ('pending', 'applied', 'ignored', 'parked')", name="stripe_events_state_check"),
    )
    op.create_index("stripe_events_state_received_at_idx", "stripe_events", ["state", "received_at"])
    _backfill_existing_orgs()
    op.execute(f'GRANT SELECT, INSERT ON stripe_customer_routes TO "{role}"')
    op.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON billing_due_work TO "{role}"')
    op.execute(f'GRANT SELECT, INSERT, UPDATE ON stripe_events TO "{role}"')


def _backfill_existing_orgs() -> None:
    """Orgs created before billing existed get what start_trial gives a new org: a
    customers row, the outbox row that creates their Stripe customer (same idempotency
    key), and their marks in the due-work index. Runs as the migrating owner."""
    op.execute(
        "INSERT INTO stripe_customers (org_id, created_at, updated_at) "
        "SELECT org_id, now(), now() FROM organizations ON CONFLICT DO NOTHING"
    )
    op.execute(
        """INSERT INTO stripe_outbox (org_id, outbox_id, kind, payload, idempotency_key, state, attempts,
                                      next_attempt_at, requested_by, created_at)
           SELECT o.org_id, 'obx_migrated_' || o.org_id, 'create_customer', jsonb_build_object('name', o.name),
                  'nobill-customer-' || o.org_id, 'pending', 0, now(),
                  jsonb_build_object('type', 'system', 'id', 'migration-0003', 'display_name', 'NOBill migration 0003',
                                     'request_id', 'migration-0003'),
                  now()
           FROM organizations o ON CONFLICT DO NOTHING"""
    )
    op.execute(
        "INSERT INTO billing_due_work (kind, org_id, due_at) SELECT 'outbox', org_id, now() FROM organizations "
        "ON CONFLICT DO NOTHING"
    )
    op.execute(
        "INSERT INTO billing_due_work (kind, org_id, due_at) SELECT 'trial_end', org_id, trial_end FROM subscriptions "
        "WHERE status = 'trialing' AND trial_end IS NOT NULL AND stripe_subscription_id IS NULL ON CONFLICT DO NOTHING"
    )


def downgrade() -> None:
    for table in ("stripe_events", "billing_due_work", "stripe_customer_routes", "stripe_outbox", "invoices", "stripe_customers"):
        op.drop_table(table)
    for name in ("pending_plan", "status", "plan"):
        op.drop_constraint(f"subscriptions_{name}_check", "subscriptions")
    for column in (
        "sync_error", "metered", "has_payment_method", "pending_plan", "past_due_since", "stripe_status",
        "current_period_start",
    ):
        op.drop_column("subscriptions", column)
    op.add_column("subscriptions", sa.Column("stripe_customer_id", sa.Text))

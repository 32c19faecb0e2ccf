"""Foundation: users, organizations, memberships, subscriptions, audit log; RLS and the app role.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from rls import app_role, isolate_tenant

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    role = app_role()
    # Roles are cluster-wide; several databases (tests, dev) may share one.
    op.execute(
        f"""DO $$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                CREATE ROLE "{role}" NOLOGIN NOSUPERUSER NOBYPASSRLS;
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"""
    )
    op.execute(f'GRANT USAGE ON SCHEMA public TO "{role}"')

    op.create_table(
        "users",
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("subject", sa.Text, unique=True),
        sa.Column("email", sa.Text, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.execute(f'GRANT SELECT, INSERT, UPDATE ON users TO "{role}"')

    op.create_table(
        "organizations",
        sa.Column("org_id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
    )
    op.create_table(
        "memberships",
        sa.Column("org_id", sa.Text, sa.ForeignKey("organizations.org_id"), nullable=False),
        sa.Column("user_id", sa.Text, sa.ForeignKey("users.user_id"), nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "user_id"),
        sa.CheckConstraint("role IN ('owner', 'admin', 'member', 'billing_manager')", name="memberships_role_check"),
    )
    op.create_index("memberships_user_id_idx", "memberships", ["user_id"])
    op.create_table(
        "subscriptions",
        sa.Column("org_id", sa.Text, sa.ForeignKey("organizations.org_id"), primary_key=True),
        sa.Column("plan", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("trial_end", sa.DateTime(timezone=True)),
        sa.Column("current_period_end", sa.DateTime(timezone=True)),
        sa.Column("cancel_at_period_end", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("seats", sa.Integer, nullable=False, server_default="1"),
        sa.Column("stripe_customer_id", sa.Text),
        sa.Column("stripe_subscription_id", sa.Text),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "audit_events",
        sa.Column("org_id", sa.Text, sa.ForeignKey("organizations.org_id"), nullable=False),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("actor_type", sa.Text, nullable=False),
        sa.Column("actor_id", sa.Text, nullable=False),
        sa.Column("actor_display", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("target_type", sa.Text, nullable=False),
        sa.Column("target_id", sa.Text, nullable=False),
        sa.Column("before", JSONB),
        sa.Column("after", JSONB),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("previous_hash", sa.Text, nullable=False),
        sa.Column("hash", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("org_id", "sequence"),
    )
    op.create_index("audit_events_org_id_created_at_idx", "audit_events", ["org_id", "created_at"])
    op.create_table(
        "audit_chain_heads",
        sa.Column("org_id", sa.Text, sa.ForeignKey("organizations.org_id"), primary_key=True),
        sa.Column("last_sequence", sa.BigInteger, nullable=False),
        sa.Column("last_hash", sa.Text, nullable=False),
    )

    for table in ("organizations", "memberships", "subscriptions", "audit_chain_heads"):
        isolate_tenant(table)
    isolate_tenant("audit_events", privileges="SELECT, INSERT")

    # A user may list the orgs they belong to: a read-only view across orgs of their own
    # memberships, when a unit of work is bound to the user instead of an org.
    op.execute(
        "CREATE POLICY own_memberships ON memberships FOR SELECT "
        "USING (user_id = current_setting('nobill.user_id', true))"
    )
    op.execute(
        "CREATE POLICY own_organizations ON organizations FOR SELECT "
        "USING (org_id IN (SELECT m.org_id FROM memberships m WHERE m.user_id = current_setting('nobill.user_id', true)))"
    )
    op.execute(
        "CREATE POLICY own_subscriptions ON subscriptions FOR SELECT "
        "USING (org_id IN (SELECT m.org_id FROM memberships m WHERE m.user_id = current_setting('nobill.user_id', true)))"
    )

    # The audit log is append-only for everyone, table owner included.
    op.execute(
        """CREATE FUNCTION nobill_reject_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit events are append-only: % is not allowed', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$"""
    )
    op.execute(
        "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events "
        "FOR EACH ROW EXECUTE FUNCTION nobill_reject_audit_change()"
    )
    op.execute(
        "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION nobill_reject_audit_change()"
    )


def downgrade() -> None:
    for table in ("audit_chain_heads", "audit_events", "subscriptions", "memberships", "organizations", "users"):
        op.drop_table(table)
    op.execute("DROP FUNCTION IF EXISTS nobill_reject_audit_change()")

"""Subscriptions: the drift found between the Stripe subscription's items and what the plan
expects (docs/BILLING.md, "Drift"), shown by GetSubscription; the outbox row kind that
corrects it (`correct_items`).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-20
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "subscriptions",
        sa.Column("drift", postgresql.JSONB(), nullable=False, server_default=sa.text("'[]'::jsonb")),
    )
    _outbox_kinds("'create_customer', 'sync_seats', 'set_enterprise_price', 'correct_items'")


def downgrade() -> None:
    op.execute("DELETE FROM stripe_outbox WHERE kind = 'correct_items'")
    _outbox_kinds("'create_customer', 'sync_seats', 'set_enterprise_price'")
    op.drop_column("subscriptions", "drift")


def _outbox_kinds(kinds: str) -> None:
    op.execute("ALTER TABLE stripe_outbox DROP CONSTRAINT stripe_outbox_kind_check")
    op.execute(f"ALTER TABLE stripe_outbox ADD CONSTRAINT stripe_outbox_kind_check CHECK (kind IN ({kinds}))")

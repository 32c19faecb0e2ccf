"""The webhook inbox: an event whose re-read object belongs to another customer is
refused for good (state `refused`).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_constraint("stripe_events_state_check", "stripe_events")
    op.create_check_constraint(
        "stripe_events_state_check", "stripe_events", "state IN ('pending', 'applied', 'ignored', 'parked', 'refused')"
    )


def downgrade() -> None:
    op.drop_constraint("stripe_events_state_check", "stripe_events")
    op.create_check_constraint(
        "stripe_events_state_check", "stripe_events", "state IN ('pending', 'applied', 'ignored', 'parked')"
    )

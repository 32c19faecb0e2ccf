"""Usage totals in NUMERIC: a period's total can never overflow.

A period total grows with the number of events, which nothing bounds: at the per-event
maximum (10^12, nobill/usage/ingest.py) about 9.2 million events in one period reach
bigint's limit, and past it every aggregation of the org failed for good (Trust #4).
NUMERIC holds any total exactly; each delta row stays bigint (a batch sums at most
10,000 x 10^12 = 10^16). The table holds one row per org, metric and period, so the
rewrite is short.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE usage_totals ALTER COLUMN quantity TYPE numeric, "
        "ALTER COLUMN reported_quantity TYPE numeric"
    )


def downgrade() -> None:
    # Fails (numeric field overflow) if a total no longer fits bigint: nothing is truncated.
    op.execute(
        "ALTER TABLE usage_totals ALTER COLUMN quantity TYPE bigint, "
        "ALTER COLUMN reported_quantity TYPE bigint"
    )

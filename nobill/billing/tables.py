"""Tables of the billing domain."""

from sqlalchemy import Boolean, Column, DateTime, ForeignKeyConstraint, Integer, Table, Text, false

from nobill.db.base import metadata

# One row per org: its plan and the subscription state last reported by Stripe.
subscriptions = Table(
    "subscriptions",
    metadata,
    Column("org_id", Text, primary_key=True),
    Column("plan", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("trial_end", DateTime(timezone=True)),
    Column("current_period_end", DateTime(timezone=True)),
    Column("cancel_at_period_end", Boolean, nullable=False, default=False, server_default=false()),
    Column("seats", Integer, nullable=False, default=1, server_default="1"),
    Column("stripe_customer_id", Text),
    Column("stripe_subscription_id", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    ForeignKeyConstraint(["org_id"], ["organizations.org_id"]),
)

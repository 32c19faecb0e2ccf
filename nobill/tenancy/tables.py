"""Tables of the tenancy domain."""

from sqlalchemy import CheckConstraint, Column, DateTime, ForeignKeyConstraint, Index, PrimaryKeyConstraint, Table, Text

from nobill.db.base import metadata

# Global: a person exists once, across every org they belong to. `subject` is the
# identity provider's `sub`; it is NULL for someone added by email who has not signed in.
users = Table(
    "users",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("subject", Text, unique=True),
    Column("email", Text, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

organizations = Table(
    "organizations",
    metadata,
    Column("org_id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", Text, nullable=False),
)

memberships = Table(
    "memberships",
    metadata,
    Column("org_id", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("org_id", "user_id"),
    ForeignKeyConstraint(["org_id"], ["organizations.org_id"]),
    ForeignKeyConstraint(["user_id"], ["users.user_id"]),
    # Named "memberships_role_check" by the naming convention in nobill/db/base.py.
    CheckConstraint("role IN ('owner', 'admin', 'member', 'billing_manager')", name="role"),
    Index("memberships_user_id_idx", "user_id"),
)

"""Tables of the audit domain. audit_events is append-only: the database rejects
UPDATE, DELETE and TRUNCATE (see the migration)."""

from sqlalchemy import BigInteger, Column, DateTime, ForeignKeyConstraint, Index, PrimaryKeyConstraint, Table, Text
from sqlalchemy.dialects.postgresql import JSONB

from nobill.db.base import metadata

audit_events = Table(
    "audit_events",
    metadata,
    Column("org_id", Text, nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("actor_type", Text, nullable=False),
    Column("actor_id", Text, nullable=False),
    Column("actor_display", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("target_type", Text, nullable=False),
    Column("target_id", Text, nullable=False),
    Column("before", JSONB),
    Column("after", JSONB),
    Column("request_id", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("previous_hash", Text, nullable=False),
    Column("hash", Text, nullable=False),
    # The NOBILL_AUDIT_KEY key whose HMAC `hash` is; NULL for events from before keys.
    Column("key_id", Text),
    PrimaryKeyConstraint("org_id", "sequence"),
    ForeignKeyConstraint(["org_id"], ["organizations.org_id"]),
    Index("audit_events_org_id_created_at_idx", "org_id", "created_at"),
)

# The chain's head per org; locking it serialises appends so sequences have no gaps. The
# app role cannot update it: a trigger on audit_events advances it (migration 0002).
audit_chain_heads = Table(
    "audit_chain_heads",
    metadata,
    Column("org_id", Text, primary_key=True),
    Column("last_sequence", BigInteger, nullable=False),
    Column("last_hash", Text, nullable=False),
    ForeignKeyConstraint(["org_id"], ["organizations.org_id"]),
)

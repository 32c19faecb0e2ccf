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
    # The sequence from which the org's chain is keyed, as this event's keyed hash states it;
    # NULL for unkeyed events and keyed events from before sealed heads (migration 0007).
    Column("keyed_from_sequence", BigInteger),
    PrimaryKeyConstraint("org_id", "sequence"),
    ForeignKeyConstraint(["org_id"], ["organizations.org_id"]),
    Index("audit_events_org_id_created_at_idx", "org_id", "created_at"),
)

# The chain's head per org; locking it serialises appends so sequences have no gaps. The
# app role cannot update it: a trigger on audit_events advances it (migration 0002) and
# clears its seal, which the application writes again through nobill_seal_audit_head()
# (migration 0007).
audit_chain_heads = Table(
    "audit_chain_heads",
    metadata,
    Column("org_id", Text, primary_key=True),
    Column("last_sequence", BigInteger, nullable=False),
    Column("last_hash", Text, nullable=False),
    # Unkeyed events verify only below this sequence (1: the chain is keyed throughout).
    Column("keyed_from_sequence", BigInteger),
    # HMAC-SHA256 under audit key seal_key_id of (org, last sequence, last hash, keyed_from_sequence).
    Column("seal_key_id", Text),
    Column("seal", Text),
    ForeignKeyConstraint(["org_id"], ["organizations.org_id"]),
)

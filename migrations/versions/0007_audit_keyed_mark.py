"""Audit: sealed chain heads, so a keyed chain cannot be downgraded without the key.

Before this, verification accepted unkeyed events ("from before audit keys") as long as
no keyed event preceded them: someone who can write the database could rewrite an org's
whole history as unkeyed events, recompute the plain SHA-256 chain and the head, and the
chain verified. Now:

- audit_chain_heads.keyed_from_sequence: the sequence from which the org's chain is
  keyed (1 for an org created with keys; one past its last unkeyed event for an org from
  before keys). Unkeyed events verify only below it.
- audit_chain_heads.seal_key_id, seal: HMAC-SHA256, under that audit key, of (org id,
  last sequence, last hash, keyed_from_sequence). The application writes it when it
  creates a chain and after each event it appends; the trigger that advances the head
  clears it, so a head moved by anything that does not hold the key is unsealed.
  Verification requires a head sealed by a configured key.
- audit_events.keyed_from_sequence: the mark, as the event's keyed hash states it.
- nobill_seal_audit_head(): the app role seals its bound org's current head (and nothing
  else: it cannot move the head). nobill_lock_audit_head() also returns the seal.
- nobill_audit_org_ids(): every org id, so `nobill audit verify` also checks an org whose
  head is gone.

Chains from before this revision have unsealed heads: `nobill audit seal` seals them once
after upgrading (it needs NOBILL_AUDIT_KEY, which migrations never read).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from rls import app_role

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_DEFINER = "SECURITY DEFINER SET search_path = pg_catalog, public"


def _lock_function(columns: str, returns: str) -> None:
    op.execute("DROP FUNCTION IF EXISTS nobill_lock_audit_head(text)")
    op.execute(
        f"""CREATE FUNCTION nobill_lock_audit_head(p_org_id text)
        RETURNS TABLE ({returns})
        LANGUAGE sql VOLATILE {_DEFINER} AS $$
            SELECT {columns} FROM audit_chain_heads h
            WHERE h.org_id = p_org_id AND h.org_id = current_setting('nobill.org_id', true)
            FOR UPDATE
        $$"""
    )


def _advance_function(sealed: bool) -> None:
    # The head moves only with an event that extends it; a moved head carries no seal (and
    # the event's mark) until the application, holding the key, seals it again.
    assignments = "last_sequence = NEW.sequence, last_hash = NEW.hash"
    if sealed:
        assignments += ", keyed_from_sequence = NEW.keyed_from_sequence, seal_key_id = NULL, seal = NULL"
    op.execute(
        f"""CREATE OR REPLACE FUNCTION nobill_advance_audit_head() RETURNS trigger
        LANGUAGE plpgsql {_DEFINER} AS $$
        DECLARE
            head audit_chain_heads%ROWTYPE;
        BEGIN
            SELECT * INTO head FROM audit_chain_heads WHERE org_id = NEW.org_id FOR UPDATE;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'organization % has no audit chain head', NEW.org_id
                    USING ERRCODE = 'foreign_key_violation';
            END IF;
            IF NEW.sequence <> head.last_sequence + 1 OR NEW.previous_hash <> head.last_hash THEN
                RAISE EXCEPTION 'audit event % of % does not extend the chain (head is %)',
                    NEW.sequence, NEW.org_id, head.last_sequence
                    USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            UPDATE audit_chain_heads SET {assignments} WHERE org_id = NEW.org_id;
            RETURN NEW;
        END $$"""
    )


def upgrade() -> None:
    role = app_role()
    op.add_column("audit_events", sa.Column("keyed_from_sequence", sa.BigInteger))
    op.add_column("audit_chain_heads", sa.Column("keyed_from_sequence", sa.BigInteger))
    op.add_column("audit_chain_heads", sa.Column("seal_key_id", sa.Text))
    op.add_column("audit_chain_heads", sa.Column("seal", sa.Text))

    _advance_function(sealed=True)
    _lock_function(
        "h.last_sequence, h.last_hash, h.keyed_from_sequence, h.seal_key_id, h.seal",
        "last_sequence bigint, last_hash text, keyed_from_sequence bigint, seal_key_id text, seal text",
    )
    # Seals the bound org's head as it is now (sequence and hash must match): it cannot move
    # the head, and a seal made without the key does not verify.
    op.execute(
        f"""CREATE FUNCTION nobill_seal_audit_head(
            p_org_id text, p_last_sequence bigint, p_last_hash text, p_keyed_from_sequence bigint,
            p_seal_key_id text, p_seal text
        ) RETURNS boolean
        LANGUAGE sql VOLATILE {_DEFINER} AS $$
            WITH sealed AS (
                UPDATE audit_chain_heads h
                SET keyed_from_sequence = p_keyed_from_sequence, seal_key_id = p_seal_key_id, seal = p_seal
                WHERE h.org_id = p_org_id AND h.org_id = current_setting('nobill.org_id', true)
                  AND h.last_sequence = p_last_sequence AND h.last_hash = p_last_hash
                RETURNING 1
            )
            SELECT count(*) = 1 FROM sealed
        $$"""
    )
    # The definer functions run as the table owner, which row-level security binds too
    # (FORCE): this policy lets the owner, and so only nobill_audit_org_ids(), list orgs.
    op.execute("CREATE POLICY definer_lists_organizations ON organizations FOR SELECT TO CURRENT_USER USING (true)")
    op.execute(
        f"""CREATE FUNCTION nobill_audit_org_ids() RETURNS TABLE (org_id text)
        LANGUAGE sql STABLE {_DEFINER} AS $$
            SELECT o.org_id FROM organizations o ORDER BY o.org_id
        $$"""
    )
    for function in (
        "nobill_lock_audit_head(text)",
        "nobill_seal_audit_head(text, bigint, text, bigint, text, text)",
        "nobill_audit_org_ids()",
    ):
        op.execute(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC")
        op.execute(f'GRANT EXECUTE ON FUNCTION {function} TO "{role}"')


def downgrade() -> None:
    role = app_role()
    op.execute("DROP FUNCTION IF EXISTS nobill_audit_org_ids()")
    op.execute("DROP POLICY IF EXISTS definer_lists_organizations ON organizations")
    op.execute("DROP FUNCTION IF EXISTS nobill_seal_audit_head(text, bigint, text, bigint, text, text)")
    _lock_function("h.last_sequence, h.last_hash", "last_sequence bigint, last_hash text")
    op.execute("REVOKE ALL ON FUNCTION nobill_lock_audit_head(text) FROM PUBLIC")
    op.execute(f'GRANT EXECUTE ON FUNCTION nobill_lock_audit_head(text) TO "{role}"')
    _advance_function(sealed=False)
    op.drop_column("audit_chain_heads", "seal")
    op.drop_column("audit_chain_heads", "seal_key_id")
    op.drop_column("audit_chain_heads", "keyed_from_sequence")
    op.drop_column("audit_events", "keyed_from_sequence")

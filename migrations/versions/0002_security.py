"""Security: keyed audit events (key_id), the chain head advanced only by the database,
and the app role's grants narrowed to what the code needs.

- audit_events.key_id: the id of the NOBILL_AUDIT_KEY key whose HMAC is the event's hash
  (NULL for events written before keys existed).
- The app role loses UPDATE and DELETE on audit_chain_heads. It reads and locks its org's
  head through nobill_lock_audit_head(); a trigger on audit_events checks that each new
  event extends the head (next sequence, previous_hash = head hash) and advances it.
- The app role loses UPDATE on users. Claiming an invitation (setting the subject of a
  user added by email who has none yet) goes through nobill_claim_invitation(), which can
  do nothing else.
- nobill_audit_heads() lists every org's head for `nobill audit checkpoint`.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from rls import app_role

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Every SECURITY DEFINER function pins its search_path so a caller's objects cannot stand
# in for ours.
_DEFINER = "SECURITY DEFINER SET search_path = pg_catalog, public"


def upgrade() -> None:
    role = app_role()
    op.add_column("audit_events", sa.Column("key_id", sa.Text))

    # --- users: no UPDATE; invitations are claimed through one narrow function ------------
    op.execute(f'REVOKE UPDATE ON users FROM "{role}"')
    op.execute(
        f"""CREATE FUNCTION nobill_claim_invitation(p_email text, p_subject text) RETURNS text
        LANGUAGE sql VOLATILE {_DEFINER} AS $$
            UPDATE users SET subject = p_subject
            WHERE email = p_email AND subject IS NULL AND p_subject IS NOT NULL AND p_subject <> ''
            RETURNING user_id
        $$"""
    )

    # --- audit chain heads: read and locked through a function, advanced by a trigger -----
    op.execute(f'REVOKE UPDATE, DELETE, TRUNCATE ON audit_chain_heads FROM "{role}"')
    op.execute(
        f"""CREATE FUNCTION nobill_lock_audit_head(p_org_id text)
        RETURNS TABLE (last_sequence bigint, last_hash text)
        LANGUAGE sql VOLATILE {_DEFINER} AS $$
            SELECT h.last_sequence, h.last_hash FROM audit_chain_heads h
            WHERE h.org_id = p_org_id AND h.org_id = current_setting('nobill.org_id', true)
            FOR UPDATE
        $$"""
    )
    op.execute(
        f"""CREATE FUNCTION nobill_advance_audit_head() RETURNS trigger
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
            UPDATE audit_chain_heads SET last_sequence = NEW.sequence, last_hash = NEW.hash
            WHERE org_id = NEW.org_id;
            RETURN NEW;
        END $$"""
    )
    op.execute(
        "CREATE TRIGGER audit_events_advance_head BEFORE INSERT ON audit_events "
        "FOR EACH ROW EXECUTE FUNCTION nobill_advance_audit_head()"
    )
    # The definer functions run as the table owner, which row-level security binds too
    # (FORCE): this policy lets the owner, and so only nobill_audit_heads(), read every head.
    op.execute("CREATE POLICY definer_reads_heads ON audit_chain_heads FOR SELECT TO CURRENT_USER USING (true)")
    op.execute(
        f"""CREATE FUNCTION nobill_audit_heads()
        RETURNS TABLE (org_id text, last_sequence bigint, last_hash text)
        LANGUAGE sql STABLE {_DEFINER} AS $$
            SELECT h.org_id, h.last_sequence, h.last_hash FROM audit_chain_heads h ORDER BY h.org_id
        $$"""
    )

    for function in (
        "nobill_claim_invitation(text, text)",
        "nobill_lock_audit_head(text)",
        "nobill_audit_heads()",
    ):
        op.execute(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC")
        op.execute(f'GRANT EXECUTE ON FUNCTION {function} TO "{role}"')
    op.execute("REVOKE ALL ON FUNCTION nobill_advance_audit_head() FROM PUBLIC")


def downgrade() -> None:
    role = app_role()
    op.execute("DROP TRIGGER IF EXISTS audit_events_advance_head ON audit_events")
    op.execute("DROP FUNCTION IF EXISTS nobill_advance_audit_head()")
    op.execute("DROP FUNCTION IF EXISTS nobill_audit_heads()")
    op.execute("DROP FUNCTION IF EXISTS nobill_lock_audit_head(text)")
    op.execute("DROP FUNCTION IF EXISTS nobill_claim_invitation(text, text)")
    op.execute("DROP POLICY IF EXISTS definer_reads_heads ON audit_chain_heads")
    op.execute(f'GRANT UPDATE, DELETE ON audit_chain_heads TO "{role}"')
    op.execute(f'GRANT UPDATE ON users TO "{role}"')
    op.drop_column("audit_events", "key_id")

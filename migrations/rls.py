"""Helpers shared by revisions: tenant isolation and the app role's grants."""

from alembic import op


def app_role() -> str:
    config = op.get_context().config
    return config.attributes.get("app_role", "nobill_app") if config is not None else "nobill_app"


def isolate_tenant(table: str, *, privileges: str = "SELECT, INSERT, UPDATE, DELETE") -> None:
    """Enable and force RLS on an org-scoped table: rows are visible and writable only
    inside a transaction bound to their org (see nobill/db/unit_of_work.py)."""
    role = app_role()
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY tenant_isolation ON {table} "
        "USING (org_id = current_setting('nobill.org_id', true)) "
        "WITH CHECK (org_id = current_setting('nobill.org_id', true))"
    )
    op.execute(f'GRANT {privileges} ON {table} TO "{role}"')

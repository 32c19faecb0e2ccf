"""The shared SQLAlchemy metadata; each domain declares its tables against it."""

from __future__ import annotations

from sqlalchemy import MetaData

metadata = MetaData(
    naming_convention={
        "pk": "%(table_name)s_pkey",
        "uq": "%(table_name)s_%(column_0_N_name)s_key",
        "fk": "%(table_name)s_%(column_0_N_name)s_fkey",
        "ix": "%(table_name)s_%(column_0_N_name)s_idx",
        "ck": "%(table_name)s_%(constraint_name)s_check",
    }
)

# Tables shared by every tenant, on purpose: identities exist before and across orgs;
# billing's routing tables hold ids, kinds and times only: which org a Stripe customer, due
# work or a Stripe event id belongs to, and handled events whose customer no org owns yet,
# without their body (docs/BILLING.md, "Work across orgs"). Everything else, every body
# included, is org-scoped; tests/db/test_tenant_schema.py holds the line.
GLOBAL_TABLES = frozenset(
    {
        "users",
        "alembic_version",
        "stripe_customer_routes",
        "billing_due_work",
        "stripe_event_ids",
        "stripe_unrouted_events",
    }
)

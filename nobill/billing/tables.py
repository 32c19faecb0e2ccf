"""Tables of the billing domain.

Org-scoped (RLS forced): subscriptions, stripe_customers, invoices, stripe_outbox and
stripe_events (the webhook inbox of events routed to their org).
Global and narrow, on purpose: ids, kinds and times only (listed in nobill/db/base.py
GLOBAL_TABLES, see docs/BILLING.md "Work across orgs"): stripe_customer_routes (Stripe
customer → org), billing_due_work (which orgs have due work of which kind),
stripe_event_ids (every stored event id and its org: deduplication and routing) and
stripe_unrouted_events (handled events whose customer no org owns yet, without their body,
kept for a limited time)."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    PrimaryKeyConstraint,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from nobill.db.base import metadata

PLANS_SQL = "plan IN ('starter', 'pro', 'enterprise')"
STATUSES_SQL = "status IN ('trialing', 'active', 'past_due', 'canceled', 'incomplete')"
OUTBOX_KINDS = ("create_customer", "sync_seats", "set_enterprise_price", "correct_items")
DUE_WORK_KINDS = ("outbox", "trial_end")
EVENT_STATES = ("pending", "applied", "ignored", "parked", "refused")
UNROUTED_EVENT_STATES = ("pending", "parked")
TARGET_KINDS = ("subscription", "invoice")

# One row per org: its plan and the subscription state last reported by Stripe.
subscriptions = Table(
    "subscriptions",
    metadata,
    Column("org_id", Text, primary_key=True),
    Column("plan", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("trial_end", DateTime(timezone=True)),
    Column("current_period_end", DateTime(timezone=True)),
    Column("cancel_at_period_end", Boolean, nullable=False, server_default=text("false")),
    Column("seats", Integer, nullable=False, server_default=text("1")),
    Column("stripe_subscription_id", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # Added by 0003_billing:
    Column("current_period_start", DateTime(timezone=True)),
    Column("stripe_status", Text),  # Stripe's own word, before mapping (docs/BILLING.md)
    Column("past_due_since", DateTime(timezone=True)),
    Column("pending_plan", Text),  # asked of Stripe by ChangePlan, not yet confirmed by a webhook
    Column("has_payment_method", Boolean, nullable=False, server_default=text("false")),
    Column("metered", Boolean, nullable=False, server_default=text("false")),
    Column("sync_error", Text),  # the last Stripe change that failed for good; NULL when none
    # Added by 0008_subscription_drift: how the Stripe subscription's items differ from the
    # plan's (nobill/billing/drift.py), as last applied; [] when they match.
    Column("drift", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    ForeignKeyConstraint(["org_id"], ["organizations.org_id"]),
    CheckConstraint(PLANS_SQL, name="plan"),
    CheckConstraint(STATUSES_SQL, name="status"),
    CheckConstraint("pending_plan IS NULL OR pending_plan IN ('starter', 'pro', 'enterprise')", name="pending_plan"),
)

# One row per org: its Stripe Customer, created asynchronously by the outbox.
stripe_customers = Table(
    "stripe_customers",
    metadata,
    Column("org_id", Text, primary_key=True),
    Column("stripe_customer_id", Text),  # NULL until the outbox has created it
    Column("test_clock_id", Text),  # NOBILL_STRIPE_TEST_CLOCKS only
    Column("enterprise_price_id", Text),  # this org's own Enterprise base price, if any
    Column("enterprise_base_amount", BigInteger),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    ForeignKeyConstraint(["org_id"], ["organizations.org_id"]),
)

# Invoices as the invoice.* webhooks report them.
invoices = Table(
    "invoices",
    metadata,
    Column("org_id", Text, nullable=False),
    Column("invoice_id", Text, nullable=False),
    Column("stripe_subscription_id", Text),
    Column("number", Text),
    Column("status", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("amount_due", BigInteger, nullable=False),
    Column("amount_paid", BigInteger, nullable=False),
    Column("period_start", DateTime(timezone=True)),
    Column("period_end", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("hosted_invoice_url", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("sort_key", Text, nullable=False),  # "<created, 12 digits>:<invoice id>": newest first, unique
    PrimaryKeyConstraint("org_id", "invoice_id"),
    ForeignKeyConstraint(["org_id"], ["organizations.org_id"]),
    Index("invoices_org_id_sort_key_idx", "org_id", "sort_key"),
)

# Every Stripe mutation, committed with the business change that asks for it.
stripe_outbox = Table(
    "stripe_outbox",
    metadata,
    Column("org_id", Text, nullable=False),
    Column("outbox_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("idempotency_key", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("last_error", Text),
    Column("requested_by", JSONB, nullable=False),  # the audit actor and request id
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True)),
    PrimaryKeyConstraint("org_id", "outbox_id"),
    ForeignKeyConstraint(["org_id"], ["organizations.org_id"]),
    CheckConstraint("kind IN ('create_customer', 'sync_seats', 'set_enterprise_price', 'correct_items')", name="kind"),
    CheckConstraint("state IN ('pending', 'done', 'failed')", name="state"),
    # Seat changes coalesce: at most one pending seat sync per org.
    Index(
        "stripe_outbox_org_id_pending_seat_sync_idx",
        "org_id",
        "kind",
        unique=True,
        postgresql_where=text("state = 'pending' AND kind = 'sync_seats'"),
    ),
)

# --- global, narrow ---------------------------------------------------------------

# Stripe customer id → org id: routes an event to the org whose unit of work applies it.
stripe_customer_routes = Table(
    "stripe_customer_routes",
    metadata,
    Column("stripe_customer_id", Text, primary_key=True),
    Column("org_id", Text, nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    ForeignKeyConstraint(["org_id"], ["organizations.org_id"]),
)

# Which orgs have work due of which kind; sweeps read only this, then work per org.
billing_due_work = Table(
    "billing_due_work",
    metadata,
    Column("kind", Text, nullable=False),
    Column("org_id", Text, nullable=False),
    Column("due_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("kind", "org_id"),
    ForeignKeyConstraint(["org_id"], ["organizations.org_id"]),
    CheckConstraint("kind IN ('outbox', 'trial_end')", name="kind"),
    Index("billing_due_work_kind_due_at_idx", "kind", "due_at"),
)

# Every stored Stripe event id, once: a redelivery finds its id here whether the event was
# routed or is waiting unrouted. No body, no state: ids, kinds and times only.
stripe_event_ids = Table(
    "stripe_event_ids",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("event_type", Text, nullable=False),
    Column("org_id", Text),  # NULL while no org owns the event's customer
    Column("received_at", DateTime(timezone=True), nullable=False),
    ForeignKeyConstraint(["org_id"], ["organizations.org_id"]),
)

# Handled events whose customer no org owns yet: what re-applying them needs, not their body.
# Moved into the org's stripe_events once a route for the customer appears; deleted after
# NOBILL_STRIPE_UNROUTED_RETENTION_DAYS (their id stays in stripe_event_ids).
stripe_unrouted_events = Table(
    "stripe_unrouted_events",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("event_type", Text, nullable=False),
    Column("stripe_customer_id", Text),  # NULL: the event names no customer (it cannot be routed)
    Column("target_kind", Text),  # the Stripe object the event makes NOBill re-read (TARGET_KINDS) ...
    Column("target_id", Text),  # ... and its id
    Column("state", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("received_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("state IN ('pending', 'parked')", name="state"),
    CheckConstraint("target_kind IS NULL OR target_kind IN ('subscription', 'invoice')", name="target_kind"),
    Index("stripe_unrouted_events_stripe_customer_id_idx", "stripe_customer_id"),
    Index("stripe_unrouted_events_received_at_idx", "received_at"),
)

# --- org-scoped: the webhook inbox ---------------------------------------------------

# Every verified Stripe event of the org, stored under its id before it is acknowledged
# (routed at intake by its customer), or moved here from stripe_unrouted_events once routed.
stripe_events = Table(
    "stripe_events",
    metadata,
    Column("org_id", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("stripe_customer_id", Text),
    Column("target_kind", Text),  # what the event makes NOBill re-read (NULL: nothing)
    Column("target_id", Text),
    Column("payload", JSONB),  # as received; NULL for an event that waited unrouted (its body was not kept)
    Column("state", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("applied_at", DateTime(timezone=True)),
    PrimaryKeyConstraint("org_id", "event_id"),
    ForeignKeyConstraint(["org_id"], ["organizations.org_id"]),
    CheckConstraint("state IN ('pending', 'applied', 'ignored', 'parked', 'refused')", name="state"),
    CheckConstraint("target_kind IS NULL OR target_kind IN ('subscription', 'invoice')", name="target_kind"),
    # Small: only events still to apply (or parked) are in it; the apply, the sweep and replay read it.
    Index(
        "stripe_events_org_id_state_received_at_idx",
        "org_id",
        "state",
        "received_at",
        postgresql_where=text("state IN ('pending', 'parked')"),
    ),
)

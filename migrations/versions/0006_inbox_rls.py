"""The webhook inbox under row-level security.

- stripe_events becomes org-scoped (org_id in its primary key, forced RLS): every event
  body lives under its org's policy. Events are routed at intake by the customer they name.
- stripe_event_ids (global, narrow: event id, type, org id or NULL, received time) keeps an
  event id unique across both homes an event can have, so a redelivery is a duplicate
  whether its event was routed or is still waiting.
- stripe_unrouted_events (global, narrow, no body): handled events whose customer no org
  owns yet, with the object they make NOBill re-read; moved into the org's stripe_events
  when the customer's route appears, deleted after a retention period.
- nobill_store_stripe_events(): the intake's one statement. SECURITY DEFINER, so one
  statement can store a batch spanning orgs under forced RLS: it routes each event by the
  routing table (the caller cannot choose an org), inserts only, and returns only ids.
- nobill_orgs_with_stripe_events(): org ids with events in a state, for the sweep and
  replay (which then read each org in a unit of work bound to it).
- nobill_pending_stripe_events(): which of some event ids are still pending, and in which
  org (ids only): the apply actor skips, in one query, a message an earlier one covered.
- state `refused`: an event whose re-read object belongs to another customer.

Existing rows move: routed ones (org known, or their customer routed now) with their body
into stripe_events; unrouted pending or parked ones, without body, into
stripe_unrouted_events; every id into stripe_event_ids.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from rls import app_role, isolate_tenant

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_DEFINER = "SECURITY DEFINER SET search_path = pg_catalog, public"
_FUNCTIONS = (
    "nobill_store_stripe_events(text[], text[], text[], text[], text[], text[], jsonb)",
    "nobill_orgs_with_stripe_events(text, timestamp with time zone, integer)",
    "nobill_pending_stripe_events(text[])",
)

# What an old row's event makes NOBill re-read (as nobill.billing.inbox_apply.HANDLERS says).
_OBJECT = "payload->'data'->'object'"
_TARGET_KIND = f"""CASE
    WHEN event_type = 'checkout.session.completed' THEN
        CASE WHEN {_OBJECT}->>'mode' = 'subscription'
              AND coalesce({_OBJECT}->'subscription'->>'id', {_OBJECT}->>'subscription') IS NOT NULL
             THEN 'subscription' END
    WHEN event_type LIKE 'customer.subscription.%' AND {_OBJECT}->>'id' IS NOT NULL THEN 'subscription'
    WHEN event_type IN ('invoice.paid', 'invoice.payment_failed') AND {_OBJECT}->>'id' IS NOT NULL THEN 'invoice'
END"""
_TARGET_ID = f"""CASE
    WHEN event_type = 'checkout.session.completed' THEN
        CASE WHEN {_OBJECT}->>'mode' = 'subscription'
             THEN coalesce({_OBJECT}->'subscription'->>'id', {_OBJECT}->>'subscription') END
    WHEN event_type LIKE 'customer.subscription.%' OR event_type IN ('invoice.paid', 'invoice.payment_failed')
        THEN {_OBJECT}->>'id'
END"""


def upgrade() -> None:
    role = app_role()
    op.execute("ALTER TABLE stripe_events RENAME TO stripe_events_0005")
    op.execute("ALTER INDEX stripe_events_pkey RENAME TO stripe_events_0005_pkey")
    op.execute("ALTER INDEX stripe_events_state_received_at_idx RENAME TO stripe_events_0005_state_received_at_idx")
    op.execute("ALTER TABLE stripe_events_0005 RENAME CONSTRAINT stripe_events_state_check TO stripe_events_0005_state_check")

    op.create_table(
        "stripe_event_ids",
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("org_id", sa.Text, sa.ForeignKey("organizations.org_id")),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "stripe_unrouted_events",
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("stripe_customer_id", sa.Text),
        sa.Column("target_kind", sa.Text),
        sa.Column("target_id", sa.Text),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("state IN ('pending', 'parked')", name="stripe_unrouted_events_state_check"),
        sa.CheckConstraint(
            "target_kind IS NULL OR target_kind IN ('subscription', 'invoice')",
            name="stripe_unrouted_events_target_kind_check",
        ),
    )
    op.create_index("stripe_unrouted_events_stripe_customer_id_idx", "stripe_unrouted_events", ["stripe_customer_id"])
    op.create_index("stripe_unrouted_events_received_at_idx", "stripe_unrouted_events", ["received_at"])
    op.create_table(
        "stripe_events",
        sa.Column("org_id", sa.Text, sa.ForeignKey("organizations.org_id"), nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("stripe_customer_id", sa.Text),
        sa.Column("target_kind", sa.Text),
        sa.Column("target_id", sa.Text),
        sa.Column("payload", JSONB),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("last_error", sa.Text),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("org_id", "event_id"),
        sa.CheckConstraint(
            "state IN ('pending', 'applied', 'ignored', 'parked', 'refused')", name="stripe_events_state_check"
        ),
        sa.CheckConstraint(
            "target_kind IS NULL OR target_kind IN ('subscription', 'invoice')", name="stripe_events_target_kind_check"
        ),
    )
    op.create_index(
        "stripe_events_org_id_state_received_at_idx",
        "stripe_events",
        ["org_id", "state", "received_at"],
        postgresql_where=sa.text("state IN ('pending', 'parked')"),
    )
    # No DELETE: an org's events are kept (the app role only stores, moves in and updates them).
    isolate_tenant("stripe_events", privileges="SELECT, INSERT, UPDATE")
    # The definer functions run as the table owner, which forced RLS binds too: these let the
    # owner, and so only those functions, store any org's events and list orgs with events.
    op.execute("CREATE POLICY definer_stores_events ON stripe_events FOR INSERT TO CURRENT_USER WITH CHECK (true)")
    op.execute("CREATE POLICY definer_reads_events ON stripe_events FOR SELECT TO CURRENT_USER USING (true)")
    op.execute(f'GRANT SELECT, UPDATE ON stripe_event_ids TO "{role}"')
    op.execute(f'GRANT SELECT, UPDATE, DELETE ON stripe_unrouted_events TO "{role}"')

    _migrate_rows()
    op.drop_table("stripe_events_0005")

    # The intake: one statement per batch. Each event is claimed in stripe_event_ids (a
    # redelivered id is skipped: ON CONFLICT DO NOTHING, rows in id order so concurrent
    # batches lock alike), routed by its customer, and stored with its body in the org's
    # stripe_events, or, handled but unroutable, without body in stripe_unrouted_events.
    # Returns the ids this call stored and the org each went to (NULL: unrouted).
    op.execute(
        f"""CREATE FUNCTION nobill_store_stripe_events(
            p_event_ids text[], p_event_types text[], p_customers text[], p_target_kinds text[], p_target_ids text[],
            p_states text[], p_payloads jsonb)
        RETURNS TABLE (stored_event_id text, stored_org_id text)
        LANGUAGE sql VOLATILE {_DEFINER} AS $$
            WITH incoming AS (
                SELECT e.event_id, e.event_type, e.customer, e.target_kind, e.target_id, e.state, p.payload,
                       r.org_id
                FROM unnest(p_event_ids, p_event_types, p_customers, p_target_kinds, p_target_ids, p_states)
                     WITH ORDINALITY AS e(event_id, event_type, customer, target_kind, target_id, state, n)
                JOIN jsonb_array_elements(p_payloads) WITH ORDINALITY AS p(payload, n) ON p.n = e.n
                LEFT JOIN stripe_customer_routes r ON r.stripe_customer_id = e.customer
            ), claimed AS (
                INSERT INTO stripe_event_ids AS s (event_id, event_type, org_id, received_at)
                SELECT i.event_id, i.event_type, i.org_id, clock_timestamp() FROM incoming i ORDER BY i.event_id
                ON CONFLICT (event_id) DO NOTHING
                RETURNING s.event_id, s.org_id, s.received_at
            ), routed AS (
                INSERT INTO stripe_events (org_id, event_id, event_type, stripe_customer_id, target_kind, target_id,
                                           payload, state, received_at)
                SELECT c.org_id, i.event_id, i.event_type, i.customer, i.target_kind, i.target_id, i.payload, i.state,
                       c.received_at
                FROM claimed c JOIN incoming i ON i.event_id = c.event_id
                WHERE c.org_id IS NOT NULL
                ORDER BY c.org_id, i.event_id
            ), unrouted AS (
                INSERT INTO stripe_unrouted_events (event_id, event_type, stripe_customer_id, target_kind, target_id,
                                                    state, received_at)
                SELECT i.event_id, i.event_type, i.customer, i.target_kind, i.target_id, 'pending', c.received_at
                FROM claimed c JOIN incoming i ON i.event_id = c.event_id
                WHERE c.org_id IS NULL AND i.state = 'pending'
                ORDER BY i.event_id
            )
            SELECT c.event_id, c.org_id FROM claimed c
        $$"""
    )
    op.execute(
        f"""CREATE FUNCTION nobill_orgs_with_stripe_events(p_state text, p_received_before timestamptz, p_limit integer)
        RETURNS SETOF text
        LANGUAGE sql STABLE {_DEFINER} AS $$
            SELECT DISTINCT e.org_id FROM stripe_events e
            WHERE e.state = p_state AND e.state IN ('pending', 'parked') AND e.received_at <= p_received_before
            ORDER BY e.org_id LIMIT p_limit
        $$"""
    )
    op.execute(
        f"""CREATE FUNCTION nobill_pending_stripe_events(p_event_ids text[])
        RETURNS TABLE (pending_event_id text, pending_org_id text)
        LANGUAGE sql STABLE {_DEFINER} AS $$
            SELECT i.event_id, i.org_id FROM stripe_event_ids i
            JOIN stripe_events e ON e.org_id = i.org_id AND e.event_id = i.event_id
            WHERE i.event_id = ANY(p_event_ids) AND e.state = 'pending'
        $$"""
    )
    for function in _FUNCTIONS:
        op.execute(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC")
        op.execute(f'GRANT EXECUTE ON FUNCTION {function} TO "{role}"')


# Each old row with the org it belongs to: the one it was applied in, or its customer's now.
_OLD_ROWS = """(SELECT o.*, coalesce(o.org_id, r.org_id) AS routed_org_id
              FROM stripe_events_0005 o
              LEFT JOIN stripe_customer_routes r ON r.stripe_customer_id = o.stripe_customer_id) AS o"""


def _migrate_rows() -> None:
    """Runs as the migrating owner (the definer policy lets it store any org's rows)."""
    op.execute(
        f"""INSERT INTO stripe_event_ids (event_id, event_type, org_id, received_at)
            SELECT o.event_id, o.event_type, o.routed_org_id, o.received_at FROM {_OLD_ROWS}"""
    )
    op.execute(
        f"""INSERT INTO stripe_events (org_id, event_id, event_type, stripe_customer_id, target_kind, target_id, payload,
                                       state, attempts, last_error, received_at, applied_at)
            SELECT o.routed_org_id, o.event_id, o.event_type, o.stripe_customer_id,
                   {_TARGET_KIND},
                   {_TARGET_ID},
                   o.payload, o.state, o.attempts, o.last_error, o.received_at, o.applied_at
            FROM {_OLD_ROWS}
            WHERE o.routed_org_id IS NOT NULL"""
    )
    # Unrouted: only what is still to apply (or parked) waits; an ignored event keeps its id.
    op.execute(
        f"""INSERT INTO stripe_unrouted_events (event_id, event_type, stripe_customer_id, target_kind, target_id, state,
                                                attempts, received_at)
            SELECT o.event_id, o.event_type, o.stripe_customer_id,
                   {_TARGET_KIND},
                   {_TARGET_ID},
                   o.state, o.attempts, o.received_at
            FROM {_OLD_ROWS}
            WHERE o.routed_org_id IS NULL AND o.state IN ('pending', 'parked')"""
    )


def downgrade() -> None:
    role = app_role()
    for function in _FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {function}")
    op.execute("ALTER TABLE stripe_events RENAME TO stripe_events_0006")
    op.execute("ALTER INDEX stripe_events_pkey RENAME TO stripe_events_0006_pkey")
    op.execute("ALTER INDEX stripe_events_org_id_state_received_at_idx RENAME TO stripe_events_0006_open_idx")
    op.execute("ALTER TABLE stripe_events_0006 RENAME CONSTRAINT stripe_events_state_check TO stripe_events_0006_state_check")
    op.execute(
        "ALTER TABLE stripe_events_0006 RENAME CONSTRAINT stripe_events_target_kind_check TO stripe_events_0006_target_kind_check"
    )
    op.create_table(
        "stripe_events",
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("stripe_customer_id", sa.Text),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("org_id", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("last_error", sa.Text),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("state IN ('pending', 'applied', 'ignored', 'parked')", name="stripe_events_state_check"),
    )
    op.create_index("stripe_events_state_received_at_idx", "stripe_events", ["state", "received_at"])
    # An event without a kept body gets the part of one the apply reads back.
    minimal = """jsonb_build_object('id', {a}.event_id, 'object', 'event', 'type', {a}.event_type,
                   'data', jsonb_build_object('object', jsonb_build_object(
                       'id', {a}.target_id, 'customer', {a}.stripe_customer_id, 'mode', 'subscription',
                       'subscription', {a}.target_id)))"""
    op.execute(
        f"""INSERT INTO stripe_events (event_id, event_type, stripe_customer_id, payload, state, org_id, attempts,
                                       last_error, received_at, applied_at)
            SELECT n.event_id, n.event_type, n.stripe_customer_id, coalesce(n.payload, {minimal.format(a="n")}),
                   CASE WHEN n.state = 'refused' THEN 'parked' ELSE n.state END, n.org_id, n.attempts,
                   n.last_error, n.received_at, n.applied_at
            FROM stripe_events_0006 n"""
    )
    op.execute(
        f"""INSERT INTO stripe_events (event_id, event_type, stripe_customer_id, payload, state, attempts, received_at)
            SELECT u.event_id, u.event_type, u.stripe_customer_id, {minimal.format(a="u")}, u.state, u.attempts,
                   u.received_at
            FROM stripe_unrouted_events u"""
    )
    op.execute(f'GRANT SELECT, INSERT, UPDATE ON stripe_events TO "{role}"')
    for table in ("stripe_events_0006", "stripe_unrouted_events", "stripe_event_ids"):
        op.drop_table(table)

"""Migration 0006 moves the webhook inbox under row-level security on a database that
already holds events: routed ones (applied in an org, or whose customer an org owns now)
keep their bodies in the org's stripe_events; unrouted pending or parked ones wait without
their body; every id stays unique in stripe_event_ids; and it reverses."""

from __future__ import annotations

import json
import uuid

import psycopg
from alembic import command

from nobill.config import Settings
from nobill.db.migrate import alembic_config, upgrade
from support import with_database


def _event(event_id: str, event_type: str, obj: dict) -> str:
    return json.dumps({"id": event_id, "object": "event", "type": event_type, "data": {"object": obj}})


def test_0006_moves_existing_events_to_their_orgs_and_the_unrouted_without_bodies(postgres_admin_url: str) -> None:
    name = f"nobill_migrate_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(postgres_admin_url, name)
    engine_url = Settings.from_env({"NOBILL_DATABASE_URL": url}).database_url
    rows = [
        # event id, type, customer, state, org_id (as 0005 recorded it), object
        ("evt_applied", "invoice.paid", "cus_a", "applied", "org_a", {"id": "in_a", "customer": "cus_a"}),
        ("evt_routed_now", "customer.subscription.updated", "cus_b", "pending", None, {"id": "sub_b", "customer": "cus_b"}),
        ("evt_checkout", "checkout.session.completed", "cus_b", "pending", None,
         {"id": "cs_b", "mode": "subscription", "subscription": "sub_b", "customer": "cus_b"}),
        ("evt_waiting", "customer.subscription.updated", "cus_nobody", "parked", None, {"id": "sub_x", "customer": "cus_nobody"}),
        ("evt_ignored_nobody", "customer.updated", "cus_nobody", "ignored", None, {"id": "cus_nobody", "email": "x@example.com"}),
    ]
    try:
        upgrade(engine_url, revision="0005")
        with psycopg.connect(url, autocommit=True) as connection:
            for org, customer in (("org_a", "cus_a"), ("org_b", "cus_b")):
                connection.execute("INSERT INTO organizations VALUES (%s, %s, now(), 'usr_x')", (org, org))
                connection.execute("INSERT INTO stripe_customer_routes VALUES (%s, %s, now())", (customer, org))
            for event_id, event_type, customer, state, org, obj in rows:
                connection.execute(
                    "INSERT INTO stripe_events (event_id, event_type, stripe_customer_id, payload, state, org_id, attempts,"
                    " last_error, received_at) VALUES (%s, %s, %s, %s, %s, %s, 2, NULL, now())",
                    (event_id, event_type, customer, _event(event_id, event_type, obj), state, org),
                )

        upgrade(engine_url)
        with psycopg.connect(url, autocommit=True) as connection:
            assert dict(connection.execute("SELECT event_id, org_id FROM stripe_event_ids").fetchall()) == {
                "evt_applied": "org_a", "evt_routed_now": "org_b", "evt_checkout": "org_b",
                "evt_waiting": None, "evt_ignored_nobody": None,
            }
            routed = connection.execute(
                "SELECT event_id, org_id, state, target_kind, target_id, payload->>'id' FROM stripe_events ORDER BY event_id"
            ).fetchall()
            assert routed == [
                ("evt_applied", "org_a", "applied", "invoice", "in_a", "evt_applied"),
                ("evt_checkout", "org_b", "pending", "subscription", "sub_b", "evt_checkout"),
                ("evt_routed_now", "org_b", "pending", "subscription", "sub_b", "evt_routed_now"),
            ]
            assert connection.execute(
                "SELECT event_id, stripe_customer_id, state, attempts, target_kind, target_id FROM stripe_unrouted_events"
            ).fetchall() == [("evt_waiting", "cus_nobody", "parked", 2, "subscription", "sub_x")]
            # The bodies are the org's: the app role sees them only when bound to it.
            connection.execute("SET ROLE nobill_app")
            assert connection.execute("SELECT count(*) FROM stripe_events").fetchone() == (0,)
            connection.execute("SELECT set_config('nobill.org_id', 'org_b', false)")
            assert connection.execute("SELECT event_id FROM stripe_events ORDER BY 1").fetchall() == [
                ("evt_checkout",), ("evt_routed_now",)]

        command.downgrade(alembic_config(engine_url), "0005")
        with psycopg.connect(url, autocommit=True) as connection:
            back = dict(connection.execute("SELECT event_id, state FROM stripe_events").fetchall())
            assert back == {"evt_applied": "applied", "evt_routed_now": "pending", "evt_checkout": "pending",
                            "evt_waiting": "parked"}, "an ignored event no org owned kept only its id"
    finally:
        with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

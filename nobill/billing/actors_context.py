"""Audit contexts for changes nobody typed: Stripe's webhooks and NOBill's own jobs."""

from __future__ import annotations

from typing import Any

from nobill.audit.actors import Actor, ActorType, AuditContext


def stripe_event(event_id: str) -> AuditContext:
    """A change Stripe reported: actor type STRIPE, the event id as actor id and request id."""
    return AuditContext(Actor(ActorType.STRIPE, event_id, "Stripe"), event_id)


def system(job: str, run_id: str) -> AuditContext:
    """A change a scheduled job made (trial expiry, reconciliation)."""
    return AuditContext(Actor(ActorType.SYSTEM, job, f"NOBill {job}"), run_id)


def to_json(context: AuditContext) -> dict[str, Any]:
    actor = context.actor
    return {"type": actor.type.value, "id": actor.id, "display_name": actor.display_name, "request_id": context.request_id}


def from_json(value: dict[str, Any]) -> AuditContext:
    return AuditContext(Actor(ActorType(value["type"]), value["id"], value["display_name"]), value["request_id"])

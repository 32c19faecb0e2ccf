"""Imports every module that declares actors, so a worker registers all of them.

Each capability adds its actor module here (Stripe outbox, webhook inbox, usage
aggregation, trial expiry, reconciliation)."""

ACTOR_MODULES: tuple[str, ...] = ("nobill.billing.actors", "nobill.usage.actors")

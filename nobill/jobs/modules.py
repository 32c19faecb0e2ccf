"""The modules that declare the Dramatiq jobs (actors, in Dramatiq's word), so a worker
imports and registers all of them.

Each capability adds its jobs module here (Stripe outbox, webhook inbox, usage
aggregation, trial expiry, reconciliation)."""

JOB_MODULES: tuple[str, ...] = ("nobill.billing.jobs", "nobill.usage.jobs")

"""The metered metrics, as the plan catalog names them (one Stripe meter each, event_name == metric)."""

from __future__ import annotations

METRICS: frozenset[str] = frozenset({"api_requests", "background_jobs", "reports_generated"})

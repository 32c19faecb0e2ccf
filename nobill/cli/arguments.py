"""Checks and values several command groups share: positive counts, org ids, and the
operator an audited CLI change is recorded as."""

from __future__ import annotations

import os

from nobill.audit.actors import AuditContext
from nobill.errors import ConfigError


def positive(name: str, value: int) -> int:
    if value <= 0:
        raise ConfigError(name, f"must be a positive number, got {value}")
    return value


def require_org_id(value: str) -> None:
    from nobill import ids

    if not ids.is_valid("org", value):
        raise ConfigError("--org", f"must be an organization id (org_...), got {value!r}")


def operator_context() -> AuditContext:
    """The person running the command (from $USER), as the actor of what it changes."""
    from nobill.audit.actors import Actor, ActorType

    operator = os.environ.get("USER", "operator")
    return AuditContext(Actor(ActorType.SYSTEM, f"cli:{operator}", f"operator {operator} (nobill CLI)"), f"cli-{os.getpid()}")

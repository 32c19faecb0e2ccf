"""Who caused a change, as the audit log records it."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ActorType(str, enum.Enum):
    USER = "user"
    SERVICE = "service"
    STRIPE = "stripe"
    SYSTEM = "system"


@dataclass(frozen=True)
class Actor:
    type: ActorType
    id: str
    display_name: str


@dataclass(frozen=True)
class AuditContext:
    """Who asked for a change and under which request id; every mutation takes one."""

    actor: Actor
    request_id: str

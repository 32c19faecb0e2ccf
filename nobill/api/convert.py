"""Translation between proto messages and domain values; nothing else."""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

from nobill.audit.actors import ActorType
from nobill.auth.permissions import Role
from nobill.billing.plans import PlanCode, SubscriptionStatus
from nobill.errors import InvalidArgument
from nobill.v1 import common_pb2

ROLE_TO_PROTO = {
    Role.OWNER: common_pb2.ROLE_OWNER,
    Role.ADMIN: common_pb2.ROLE_ADMIN,
    Role.MEMBER: common_pb2.ROLE_MEMBER,
    Role.BILLING_MANAGER: common_pb2.ROLE_BILLING_MANAGER,
}
ROLE_FROM_PROTO = {value: role for role, value in ROLE_TO_PROTO.items()}

PLAN_TO_PROTO = {
    PlanCode.STARTER: common_pb2.PLAN_STARTER,
    PlanCode.PRO: common_pb2.PLAN_PRO,
    PlanCode.ENTERPRISE: common_pb2.PLAN_ENTERPRISE,
}
PLAN_FROM_PROTO = {value: plan for plan, value in PLAN_TO_PROTO.items()}

STATUS_TO_PROTO = {
    SubscriptionStatus.TRIALING: common_pb2.SUBSCRIPTION_STATUS_TRIALING,
    SubscriptionStatus.ACTIVE: common_pb2.SUBSCRIPTION_STATUS_ACTIVE,
    SubscriptionStatus.PAST_DUE: common_pb2.SUBSCRIPTION_STATUS_PAST_DUE,
    SubscriptionStatus.CANCELED: common_pb2.SUBSCRIPTION_STATUS_CANCELED,
    SubscriptionStatus.INCOMPLETE: common_pb2.SUBSCRIPTION_STATUS_INCOMPLETE,
}

ACTOR_TYPE_TO_PROTO = {
    ActorType.USER: common_pb2.ACTOR_TYPE_USER,
    ActorType.SERVICE: common_pb2.ACTOR_TYPE_SERVICE,
    ActorType.STRIPE: common_pb2.ACTOR_TYPE_STRIPE,
    ActorType.SYSTEM: common_pb2.ACTOR_TYPE_SYSTEM,
}


def role_from_proto(value: int, *, field: str = "role") -> Role:
    try:
        return ROLE_FROM_PROTO[common_pb2.Role.ValueType(value)]
    except KeyError:
        raise InvalidArgument(
            f"{field} must be one of ROLE_OWNER, ROLE_ADMIN, ROLE_MEMBER, ROLE_BILLING_MANAGER", field=field
        ) from None


def role_to_proto(role: Role | None) -> common_pb2.Role.ValueType:
    return ROLE_TO_PROTO[role] if role else common_pb2.ROLE_UNSPECIFIED


def plan_from_proto(value: int, *, field: str = "plan") -> PlanCode:
    try:
        return PLAN_FROM_PROTO[common_pb2.Plan.ValueType(value)]
    except KeyError:
        raise InvalidArgument(f"{field} must be one of PLAN_STARTER, PLAN_PRO, PLAN_ENTERPRISE", field=field) from None


def timestamp(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(value.astimezone(dt.timezone.utc))
    return message


def datetime_or_none(message: Any, field: str) -> dt.datetime | None:
    """A Timestamp field as an aware datetime, or None when unset."""
    if not message.HasField(field):
        return None
    value: timestamp_pb2.Timestamp = getattr(message, field)
    if not 0 <= value.nanos < 1_000_000_000:
        raise InvalidArgument(f"{field} has invalid nanos", field=field)
    try:
        return value.ToDatetime(tzinfo=dt.timezone.utc)
    except (ValueError, OverflowError):
        raise InvalidArgument(f"{field} is out of range", field=field) from None


def struct(value: dict[str, Any] | None) -> struct_pb2.Struct | None:
    if value is None:
        return None
    message = struct_pb2.Struct()
    message.update(value)
    return message

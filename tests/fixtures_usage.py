"""Helpers for the usage tests: orgs on a given plan, events, streams."""

from __future__ import annotations

import datetime as dt
import queue
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import psycopg
from google.protobuf.timestamp_pb2 import Timestamp

from nobill.v1 import tenancy_pb2, usage_pb2, usage_pb2_grpc
from support import Client, bearer, new_user

METRICS = ("api_requests", "background_jobs", "reports_generated")


def set_plan(superuser: psycopg.Connection, org_id: str, plan: str, status: str = "active") -> None:
    """Put the org on `plan` (Enterprise with metered prices). Stands in for the Stripe
    subscription snapshot billing applies from webhooks, which billing's tests cover."""
    superuser.execute(
        "UPDATE subscriptions SET plan = %s, status = %s, metered = %s WHERE org_id = %s",
        (plan, status, plan == "enterprise", org_id),
    )


def usage_org(channel: grpc.Channel, superuser: psycopg.Connection, plan: str = "enterprise") -> tuple[str, Client]:
    owner = new_user(channel)
    org = owner.tenancy.CreateOrganization(tenancy_pb2.CreateOrganizationRequest(name=f"Usage {uuid.uuid4().hex[:8]}")).organization
    if plan != "trial":
        set_plan(superuser, org.id, plan)
    return org.id, owner


def stamp(moment: dt.datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(moment)
    return result


def event(key: str | None = None, metric: str = "api_requests", quantity: int = 1, **fields: Any) -> usage_pb2.UsageEvent:
    return usage_pb2.UsageEvent(
        idempotency_key=key if key is not None else uuid.uuid4().hex, metric=metric, quantity=quantity, **fields
    )


class Stream:
    """A StreamUsage call driven one batch at a time: send() returns the batch's ack."""

    def __init__(self, usage_channel: grpc.Channel, token: str) -> None:
        self._requests: queue.Queue = queue.Queue()
        stub = usage_pb2_grpc.UsageServiceStub(usage_channel)
        self.call = stub.StreamUsage(iter(self._requests.get, None), metadata=bearer(token), timeout=60)
        self._responses: Iterator[usage_pb2.StreamUsageResponse] = iter(self.call)
        self._next_id = 0

    def send(self, org_id: str, events: list[usage_pb2.UsageEvent], batch_id: int | None = None) -> usage_pb2.StreamUsageResponse:
        self._next_id += 1
        batch = self._next_id if batch_id is None else batch_id
        self._requests.put(usage_pb2.StreamUsageRequest(org_id=org_id, batch_id=batch, events=events))
        ack = next(self._responses)
        assert ack.batch_id == batch
        return ack

    def close(self) -> None:
        self._requests.put(None)
        for _ in self._responses:
            pass

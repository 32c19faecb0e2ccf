"""UsageService on the grpc.aio usage server: proto <-> domain only. Unary handlers run in
the server's thread pool inside the org's unit of work (see aio_interceptor.py); the
stream handler is a coroutine that acknowledges each batch after its commit."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from nobill.api.aio_interceptor import StreamCallContext
from nobill.api.context import OrgCallContext
from nobill.api.interceptor import org_id_of
from nobill.api.status import status_for
from nobill.db.unit_of_work import UnitOfWork
from nobill.usage import ingest, summary
from nobill.v1 import usage_pb2, usage_pb2_grpc

log = logging.getLogger("nobill.api.usage")

_UTC = dt.timezone.utc


def event_columns(events: Sequence[usage_pb2.UsageEvent]) -> ingest.EventColumns:
    """The batch as parallel columns, in one pass (each element access builds a wrapper)."""
    keys: list[str] = []
    metrics: list[str] = []
    quantities: list[int] = []
    stamps: list[int | None] = []
    properties: list[str] = []
    for event in events:
        keys.append(event.idempotency_key)
        metrics.append(event.metric)
        quantities.append(event.quantity)
        # Presence, not value, decides "unset": 1970-01-01T00:00:00Z sent on purpose is a
        # (far too old) time like any other, not "now".
        if event.HasField("timestamp"):
            stamp = event.timestamp
            stamps.append(stamp.seconds * 1_000_000 + stamp.nanos // 1000)
        else:
            stamps.append(None)
        properties.append(event.properties)
    return ingest.EventColumns(keys, metrics, quantities, stamps, properties)


def _rejected(result: ingest.BatchResult) -> list[usage_pb2.RejectedEvent]:
    return [
        usage_pb2.RejectedEvent(index=index, reason=usage_pb2.RejectReason.ValueType(int(reason)))
        for index, reason in result.rejected
    ]


_INT64_MAX = 2**63 - 1


def _int64(value: int) -> int:
    """A total as the contract's int64: exact up to 2^63-1, saturated beyond (a period of
    ~9.2 million maximal events; usage.proto says so)."""
    return max(min(value, _INT64_MAX), -_INT64_MAX - 1)


def _timestamp(moment: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _datetime(stamp: Timestamp) -> dt.datetime:
    return stamp.ToDatetime(tzinfo=_UTC)


class UsageServicer(usage_pb2_grpc.UsageServiceServicer):
    def RecordUsage(self, request: usage_pb2.RecordUsageRequest, context: OrgCallContext) -> usage_pb2.RecordUsageResponse:  # type: ignore[override]
        ingest.check_batch_size(len(request.events))
        result = ingest.record_usage(uow=context.uow, org_id=request.org_id, events=event_columns(request.events))
        return usage_pb2.RecordUsageResponse(
            accepted=result.accepted, duplicates=result.duplicates, rejected=_rejected(result)
        )

    def GetUsageSummary(  # type: ignore[override]
        self, request: usage_pb2.GetUsageSummaryRequest, context: OrgCallContext
    ) -> usage_pb2.GetUsageSummaryResponse:
        found = summary.get(
            uow=context.uow,
            org_id=request.org_id,
            metric=request.metric,
            start=_datetime(request.start_time) if request.HasField("start_time") else None,
            end=_datetime(request.end_time) if request.HasField("end_time") else None,
        )
        reconciliation = found.last_reconciliation
        return usage_pb2.GetUsageSummaryResponse(
            billed=found.billed,
            last_reconciliation=None if reconciliation is None else usage_pb2.ReconciliationResult(
                checked_at=_timestamp(reconciliation.checked_at),
                in_sync=reconciliation.in_sync,
                drift_quantity=_int64(reconciliation.drift_quantity),
            ),
            totals=[
                usage_pb2.MetricTotal(
                    metric=total.metric,
                    quantity=_int64(total.quantity),
                    event_count=_int64(total.event_count),
                    reported_quantity=_int64(total.reported_quantity),
                    pending_quantity=_int64(total.pending_quantity),
                    period_start=_timestamp(total.period_start),
                    period_end=_timestamp(total.period_end),
                )
                for total in found.totals
            ],
        )

    async def StreamUsage(  # type: ignore[override]
        self, request_iterator: AsyncIterator[usage_pb2.StreamUsageRequest], context: StreamCallContext
    ) -> AsyncIterator[usage_pb2.StreamUsageResponse]:
        requests = request_iterator.__aiter__()
        while True:
            try:
                request = await asyncio.wait_for(requests.__anext__(), context.idle_timeout)
            except StopAsyncIteration:
                return
            except asyncio.TimeoutError:
                # An idle stream holds nothing but a slot; closing it (status OK) frees that.
                log.info("usage stream closed after idling", extra={"request_id": context.request_id})
                return
            yield await self._batch(request, context)

    async def _batch(self, request: usage_pb2.StreamUsageRequest, context: StreamCallContext) -> usage_pb2.StreamUsageResponse:
        """Acknowledge one batch after its commit; a batch refused as a whole says why."""
        try:
            org_id = org_id_of(request)
            ingest.check_batch_size(len(request.events))

            def work(uow: UnitOfWork) -> ingest.BatchResult:
                return ingest.record_usage(uow=uow, org_id=org_id, events=event_columns(request.events))

            result = await context.in_org(org_id, work)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - a refused batch is answered, not fatal
            status = status_for(error, method="/nobill.v1.UsageService/StreamUsage", request_id=context.request_id)
            return usage_pb2.StreamUsageResponse(
                batch_id=request.batch_id, status_code=status.code.value[0], status_message=status.details
            )
        return usage_pb2.StreamUsageResponse(
            batch_id=request.batch_id, accepted=result.accepted, duplicates=result.duplicates, rejected=_rejected(result)
        )



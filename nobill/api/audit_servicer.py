"""AuditService: proto ⇄ domain for the audit log."""

from __future__ import annotations

from nobill.api import convert
from nobill.api.context import OrgCallContext
from nobill.audit import checkpoints, keys
from nobill.audit import service as audit
from nobill.v1 import audit_pb2, audit_pb2_grpc, common_pb2


def _event(event: audit.AuditEvent) -> audit_pb2.AuditEvent:
    return audit_pb2.AuditEvent(
        org_id=event.org_id,
        sequence=event.sequence,
        actor=common_pb2.Actor(
            type=convert.ACTOR_TYPE_TO_PROTO[event.actor.type], id=event.actor.id, display_name=event.actor.display_name
        ),
        action=event.action,
        target_type=event.target_type,
        target_id=event.target_id,
        before=convert.struct(event.before),
        after=convert.struct(event.after),
        request_id=event.request_id,
        create_time=convert.timestamp(event.created_at),
        hash=event.hash,
        previous_hash=event.previous_hash,
        key_id=event.key_id or "",
    )


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def ListAuditEvents(self, request, context: OrgCallContext):  # noqa: N802, ANN001
        events, next_token = audit.list_(
            uow=context.uow,
            page_size=request.page_size,
            page_token=request.page_token,
            actions=list(request.actions),
            start_time=convert.datetime_or_none(request, "start_time"),
            end_time=convert.datetime_or_none(request, "end_time"),
            oldest_first=request.oldest_first,
        )
        return audit_pb2.ListAuditEventsResponse(events=[_event(e) for e in events], next_page_token=next_token)

    def VerifyAuditChain(self, request, context: OrgCallContext):  # noqa: N802, ANN001
        checkpoint = None
        if request.HasField("checkpoint"):
            checkpoint = checkpoints.Checkpoint(
                org_id=request.org_id,
                sequence=request.checkpoint.sequence,
                hash=request.checkpoint.hash,
                created_at=request.checkpoint.create_time,
                key_id=request.checkpoint.key_id,
                signature=request.checkpoint.signature,
            )
            checkpoints.check_signature(keys.current(), checkpoint)
        report = audit.verify_chain(uow=context.uow, checkpoint=checkpoint)
        return audit_pb2.VerifyAuditChainResponse(
            valid=report.valid,
            events_checked=report.events_checked,
            first_broken_sequence=report.first_broken_sequence,
            reason=report.reason,
        )

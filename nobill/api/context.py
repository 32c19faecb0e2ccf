"""What a servicer method receives as its `context`: the gRPC context plus the caller,
resolved by the interceptor and passed explicitly (never through thread-local state)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from nobill.audit.actors import AuditContext
from nobill.auth.authorization import Grant
from nobill.auth.principals import Principal
from nobill.db.database import Database
from nobill.db.unit_of_work import UnitOfWork


@dataclass
class CallContext:
    grpc_context: grpc.ServicerContext
    principal: Principal
    request_id: str
    database: Database

    @property
    def audit(self) -> AuditContext:
        return AuditContext(self.principal.actor, self.request_id)

    @contextlib.contextmanager
    def unit_of_work(self, *, org_id: str | None = None, user_id: str | None = None) -> Iterator[UnitOfWork]:
        """A new unit of work, for RPCs that create an org, read across the caller's orgs or
        touch only global tables; it commits when the block ends without an error (the
        servicer never commits)."""
        with UnitOfWork(self.database, org_id=org_id, user_id=user_id) as uow:
            yield uow
            uow.commit()

    def __getattr__(self, name: str) -> Any:
        # Everything else (abort, set_code, invocation_metadata, is_active, ...) is the
        # real gRPC context's.
        return getattr(self.grpc_context, name)


@dataclass
class OrgCallContext(CallContext):
    """For RPCs that act on one org: the open unit of work bound to it (the interceptor
    commits it after the handler returns) and the caller's grant there."""

    uow: UnitOfWork
    grant: Grant

"""What other domains may ask tenancy about an org's members (billing counts seats with
it): the narrow entry, so that no other domain reads tenancy's tables."""

from __future__ import annotations

from sqlalchemy import func, select

from nobill.db.unit_of_work import UnitOfWork
from nobill.tenancy.tables import memberships

_COUNT = select(func.count()).select_from(memberships)


def count(*, uow: UnitOfWork) -> int:
    """Members of the org the unit of work is bound to (row-level security scopes the count)."""
    return uow.execute(_COUNT).scalar_one()

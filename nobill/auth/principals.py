"""Who is calling: a user (identified by the token's `sub`) or another service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nobill.audit.actors import Actor, ActorType
from nobill.auth.permissions import ORG_PERMISSIONS


@dataclass(frozen=True)
class UserPrincipal:
    user_id: str
    subject: str
    email: str | None

    @property
    def actor(self) -> Actor:
        return Actor(ActorType.USER, self.user_id, self.email or self.subject)


@dataclass(frozen=True)
class ServicePrincipal:
    name: str
    scopes: frozenset[str]
    # None means every org (`"nobill/orgs": ["*"]`).
    orgs: frozenset[str] | None

    @property
    def actor(self) -> Actor:
        return Actor(ActorType.SERVICE, self.name, self.name)

    def may_act_for(self, org_id: str) -> bool:
        return self.orgs is None or org_id in self.orgs

    def org_permissions(self, org_id: str) -> frozenset[str]:
        """What this service may do in `org_id`: exactly its scopes, for exactly its orgs."""
        if not self.may_act_for(org_id):
            return frozenset()
        return self.scopes & ORG_PERMISSIONS


Principal = UserPrincipal | ServicePrincipal


def is_service_token(claims: dict[str, Any]) -> bool:
    return claims.get("nobill/principal") == "service"


def service_from_claims(claims: dict[str, Any]) -> ServicePrincipal:
    scopes = frozenset(str(claims.get("scope") or "").split())
    orgs = [str(org) for org in claims.get("nobill/orgs") or []]
    return ServicePrincipal(name=claims["sub"], scopes=scopes, orgs=None if "*" in orgs else frozenset(orgs))

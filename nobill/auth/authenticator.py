"""Turns an `authorization` header into a principal, provisioning users on first sight."""

from __future__ import annotations

import logging
import threading

from nobill.auth.principals import Principal, UserPrincipal, is_service_token, service_from_claims
from nobill.auth.tokens import InvalidToken, TokenVerifier
from nobill.db.database import Database
from nobill.db.unit_of_work import UnitOfWork
from nobill.errors import Unauthenticated
from nobill.tenancy import service as tenancy

log = logging.getLogger(__name__)


class Authenticator:
    def __init__(self, verifier: TokenVerifier, database: Database, *, cache_size: int = 50_000) -> None:
        self._verifier = verifier
        self._database = database
        # A subject's user id never changes once provisioned, so caching it is safe and
        # spares a database round trip on every call. Roles are NOT cached.
        self._user_ids: dict[str, str] = {}
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated("missing credentials: send `authorization: Bearer <token>`")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("missing credentials: send `authorization: Bearer <token>`")
        try:
            claims = self._verifier.verify(token.strip())
        except InvalidToken as error:
            log.info("token refused", extra={"reason": str(error)})
            raise Unauthenticated() from None
        if is_service_token(claims):
            return service_from_claims(claims)
        subject = claims["sub"]
        if len(subject) > 255 or not subject.isprintable():
            log.info("token refused", extra={"reason": "sub is too long or not printable"})
            raise Unauthenticated()
        email = claims.get("email") if isinstance(claims.get("email"), str) else None
        return UserPrincipal(self._user_id(subject, email), subject, email)

    def _user_id(self, subject: str, email: str | None) -> str:
        user_id = self._user_ids.get(subject)
        if user_id is not None:
            return user_id
        with UnitOfWork(self._database) as uow:
            user_id = tenancy.provision_user(uow=uow, subject=subject, email=email)
            uow.commit()
        with self._lock:
            if len(self._user_ids) >= self._cache_size:
                self._user_ids.clear()
            self._user_ids[subject] = user_id
        return user_id

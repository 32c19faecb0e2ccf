"""Turns an `authorization` header into a principal, provisioning users on first sight."""

from __future__ import annotations

import logging
import threading

from nobill.auth.principals import Principal, UserPrincipal, is_service_token, service_from_claims
from nobill.auth.tokens import EMAIL_VERIFIED_CLAIM, InvalidToken, TokenVerifier
from nobill.db.database import Database
from nobill.db.unit_of_work import transaction
from nobill.errors import Unauthenticated
from nobill.tenancy import service as tenancy

log = logging.getLogger(__name__)


class Authenticator:
    def __init__(
        self,
        verifier: TokenVerifier,
        database: Database,
        *,
        cache_size: int = 50_000,
        trusted_email_issuers: tuple[str, ...] = (),
    ) -> None:
        self._verifier = verifier
        self._database = database
        self._trusted_email_issuers = frozenset(trusted_email_issuers)
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
        subject = claims["sub"]  # bounded and printable: checked by the verifier
        email = self._verified_email(claims)
        return UserPrincipal(self._user_id(subject, email), subject, email)

    def _verified_email(self, claims: dict) -> str | None:
        """The token's email if the identity provider vouches for it: `email_verified` is
        true, or the issuer is trusted for emails. An unverified address claims no
        invitation and is not recorded, so nobody can take a seat by typing an address."""
        email = claims.get("email")
        if not isinstance(email, str):
            return None
        if claims.get(EMAIL_VERIFIED_CLAIM) is True or claims.get("iss") in self._trusted_email_issuers:
            return email
        return None

    def _user_id(self, subject: str, email: str | None) -> str:
        user_id = self._user_ids.get(subject)
        if user_id is not None:
            return user_id
        with transaction(self._database) as uow:  # commits when the block ends without error
            user_id = tenancy.provision_user(uow=uow, subject=subject, email=email)
        with self._lock:
            if len(self._user_ids) >= self._cache_size:
                self._user_ids.clear()
            self._user_ids[subject] = user_id
        return user_id

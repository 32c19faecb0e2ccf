"""Bearer JWTs for the gRPC API: verify them on every RPC, mint development tokens for `nobill token`.

Signatures and the registered claims (exp, nbf, iat, iss, aud) are checked by PyJWT's `jwt.decode`
with an explicit one-algorithm list chosen by the key, never by the token. Around it stay our own
policy checks: size and shape of the token before anything is decoded, which key may verify which
algorithm (a JWKS public key is never an HMAC secret), claim shapes, a printable bounded `sub`,
and a bounded lifetime. A verified token is remembered (bounded cache keyed by the token, never
past its `exp`), so the per-call cost of a token seen before is one dictionary lookup.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from nobill.auth.jwks import RemoteJwks, UnusableKey, VerificationKey, load_verification_keys
from nobill.errors import ConfigError

# NOTE: RFC 7518 §3.2: an HS256 key must be at least as long as the hash output (32 bytes).
MINIMUM_SECRET_BYTES = 32

PRINCIPAL_CLAIM = "nobill/principal"
EMAIL_VERIFIED_CLAIM = "email_verified"
ORGS_CLAIM = "nobill/orgs"
SCOPE_CLAIM = "scope"
PRINCIPAL_KINDS = ("user", "service")
ACCEPTED_ALGORITHMS = ("HS256", "RS256", "ES256")

_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_PEM_OR_SSH_KEY = re.compile(r"-----BEGIN |^ssh-(rsa|ed25519|dss) |^ecdsa-sha2-")


# A `sub` names a person or a service in logs and the audit trail: bounded and printable
# (no NUL, no control or bidi characters).
MAX_SUBJECT_LENGTH = 255
# Verified tokens remembered per process; an entry lives until its token's exp (+ leeway),
# and no longer than this, so a key withdrawn from the JWKS stops working soon after.
VERIFIED_CACHE_SIZE = 10_000
VERIFIED_CACHE_SECONDS = 300

_JWT_DECODE_OPTIONS = {
    "require": ["exp", "iss", "aud"],
    # Shapes of sub and jti are checked by _check_claim_shapes, a future iat by
    # _check_lifetime, with our own rules.
    "verify_iat": False,
    "verify_sub": False,
    "verify_jti": False,
}


@dataclass(frozen=True)
class JwtSettings:
    secret: str | None  # HS256 shared secret (NOBILL_JWT_SECRET)
    jwks_file: str | None  # path to a JWKS JSON file with RSA/EC public keys (NOBILL_JWT_JWKS_FILE)
    issuer: str  # NOBILL_JWT_ISSUER
    audience: str  # NOBILL_JWT_AUDIENCE
    leeway_seconds: int = 30
    max_token_bytes: int = 8192
    jwks_url: str | None = None  # the identity provider's JWKS endpoint (NOBILL_JWT_JWKS_URL)
    max_lifetime_seconds: int = 24 * 3600  # NOBILL_JWT_MAX_LIFETIME_SECONDS
    jwks_refresh_cooldown_seconds: float = 30  # least time between fetches for unknown kids


class InvalidToken(Exception):
    """Why a token was refused; the reason goes to logs only, never to the caller."""


class TokenVerifier:
    """Checks signature, algorithm, time window, issuer, audience and claim shapes of bearer tokens."""

    def __init__(self, settings: JwtSettings) -> None:
        if settings.secret is None and settings.jwks_file is None and settings.jwks_url is None:
            raise ConfigError(
                "NOBILL_JWT_SECRET", "set NOBILL_JWT_SECRET, NOBILL_JWT_JWKS_FILE or NOBILL_JWT_JWKS_URL"
            )
        if not settings.issuer:
            raise ConfigError("NOBILL_JWT_ISSUER", "must not be empty")
        if not settings.audience:
            raise ConfigError("NOBILL_JWT_AUDIENCE", "must not be empty")
        if settings.leeway_seconds < 0:
            raise ValueError("leeway_seconds must not be negative")
        if settings.max_token_bytes < 1:
            raise ValueError("max_token_bytes must be positive")
        if settings.max_lifetime_seconds < 1:
            raise ConfigError("NOBILL_JWT_MAX_LIFETIME_SECONDS", "must be positive")
        self._hs256_key = None if settings.secret is None else _secret_bytes(settings.secret)
        self._jwks_keys: dict[str | None, VerificationKey] = (
            {} if settings.jwks_file is None else load_verification_keys(settings.jwks_file)
        )
        # NOTE: only a lone key may be picked without a kid; with several, a kid-less token is ambiguous.
        self._key_without_kid = (
            next(iter(self._jwks_keys.values())) if len(self._jwks_keys) == 1 else None
        )
        self._issuer = settings.issuer
        self._audience = settings.audience
        self._remote_keys = (
            None
            if settings.jwks_url is None or self._jwks_keys
            else RemoteJwks(settings.jwks_url, cooldown=settings.jwks_refresh_cooldown_seconds)
        )
        self._leeway = settings.leeway_seconds
        self._max_token_bytes = settings.max_token_bytes
        self._max_lifetime = settings.max_lifetime_seconds
        # token -> (valid until, claims). Reads take no lock (a dict lookup is atomic).
        self._verified: dict[str, tuple[float, dict[str, Any]]] = {}
        self._verified_lock = threading.Lock()

    def verify(self, token: str) -> dict[str, Any]:
        """Return the claims of a valid token; raise InvalidToken (reason for logs only) otherwise.
        The claims are shared with later calls for the same token: do not modify them."""
        if isinstance(token, str):
            remembered = self._verified.get(token)
            if remembered is not None:
                if time.time() < remembered[0]:
                    return remembered[1]
                with self._verified_lock:
                    self._verified.pop(token, None)
        claims = self._verify(token)
        self._remember(token, claims)
        return claims

    def _remember(self, token: str, claims: dict[str, Any]) -> None:
        now = time.time()
        valid_until = min(claims["exp"] + self._leeway, now + VERIFIED_CACHE_SECONDS)
        with self._verified_lock:
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                # Drop the oldest entries (insertion order) rather than grow without bound.
                for stale in list(self._verified)[: VERIFIED_CACHE_SIZE // 10]:
                    del self._verified[stale]
            self._verified[token] = (valid_until, claims)

    def _verify(self, token: str) -> dict[str, Any]:
        if not isinstance(token, str):
            raise InvalidToken("token is not a string")
        # Checked before anything else; for an ASCII str (checked next) 1 char == 1 byte.
        if len(token) > self._max_token_bytes:
            raise InvalidToken("token too large")
        if not token.isascii():
            raise InvalidToken("token is not ASCII")
        segments = token.split(".")
        if len(segments) != 3:
            raise InvalidToken("token is not three dot-separated segments")
        header_segment, payload_segment, signature_segment = segments

        header = _decode_json_object(header_segment, "header")
        algorithm = header.get("alg")
        if algorithm not in ACCEPTED_ALGORITHMS:  # refuses "none" and everything we cannot verify safely
            if isinstance(algorithm, str):
                raise InvalidToken(f"alg {algorithm!r:.40} not accepted")
            raise InvalidToken("header has no string alg")
        if "crit" in header or header.get("b64", True) is not True:
            raise InvalidToken("token uses unsupported critical header extensions")
        _decode_signature(signature_segment)  # shape only: canonical base64url
        # Shapes are checked on the payload as sent; nothing is trusted before jwt.decode.
        self._check_claim_shapes(_decode_json_object(payload_segment, "payload"))

        if algorithm == "HS256":
            # The shared secret is the only HS256 key; a JWKS public key is never used as an HMAC
            # secret (algorithm confusion), whatever the token's kid says.
            if self._hs256_key is None:
                raise InvalidToken("HS256 token but no NOBILL_JWT_SECRET configured")
            key: Any = self._hs256_key
        else:  # RS256 or ES256
            verification_key = self._select_jwks_key(header)
            # The key, not the token, decides the algorithm family: an RS256 header cannot steer an
            # EC key or the reverse, and a JWK's own "alg" has to match.
            if verification_key.algorithm != algorithm:
                raise InvalidToken(
                    f"token alg {algorithm} does not match key {verification_key.kid!r:.80} ({verification_key.algorithm})"
                )
            key = verification_key.public_key
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options=_JWT_DECODE_OPTIONS,  # type: ignore[arg-type]
            )
        except jwt.PyJWTError as error:
            raise InvalidToken(_reason(error)) from None
        self._check_claim_shapes(claims)
        self._check_lifetime(claims)
        return claims

    def _select_jwks_key(self, header: dict[str, Any]) -> VerificationKey:
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("kid is not a string")
        if not self._jwks_keys and self._remote_keys is not None:
            try:
                return self._remote_keys.key_for(kid)
            except UnusableKey as error:
                raise InvalidToken(str(error)) from None
        if not self._jwks_keys:
            raise InvalidToken("RS256/ES256 token but no NOBILL_JWT_JWKS_FILE configured")
        if kid is None:
            if self._key_without_kid is None:
                raise InvalidToken("token has no kid and the JWKS holds several keys")
            return self._key_without_kid
        if not isinstance(kid, str):
            raise InvalidToken("kid is not a string")
        key = self._jwks_keys.get(kid)
        if key is None:
            raise InvalidToken(f"unknown kid {kid!r:.80}")
        return key

    def _check_claim_shapes(self, claims: dict[str, Any]) -> None:
        """Our policy on claim types, run on the payload before jwt.decode (so a malformed
        token is refused for the right reason) and on the verified claims after it."""
        if "exp" not in claims:
            raise InvalidToken("missing exp")
        for name in ("exp", "nbf", "iat"):
            if name in claims and not _is_numeric_date(claims[name]):
                raise InvalidToken(f"{name} is not a number")
        if claims.get("iss") != self._issuer:
            raise InvalidToken("wrong or missing iss")
        audience = claims.get("aud")
        if isinstance(audience, list):
            if self._audience not in audience or not all(isinstance(entry, str) for entry in audience):
                raise InvalidToken("wrong aud")
        elif audience != self._audience:
            raise InvalidToken("wrong or missing aud")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("missing or empty sub")
        if len(subject) > MAX_SUBJECT_LENGTH or not subject.isprintable():
            # isprintable() is False for NUL, C0/C1 controls, DEL, bidi overrides, zero-width
            # characters and line separators: nothing that can hide or reorder text in logs.
            raise InvalidToken(f"sub is longer than {MAX_SUBJECT_LENGTH} characters or not printable")
        if EMAIL_VERIFIED_CLAIM in claims and not isinstance(claims[EMAIL_VERIFIED_CLAIM], bool):
            raise InvalidToken(f"{EMAIL_VERIFIED_CLAIM} is not a boolean")

        for name in ("jti", "email", SCOPE_CLAIM):
            if name in claims and not isinstance(claims[name], str):
                raise InvalidToken(f"{name} is not a string")
        if PRINCIPAL_CLAIM in claims and claims[PRINCIPAL_CLAIM] not in PRINCIPAL_KINDS:
            raise InvalidToken(f"{PRINCIPAL_CLAIM} is not one of {PRINCIPAL_KINDS}")
        if ORGS_CLAIM in claims:
            orgs = claims[ORGS_CLAIM]
            if not isinstance(orgs, list) or not all(isinstance(org, str) for org in orgs):
                raise InvalidToken(f"{ORGS_CLAIM} is not a list of strings")

    def _check_lifetime(self, claims: dict[str, Any]) -> None:
        """Refuse tokens that live longer than the configured maximum, measured from `iat`
        (from now when there is none), and tokens issued in the future."""
        now = time.time()
        issued_at = claims.get("iat")
        if issued_at is not None and issued_at - self._leeway > now:
            raise InvalidToken("token issued in the future (iat)")
        start = now if issued_at is None else issued_at
        if claims["exp"] - start > self._max_lifetime + self._leeway:
            raise InvalidToken(f"token lifetime exceeds {self._max_lifetime} seconds")


def _reason(error: jwt.PyJWTError) -> str:
    """Our wording of PyJWT's refusal (the reason goes to logs only)."""
    if isinstance(error, jwt.InvalidSignatureError):
        return "bad signature"
    if isinstance(error, jwt.ExpiredSignatureError):
        return "token expired"
    if isinstance(error, jwt.ImmatureSignatureError):
        return "token not valid yet (iat)" if "iat" in str(error) else "token not valid yet (nbf)"
    if isinstance(error, jwt.InvalidIssuerError):
        return "wrong or missing iss"
    if isinstance(error, jwt.InvalidAudienceError):
        return "wrong aud"
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"missing {error.claim}"
    return f"invalid token: {str(error):.200}"


def mint_token(
    *,
    secret: str,
    issuer: str,
    audience: str,
    subject: str,
    email: str | None = None,
    service: bool = False,
    scopes: Sequence[str] = (),
    orgs: Sequence[str] = (),
    ttl_seconds: int = 3600,
    now: float | None = None,
) -> str:
    """Mint an HS256 development token for a user, or for a service with scopes and orgs."""
    key = _secret_bytes(secret)
    if not subject:
        raise ValueError("subject must not be empty")
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    if isinstance(scopes, str) or isinstance(orgs, str):
        raise TypeError("scopes and orgs are sequences of strings, not a single string")
    if not service and (scopes or orgs):
        raise ValueError("scopes and orgs are only for service tokens (service=True)")
    if service and email is not None:
        raise ValueError("email is only for user tokens")
    for scope in scopes:
        if not scope or any(character.isspace() for character in scope):
            raise ValueError(f"scope {scope!r} must be non-empty and contain no whitespace")
    if any(not org for org in orgs):
        raise ValueError("org ids must not be empty")

    issued_at = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": issued_at,
        "nbf": issued_at,
        "exp": issued_at + ttl_seconds,
        "jti": uuid.uuid4().hex,
    }
    if email is not None:
        claims["email"] = email
        # The minter vouches for the address (development tokens, `nobill token`).
        claims[EMAIL_VERIFIED_CLAIM] = True
    if service:
        claims[PRINCIPAL_CLAIM] = "service"
        claims[SCOPE_CLAIM] = " ".join(scopes)
        claims[ORGS_CLAIM] = list(orgs)
    return jwt.encode(claims, key, algorithm="HS256")


def _secret_bytes(secret: str) -> bytes:
    key = secret.encode("utf-8")
    if len(key) < MINIMUM_SECRET_BYTES:
        raise ConfigError("NOBILL_JWT_SECRET", f"must be at least {MINIMUM_SECRET_BYTES} bytes (it is {len(key)})")
    if _PEM_OR_SSH_KEY.search(secret):
        # A public key used as the HMAC secret lets anyone who has the public key forge tokens.
        raise ConfigError(
            "NOBILL_JWT_SECRET", "looks like a PEM/SSH key; use a random secret, put public keys in the JWKS file"
        )
    return key


def _decode_json_object(segment: str, name: str) -> dict[str, Any]:
    if _SEGMENT.fullmatch(segment) is None:
        raise InvalidToken(f"{name} is not base64url")
    try:
        value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, RecursionError):  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise InvalidToken(f"{name} is not base64url-encoded JSON") from None
    if not isinstance(value, dict):
        raise InvalidToken(f"{name} is not a JSON object")
    return value


def _decode_signature(segment: str) -> bytes:
    if _SEGMENT.fullmatch(segment) is None:
        raise InvalidToken("signature is missing or not base64url")
    try:
        signature = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except binascii.Error:
        raise InvalidToken("signature is not base64url") from None
    # Non-zero padding bits would give one signature several spellings (distinct token strings).
    if base64.urlsafe_b64encode(signature).rstrip(b"=") != segment.encode("ascii"):
        raise InvalidToken("signature is not canonical base64url")
    return signature


def _is_numeric_date(value: Any) -> bool:
    # bool is an int subclass and "exp": true must not mean 1970; NaN/Infinity parse as floats.
    value_type = type(value)
    return value_type is int or (value_type is float and math.isfinite(value))

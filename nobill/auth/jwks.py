"""Public signing keys for RS256/ES256 tokens: read once from a JWKS file
(NOBILL_JWT_JWKS_FILE), or fetched from the identity provider's JWKS URL
(NOBILL_JWT_JWKS_URL) through PyJWT's PyJWKClient, cached and refreshed on an unknown kid."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt import PyJWKClient
from jwt.exceptions import PyJWKClientError, PyJWKError

from nobill.errors import ConfigError

logger = logging.getLogger(__name__)

SETTING = "NOBILL_JWT_JWKS_FILE"

# NOTE: RFC 8725 §3.5 / NIST SP 800-131A: RSA keys under 2048 bits are forgeable in practice.
MINIMUM_RSA_KEY_BITS = 2048

_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_P256_COORDINATE_BYTES = 32


@dataclass(frozen=True)
class VerificationKey:
    """One public key from the JWKS, bound to the single algorithm it may verify."""

    kid: str | None
    algorithm: str  # "RS256" or "ES256"
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey  # handed to jwt.decode


class UnusableKey(Exception):
    """A key from the JWKS URL that cannot be used for our tokens (reason in the message)."""


def load_verification_keys(path: str) -> dict[str | None, VerificationKey]:
    """Read and validate a JWKS file; returns the usable keys by `kid` (None for a lone key without one)."""
    try:
        with open(path, "rb") as jwks_file:
            document = json.loads(jwks_file.read())
    except OSError as error:
        raise ConfigError(SETTING, f"cannot read {path}: {error.strerror or error}") from error
    except (ValueError, RecursionError) as error:
        raise ConfigError(SETTING, f"{path} is not valid JSON") from error

    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ConfigError(SETTING, f'{path} must be a JSON object with a "keys" list (RFC 7517 JWK Set)')

    keys: list[VerificationKey] = []
    for position, jwk in enumerate(document["keys"]):
        key = _parse_jwk(jwk, where=f"{path} key #{position}")
        if key is not None:
            keys.append(key)

    if not keys:
        raise ConfigError(SETTING, f"{path} has no RS256 (RSA) or ES256 (EC P-256) signing keys")
    if len(keys) > 1 and any(key.kid is None for key in keys):
        raise ConfigError(SETTING, f'{path}: every key needs a "kid" when the file holds more than one key')
    keys_by_kid: dict[str | None, VerificationKey] = {}
    for key in keys:
        if key.kid in keys_by_kid:
            raise ConfigError(SETTING, f"{path}: kid {key.kid!r} appears more than once")
        keys_by_kid[key.kid] = key
    return keys_by_kid


def _parse_jwk(jwk: Any, *, where: str) -> VerificationKey | None:
    """Turn one JWK into a VerificationKey; None for keys that are not for RS256/ES256 signatures."""
    if not isinstance(jwk, dict):
        raise ConfigError(SETTING, f"{where} is not a JSON object")
    kid = jwk.get("kid")
    if kid is not None and (not isinstance(kid, str) or not kid):
        raise ConfigError(SETTING, f'{where}: "kid" must be a non-empty string')
    kty = jwk.get("kty")
    declared_algorithm = jwk.get("alg")
    if kty == "oct":
        raise ConfigError(SETTING, f"{where}: symmetric keys do not belong in the JWKS file; use NOBILL_JWT_SECRET")
    if "d" in jwk or "p" in jwk or "q" in jwk:
        raise ConfigError(SETTING, f"{where} contains private key material; the file must hold public keys only")

    # NOTE: identity providers publish encryption keys and other algorithms in the same JWKS
    # (Keycloak lists an RSA-OAEP key next to its RS256 key). Those can never verify our tokens,
    # so they are skipped rather than failing start-up.
    key_operations = jwk.get("key_ops")
    skip_reason = None
    if jwk.get("use", "sig") != "sig":
        skip_reason = f'"use" is {jwk.get("use")!r}'
    elif isinstance(key_operations, list) and "verify" not in key_operations:
        skip_reason = '"key_ops" does not include "verify"'
    elif declared_algorithm is not None and declared_algorithm not in ("RS256", "ES256"):
        skip_reason = f'"alg" is {declared_algorithm!r}'
    elif kty not in ("RSA", "EC"):
        skip_reason = f'"kty" is {kty!r}'
    elif kty == "EC" and jwk.get("crv") != "P-256" and declared_algorithm is None:
        skip_reason = f'"crv" is {jwk.get("crv")!r}'
    if skip_reason is not None:
        logger.warning(
            "ignoring JWKS key %s (kid=%r): %s; only RS256 and ES256 are accepted", where, kid, skip_reason
        )
        return None

    try:
        if kty == "RSA":
            if declared_algorithm not in (None, "RS256"):
                raise ConfigError(SETTING, f'{where}: an RSA key cannot have "alg" {declared_algorithm!r}')
            return VerificationKey(kid=kid, algorithm="RS256", public_key=_rsa_key(jwk, where=where))
        if declared_algorithm not in (None, "ES256"):
            raise ConfigError(SETTING, f'{where}: an EC key cannot have "alg" {declared_algorithm!r}')
        return VerificationKey(kid=kid, algorithm="ES256", public_key=_p256_key(jwk, where=where))
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise ConfigError(SETTING, f"{where} is not a valid {kty} public key: {error}") from error


def _rsa_key(jwk: dict[str, Any], *, where: str) -> rsa.RSAPublicKey:
    modulus = int.from_bytes(_decode_key_parameter(jwk, "n"), "big")
    exponent = int.from_bytes(_decode_key_parameter(jwk, "e"), "big")
    public_key = rsa.RSAPublicNumbers(exponent, modulus).public_key()
    if public_key.key_size < MINIMUM_RSA_KEY_BITS:
        raise ConfigError(
            SETTING, f"{where}: RSA key has {public_key.key_size} bits; at least {MINIMUM_RSA_KEY_BITS} needed"
        )
    return public_key


def _p256_key(jwk: dict[str, Any], *, where: str) -> ec.EllipticCurvePublicKey:
    if jwk.get("crv") != "P-256":
        raise ConfigError(SETTING, f'{where}: ES256 needs "crv": "P-256", not {jwk.get("crv")!r}')
    x = _decode_key_parameter(jwk, "x")
    y = _decode_key_parameter(jwk, "y")
    if len(x) != _P256_COORDINATE_BYTES or len(y) != _P256_COORDINATE_BYTES:
        raise ConfigError(SETTING, f"{where}: P-256 coordinates must be {_P256_COORDINATE_BYTES} bytes each")
    # public_key() refuses points that are not on the curve (invalid-curve attacks).
    return ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()).public_key()


def _decode_key_parameter(jwk: dict[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str) or not _BASE64URL.fullmatch(value):
        raise ValueError(f'"{name}" must be a base64url string')
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except binascii.Error as error:
        raise ValueError(f'"{name}" is not valid base64url') from error


class RemoteJwks:
    """Signing keys published at the identity provider's JWKS URL. PyJWKClient fetches
    and caches the key set (`lifespan` seconds) and fetches it again when a token names
    an unknown kid (at most once per `cooldown` seconds, so random kids cannot make us
    hammer the provider); every key passes the same policy as the JWKS file's."""

    def __init__(self, url: str, *, lifespan: float = 300, cooldown: float = 30, timeout: float = 5) -> None:
        try:
            self._client = PyJWKClient(
                url, cache_jwk_set=True, lifespan=lifespan, cooldown_duration=cooldown, timeout=timeout
            )
        except PyJWKClientError as error:
            raise ConfigError("NOBILL_JWT_JWKS_URL", str(error)) from None
        self._keys: dict[tuple[str | None, int], VerificationKey] = {}

    def key_for(self, kid: str | None) -> VerificationKey:
        """The verification key named `kid` (or the lone signing key when kid is None);
        raises UnusableKey when there is none or it breaks the key policy."""
        try:
            if kid is None:
                signing_keys = self._client.get_signing_keys()
                if len(signing_keys) != 1:
                    raise UnusableKey("token has no kid and the JWKS URL publishes several keys")
                jwk = signing_keys[0]
            else:
                jwk = self._client.get_signing_key(kid)
        except (PyJWKClientError, PyJWKError) as error:
            message = str(error)
            if "Unable to find a signing key" in message:
                raise UnusableKey(f"unknown kid {kid!r:.80}") from None
            raise UnusableKey(f"JWKS URL: {message:.200}") from None
        # The same key object is checked once, not on every call.
        cache_key = (kid, id(jwk.key))
        checked = self._keys.get(cache_key)
        if checked is None:
            checked = _checked_remote_key(kid, jwk.key, jwk.algorithm_name)
            if len(self._keys) > 64:
                self._keys.clear()
            self._keys[cache_key] = checked
        return checked


def _checked_remote_key(kid: str | None, key: Any, declared_algorithm: str | None) -> VerificationKey:
    """The key policy for keys fetched from the JWKS URL: public RSA keys of at least
    MINIMUM_RSA_KEY_BITS for RS256, public P-256 keys for ES256, nothing else."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MINIMUM_RSA_KEY_BITS:
            raise UnusableKey(f"RSA key {kid!r:.80} has {key.key_size} bits; at least {MINIMUM_RSA_KEY_BITS} needed")
        algorithm = "RS256"
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise UnusableKey(f"EC key {kid!r:.80} is not on P-256")
        algorithm = "ES256"
    else:
        # Symmetric keys (an HMAC secret published next to the public keys would let anyone
        # forge tokens) and private keys are never used.
        raise UnusableKey(f"key {kid!r:.80} is not an RSA or P-256 public key")
    if declared_algorithm not in (None, algorithm):
        raise UnusableKey(f"key {kid!r:.80} declares alg {declared_algorithm!r:.20}; only {algorithm} fits it")
    return VerificationKey(kid=kid, algorithm=algorithm, public_key=key)

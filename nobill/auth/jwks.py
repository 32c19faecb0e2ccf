"""Public signing keys for RS256/ES256 tokens, read once from a JWKS file (NOBILL_JWT_JWKS_FILE)."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

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
    verify_signature: Callable[[bytes, bytes], bool]  # (signing_input, signature) -> valid?


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
            return VerificationKey(kid=kid, algorithm="RS256", verify_signature=_rsa_verifier(jwk, where=where))
        if declared_algorithm not in (None, "ES256"):
            raise ConfigError(SETTING, f'{where}: an EC key cannot have "alg" {declared_algorithm!r}')
        return VerificationKey(kid=kid, algorithm="ES256", verify_signature=_p256_verifier(jwk, where=where))
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise ConfigError(SETTING, f"{where} is not a valid {kty} public key: {error}") from error


def _rsa_verifier(jwk: dict[str, Any], *, where: str) -> Callable[[bytes, bytes], bool]:
    modulus = int.from_bytes(_decode_key_parameter(jwk, "n"), "big")
    exponent = int.from_bytes(_decode_key_parameter(jwk, "e"), "big")
    public_key = rsa.RSAPublicNumbers(exponent, modulus).public_key()
    if public_key.key_size < MINIMUM_RSA_KEY_BITS:
        raise ConfigError(
            SETTING, f"{where}: RSA key has {public_key.key_size} bits; at least {MINIMUM_RSA_KEY_BITS} needed"
        )
    pkcs1v15 = padding.PKCS1v15()
    sha256 = hashes.SHA256()

    def verify_rs256(signing_input: bytes, signature: bytes) -> bool:
        try:
            public_key.verify(signature, signing_input, pkcs1v15, sha256)
        except InvalidSignature:
            return False
        return True

    return verify_rs256


def _p256_verifier(jwk: dict[str, Any], *, where: str) -> Callable[[bytes, bytes], bool]:
    if jwk.get("crv") != "P-256":
        raise ConfigError(SETTING, f'{where}: ES256 needs "crv": "P-256", not {jwk.get("crv")!r}')
    x = _decode_key_parameter(jwk, "x")
    y = _decode_key_parameter(jwk, "y")
    if len(x) != _P256_COORDINATE_BYTES or len(y) != _P256_COORDINATE_BYTES:
        raise ConfigError(SETTING, f"{where}: P-256 coordinates must be {_P256_COORDINATE_BYTES} bytes each")
    # public_key() refuses points that are not on the curve (invalid-curve attacks).
    public_key = ec.EllipticCurvePublicNumbers(
        int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
    ).public_key()
    ecdsa_sha256 = ec.ECDSA(hashes.SHA256())

    def verify_es256(signing_input: bytes, signature: bytes) -> bool:
        # JWS carries the raw r||s pair (RFC 7518 §3.4); cryptography wants DER.
        if len(signature) != 2 * _P256_COORDINATE_BYTES:
            return False
        r = int.from_bytes(signature[:_P256_COORDINATE_BYTES], "big")
        s = int.from_bytes(signature[_P256_COORDINATE_BYTES:], "big")
        try:
            public_key.verify(encode_dss_signature(r, s), signing_input, ecdsa_sha256)
        except InvalidSignature:
            return False
        return True

    return verify_es256


def _decode_key_parameter(jwk: dict[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str) or not _BASE64URL.fullmatch(value):
        raise ValueError(f'"{name}" must be a base64url string')
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except binascii.Error as error:
        raise ValueError(f'"{name}" is not valid base64url') from error

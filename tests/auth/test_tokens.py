"""Bearer-token verification and development-token minting (nobill.auth.tokens, nobill.auth.jwks)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from nobill.auth.tokens import InvalidToken, JwtSettings, TokenVerifier, mint_token
from nobill.errors import ConfigError

ISSUER = "https://auth.nobill.test"
AUDIENCE = "nobill-api"
SECRET = "test-secret-0123456789-abcdefghijklmnop"  # 39 bytes


# --- helpers -------------------------------------------------------------------------------------


def hs256_verifier(**overrides: Any) -> TokenVerifier:
    settings = {"secret": SECRET, "jwks_file": None, "issuer": ISSUER, "audience": AUDIENCE, **overrides}
    return TokenVerifier(JwtSettings(**settings))


def valid_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user_1", "iat": now, "nbf": now, "exp": now + 600}
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not OMIT}


OMIT = object()


def b64url(data: bytes | str | dict[str, Any] | list[Any]) -> str:
    if isinstance(data, (dict, list)):
        data = json.dumps(data)
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_signed_hs256(header: Any, payload: Any, key: bytes = SECRET.encode()) -> str:
    """An HS256-signed token with any header and payload (bytes are taken as the raw payload)."""
    signing_input = f"{b64url(header)}.{b64url(payload)}"
    signature = hmac.digest(key, signing_input.encode(), hashlib.sha256)
    return f"{signing_input}.{b64url(signature)}"


def public_jwk(private_key: Any, *, kid: str | None, **extra: Any) -> dict[str, Any]:
    if isinstance(private_key, rsa.RSAPrivateKey):
        jwk = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    else:
        jwk = ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    if kid is not None:
        jwk["kid"] = kid
    jwk.update(extra)
    return jwk


def write_jwks(tmp_path: Path, keys: list[Any], name: str = "jwks.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps({"keys": keys}))
    return str(path)


def jwks_verifier(jwks_file: str, **overrides: Any) -> TokenVerifier:
    settings = {"secret": None, "jwks_file": jwks_file, "issuer": ISSUER, "audience": AUDIENCE, **overrides}
    return TokenVerifier(JwtSettings(**settings))


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def second_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


# --- HS256 ---------------------------------------------------------------------------------------


def test_hs256_round_trip_returns_the_minted_claims() -> None:
    now = time.time()
    token = mint_token(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, subject="user_42", email="ada@example.com")

    claims = hs256_verifier().verify(token)

    assert claims["sub"] == "user_42"
    assert claims["email"] == "ada@example.com"
    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUDIENCE
    assert abs(claims["iat"] - now) <= 2
    assert claims["nbf"] == claims["iat"]
    assert claims["exp"] == claims["iat"] + 3600
    assert isinstance(claims["jti"], str) and len(claims["jti"]) == 32
    assert "nobill/principal" not in claims and "scope" not in claims and "nobill/orgs" not in claims
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_token_minted_by_another_pyjwt_issuer_verifies() -> None:
    token = jwt.encode(valid_claims(sub="user_7", aud=["other-api", AUDIENCE]), SECRET, algorithm="HS256")

    assert hs256_verifier().verify(token)["sub"] == "user_7"


def test_hs256_token_signed_with_another_secret_is_refused() -> None:
    token = mint_token(secret="another-secret-that-is-long-enough-0000", issuer=ISSUER, audience=AUDIENCE, subject="u")

    with pytest.raises(InvalidToken, match="bad signature"):
        hs256_verifier().verify(token)


def test_hs256_token_refused_when_only_a_jwks_is_configured(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = jwks_verifier(write_jwks(tmp_path, [public_jwk(rsa_key, kid="a")]))
    token = mint_token(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, subject="u")

    with pytest.raises(InvalidToken, match="no NOBILL_JWT_SECRET"):
        verifier.verify(token)


# --- time window ---------------------------------------------------------------------------------


def test_expired_token_within_leeway_is_accepted() -> None:
    token = mint_token(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, subject="u", ttl_seconds=60,
                       now=time.time() - 70)  # expired 10 s ago

    assert hs256_verifier(leeway_seconds=30).verify(token)["sub"] == "u"


def test_expired_token_without_leeway_is_refused() -> None:
    token = mint_token(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, subject="u", ttl_seconds=60,
                       now=time.time() - 70)  # expired 10 s ago

    with pytest.raises(InvalidToken, match="expired"):
        hs256_verifier(leeway_seconds=0).verify(token)


def test_token_expired_longer_ago_than_the_leeway_is_refused() -> None:
    token = mint_token(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, subject="u", ttl_seconds=60,
                       now=time.time() - 120)  # expired 60 s ago

    with pytest.raises(InvalidToken, match="expired"):
        hs256_verifier(leeway_seconds=30).verify(token)


def test_not_yet_valid_token_within_leeway_is_accepted() -> None:
    token = mint_token(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, subject="u", now=time.time() + 10)

    assert hs256_verifier(leeway_seconds=30).verify(token)["sub"] == "u"


def test_not_yet_valid_token_without_leeway_is_refused() -> None:
    token = mint_token(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, subject="u", now=time.time() + 10)

    with pytest.raises(InvalidToken, match="nbf"):
        hs256_verifier(leeway_seconds=0).verify(token)


def test_token_not_valid_until_after_the_leeway_is_refused() -> None:
    token = mint_token(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, subject="u", now=time.time() + 120)

    with pytest.raises(InvalidToken, match="nbf"):
        hs256_verifier(leeway_seconds=30).verify(token)


def test_token_without_nbf_and_iat_is_accepted() -> None:
    token = hand_signed_hs256({"alg": "HS256", "typ": "JWT"}, valid_claims(nbf=OMIT, iat=OMIT))

    assert hs256_verifier().verify(token)["sub"] == "user_1"


def test_token_without_exp_is_refused() -> None:
    token = hand_signed_hs256({"alg": "HS256"}, valid_claims(exp=OMIT))

    with pytest.raises(InvalidToken, match="missing exp"):
        hs256_verifier().verify(token)


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", ["9999999999", True, [9999999999], float("inf"), float("nan")])
def test_time_claims_must_be_finite_numbers(claim: str, value: Any) -> None:
    token = hand_signed_hs256({"alg": "HS256"}, valid_claims(**{claim: value}))

    with pytest.raises(InvalidToken, match=f"{claim} is not a number"):
        hs256_verifier().verify(token)


def test_fractional_exp_is_accepted() -> None:
    token = hand_signed_hs256({"alg": "HS256"}, valid_claims(exp=time.time() + 600.5))

    assert hs256_verifier().verify(token)["sub"] == "user_1"


# --- issuer, audience, subject -------------------------------------------------------------------


@pytest.mark.parametrize("issuer", ["https://evil.test", ISSUER + "/", "", None, [ISSUER], OMIT])
def test_wrong_or_missing_issuer_is_refused(issuer: Any) -> None:
    token = hand_signed_hs256({"alg": "HS256"}, valid_claims(iss=issuer))

    with pytest.raises(InvalidToken, match="iss"):
        hs256_verifier().verify(token)


@pytest.mark.parametrize("audience", ["other-api", AUDIENCE.upper(), "", None, OMIT, {"aud": AUDIENCE}])
def test_wrong_or_missing_audience_is_refused(audience: Any) -> None:
    token = hand_signed_hs256({"alg": "HS256"}, valid_claims(aud=audience))

    with pytest.raises(InvalidToken, match="aud"):
        hs256_verifier().verify(token)


def test_audience_list_containing_ours_is_accepted() -> None:
    token = hand_signed_hs256({"alg": "HS256"}, valid_claims(aud=["billing-ui", AUDIENCE]))

    assert hs256_verifier().verify(token)["aud"] == ["billing-ui", AUDIENCE]


@pytest.mark.parametrize("audience", [[], ["billing-ui"], [AUDIENCE, 7], [[AUDIENCE]]])
def test_audience_list_without_ours_or_with_non_strings_is_refused(audience: list[Any]) -> None:
    token = hand_signed_hs256({"alg": "HS256"}, valid_claims(aud=audience))

    with pytest.raises(InvalidToken, match="wrong aud"):
        hs256_verifier().verify(token)


@pytest.mark.parametrize("subject", [OMIT, "", None, 42, ["user_1"]])
def test_missing_empty_or_non_string_subject_is_refused(subject: Any) -> None:
    token = hand_signed_hs256({"alg": "HS256"}, valid_claims(sub=subject))

    with pytest.raises(InvalidToken, match="missing or empty sub"):
        hs256_verifier().verify(token)


# --- algorithms ----------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("signature", ["", b64url(b"x" * 32)])
def test_alg_none_is_refused(algorithm: str, signature: str) -> None:
    token = f"{b64url({'alg': algorithm, 'typ': 'JWT'})}.{b64url(valid_claims())}.{signature}"

    with pytest.raises(InvalidToken, match="not accepted"):
        hs256_verifier().verify(token)


@pytest.mark.parametrize("algorithm", ["HS384", "HS512", "RS512", "PS256", "EdDSA", "hs256", ""])
def test_other_algorithms_are_refused(algorithm: str) -> None:
    token = hand_signed_hs256({"alg": algorithm}, valid_claims())

    with pytest.raises(InvalidToken, match="not accepted"):
        hs256_verifier().verify(token)


@pytest.mark.parametrize("header", [{}, {"alg": None}, {"alg": 256}, {"alg": ["HS256"]}, {"typ": "JWT"}])
def test_header_without_a_string_alg_is_refused(header: dict[str, Any]) -> None:
    token = hand_signed_hs256(header, valid_claims())

    with pytest.raises(InvalidToken, match="no string alg"):
        hs256_verifier().verify(token)


@pytest.mark.parametrize("with_secret", [True, False])
def test_hs256_token_signed_with_the_rsa_public_key_is_refused(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, with_secret: bool
) -> None:
    """Algorithm confusion: the attacker knows the public key and uses it as an HMAC secret."""
    verifier = TokenVerifier(JwtSettings(
        secret=SECRET if with_secret else None,
        jwks_file=write_jwks(tmp_path, [public_jwk(rsa_key, kid="rsa-1", alg="RS256")]),
        issuer=ISSUER, audience=AUDIENCE,
    ))
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public_jwk_json = json.dumps(public_jwk(rsa_key, kid="rsa-1")).encode()
    rs256_token = jwt.encode(valid_claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    assert verifier.verify(rs256_token)["sub"] == "user_1"  # the key itself is usable

    for forged_secret in (public_pem, public_pem.strip(), public_jwk_json):
        for header in ({"alg": "HS256", "kid": "rsa-1"}, {"alg": "HS256"}):
            forged = hand_signed_hs256(header, valid_claims(), key=forged_secret)
            expected = "bad signature" if with_secret else "no NOBILL_JWT_SECRET"
            with pytest.raises(InvalidToken, match=expected):
                verifier.verify(forged)


@pytest.mark.parametrize("header", [{"alg": "HS256", "crit": ["exp"]}, {"alg": "HS256", "b64": False, "crit": ["b64"]},
                                    {"alg": "HS256", "b64": False}])
def test_critical_header_extensions_are_refused(header: dict[str, Any]) -> None:
    token = hand_signed_hs256(header, valid_claims())

    with pytest.raises(InvalidToken, match="critical header"):
        hs256_verifier().verify(token)


# --- RS256 / ES256 with a JWKS file --------------------------------------------------------------


def test_rs256_token_verifies_with_the_jwks_key(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = jwks_verifier(write_jwks(tmp_path, [public_jwk(rsa_key, kid="rsa-1", alg="RS256", use="sig")]))
    token = jwt.encode(valid_claims(sub="svc_rs"), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})

    assert verifier.verify(token)["sub"] == "svc_rs"


def test_es256_token_verifies_with_the_jwks_key(tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey) -> None:
    verifier = jwks_verifier(write_jwks(tmp_path, [public_jwk(ec_key, kid="ec-1", alg="ES256")]))
    token = jwt.encode(valid_claims(sub="svc_ec"), ec_key, algorithm="ES256", headers={"kid": "ec-1"})

    assert verifier.verify(token)["sub"] == "svc_ec"


def test_key_rotation_accepts_both_kids_and_then_drops_the_old_one(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, second_rsa_key: rsa.RSAPrivateKey
) -> None:
    old_token = jwt.encode(valid_claims(sub="old"), rsa_key, algorithm="RS256", headers={"kid": "2024-01"})
    new_token = jwt.encode(valid_claims(sub="new"), second_rsa_key, algorithm="RS256", headers={"kid": "2024-07"})
    during_rotation = jwks_verifier(write_jwks(tmp_path, [
        public_jwk(rsa_key, kid="2024-01"), public_jwk(second_rsa_key, kid="2024-07"),
    ], name="both.json"))

    assert during_rotation.verify(old_token)["sub"] == "old"
    assert during_rotation.verify(new_token)["sub"] == "new"
    # Each kid verifies with its own key only.
    swapped = jwt.encode(valid_claims(), rsa_key, algorithm="RS256", headers={"kid": "2024-07"})
    with pytest.raises(InvalidToken, match="bad signature"):
        during_rotation.verify(swapped)

    after_rotation = jwks_verifier(write_jwks(tmp_path, [public_jwk(second_rsa_key, kid="2024-07")], name="new.json"))
    assert after_rotation.verify(new_token)["sub"] == "new"
    with pytest.raises(InvalidToken, match="unknown kid"):
        after_rotation.verify(old_token)


def test_mixed_rsa_and_ec_keys_each_verify_their_own_algorithm(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    verifier = jwks_verifier(write_jwks(tmp_path, [public_jwk(rsa_key, kid="rsa"), public_jwk(ec_key, kid="ec")]))

    rs256_token = jwt.encode(valid_claims(sub="r"), rsa_key, algorithm="RS256", headers={"kid": "rsa"})
    es256_token = jwt.encode(valid_claims(sub="e"), ec_key, algorithm="ES256", headers={"kid": "ec"})
    assert verifier.verify(rs256_token)["sub"] == "r"
    assert verifier.verify(es256_token)["sub"] == "e"
    # The token's alg cannot steer a key of the other family.
    with pytest.raises(InvalidToken, match="does not match key"):
        verifier.verify(jwt.encode(valid_claims(), ec_key, algorithm="ES256", headers={"kid": "rsa"}))
    with pytest.raises(InvalidToken, match="does not match key"):
        verifier.verify(jwt.encode(valid_claims(), rsa_key, algorithm="RS256", headers={"kid": "ec"}))


def test_token_alg_must_equal_the_jwk_alg(tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey) -> None:
    verifier = jwks_verifier(write_jwks(tmp_path, [public_jwk(ec_key, kid="ec", alg="ES256")]))
    header = b64url({"alg": "RS256", "kid": "ec"})
    payload = b64url(valid_claims())
    token = f"{header}.{payload}.{b64url(b'x' * 256)}"

    with pytest.raises(InvalidToken, match="does not match key"):
        verifier.verify(token)


def test_unknown_kid_is_refused(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = jwks_verifier(write_jwks(tmp_path, [public_jwk(rsa_key, kid="rsa-1")]))
    token = jwt.encode(valid_claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-2"})

    with pytest.raises(InvalidToken, match="unknown kid"):
        verifier.verify(token)


def test_non_string_kid_is_refused(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = jwks_verifier(write_jwks(tmp_path, [public_jwk(rsa_key, kid="1")]))
    signing_input = f"{b64url({'alg': 'RS256', 'kid': 1})}.{b64url(valid_claims())}"
    token = f"{signing_input}.{b64url(RSAAlgorithm(RSAAlgorithm.SHA256).sign(signing_input.encode(), rsa_key))}"

    with pytest.raises(InvalidToken, match="kid is not a string"):
        verifier.verify(token)


@pytest.mark.parametrize("jwk_kid", [None, "only"])
def test_token_without_kid_uses_a_lone_jwks_key(
    tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey, jwk_kid: str | None
) -> None:
    verifier = jwks_verifier(write_jwks(tmp_path, [public_jwk(ec_key, kid=jwk_kid)]))
    token = jwt.encode(valid_claims(sub="lone"), ec_key, algorithm="ES256")

    assert "kid" not in jwt.get_unverified_header(token)
    assert verifier.verify(token)["sub"] == "lone"


def test_token_without_kid_is_refused_when_the_jwks_has_several_keys(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, second_rsa_key: rsa.RSAPrivateKey
) -> None:
    verifier = jwks_verifier(write_jwks(tmp_path, [public_jwk(rsa_key, kid="a"), public_jwk(second_rsa_key, kid="b")]))
    token = jwt.encode(valid_claims(), rsa_key, algorithm="RS256")

    with pytest.raises(InvalidToken, match="no kid"):
        verifier.verify(token)


def test_rs256_token_refused_when_only_a_secret_is_configured(rsa_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(valid_claims(), rsa_key, algorithm="RS256", headers={"kid": "a"})

    with pytest.raises(InvalidToken, match="no NOBILL_JWT_JWKS_FILE"):
        hs256_verifier().verify(token)


@pytest.mark.parametrize("marking", [
    {"use": "enc", "alg": "RSA-OAEP"}, {"use": "enc"}, {"key_ops": ["encrypt"]}, {"alg": "PS256"},
])
def test_keys_not_for_rs256_or_es256_signatures_are_ignored(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, second_rsa_key: rsa.RSAPrivateKey, marking: dict[str, Any]
) -> None:
    verifier = jwks_verifier(write_jwks(tmp_path, [
        public_jwk(second_rsa_key, kid="enc", **marking),
        public_jwk(rsa_key, kid="sig", use="sig", alg="RS256"),
    ]))

    token = jwt.encode(valid_claims(), rsa_key, algorithm="RS256")  # no kid: the one signing key is used
    assert verifier.verify(token)["sub"] == "user_1"
    enc_signed = jwt.encode(valid_claims(), second_rsa_key, algorithm="RS256", headers={"kid": "enc"})
    with pytest.raises(InvalidToken, match="unknown kid"):
        verifier.verify(enc_signed)


# --- tampering, size, garbage --------------------------------------------------------------------


def test_tampered_payload_is_refused() -> None:
    token = mint_token(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, subject="user_1")
    header, _, signature = token.split(".")
    tampered = f"{header}.{b64url(valid_claims(sub='admin'))}.{signature}"

    with pytest.raises(InvalidToken, match="bad signature"):
        hs256_verifier().verify(tampered)


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_tampered_asymmetric_signature_is_refused(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey, algorithm: str
) -> None:
    key = rsa_key if algorithm == "RS256" else ec_key
    verifier = jwks_verifier(write_jwks(tmp_path, [public_jwk(key, kid="k")]))
    token = jwt.encode(valid_claims(), key, algorithm=algorithm, headers={"kid": "k"})
    signing_input, signature = token.rsplit(".", 1)
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[len(raw) // 2] ^= 0x01

    assert verifier.verify(token)["sub"] == "user_1"
    with pytest.raises(InvalidToken, match="bad signature"):
        verifier.verify(f"{signing_input}.{b64url(bytes(raw))}")
    with pytest.raises(InvalidToken, match="bad signature"):
        verifier.verify(f"{signing_input}.{b64url(bytes(raw[:-1]))}")  # wrong length
    # A different token's valid signature does not transfer.
    other = jwt.encode(valid_claims(sub="other"), key, algorithm=algorithm, headers={"kid": "k"})
    with pytest.raises(InvalidToken, match="bad signature"):
        verifier.verify(f"{signing_input}.{other.rsplit('.', 1)[1]}")


def test_signature_with_non_canonical_base64_is_refused() -> None:
    token = mint_token(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, subject="user_1")
    signing_input, signature = token.rsplit(".", 1)
    # 32 bytes -> 43 chars; the last char carries 2 unused bits. Set them: same bytes, other spelling.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    respelled = signature[:-1] + alphabet[alphabet.index(signature[-1]) | 0b01]
    if respelled == signature:
        respelled = signature[:-1] + alphabet[alphabet.index(signature[-1]) | 0b10]
    assert base64.urlsafe_b64decode(respelled + "=") == base64.urlsafe_b64decode(signature + "=")

    with pytest.raises(InvalidToken, match="not canonical"):
        hs256_verifier().verify(f"{signing_input}.{respelled}")


def test_token_at_the_size_limit_is_accepted_and_one_byte_over_is_refused() -> None:
    token = mint_token(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, subject="user_1")

    assert hs256_verifier(max_token_bytes=len(token)).verify(token)["sub"] == "user_1"
    with pytest.raises(InvalidToken, match="too large"):
        hs256_verifier(max_token_bytes=len(token) - 1).verify(token)


def test_oversized_token_is_refused_before_parsing() -> None:
    # Validly signed but 9 kB: refused on size alone, not on its content.
    token = hand_signed_hs256({"alg": "HS256"}, valid_claims(padding="x" * 9000))

    with pytest.raises(InvalidToken, match="too large"):
        hs256_verifier().verify(token)
    with pytest.raises(InvalidToken, match="too large"):
        hs256_verifier().verify("." * 10_000_000)


def test_size_limit_counts_bytes_not_characters() -> None:
    token = "é" * 5000  # 5000 characters, 10000 bytes

    with pytest.raises(InvalidToken, match="too large|not ASCII"):
        hs256_verifier(max_token_bytes=8192).verify(token)


@pytest.mark.parametrize("token", [
    "", ".", "..", "...", "a", "a.b", "a.b.c", "a.b.c.d", "not a token", "Bearer a.b.c", " a.b.c",
    "eyJhbGciOiJIUzI1NiJ9", "eyJhbGciOiJIUzI1NiJ9.", "eyJhbGciOiJIUzI1NiJ9..", "eyJhbGciOiJIUzI1NiJ9.e30.",
    "é.é.é", "\x00.\x00.\x00", "a+b.c/d.e=f", "A.A.A", "AA.AA.AA", "====.====.====",
    b64url("[]") + ".e30.AAAA", b64url("null") + ".e30.AAAA", b64url("{") + ".e30.AAAA",
    b64url("\"HS256\"") + ".e30.AAAA", b64url(b"\xff\xfe\xfd") + ".e30.AAAA",
    b64url("[" * 2500 + "]" * 2500) + ".e30.AAAA", b64url({"alg": "HS256"}) + ".e30.A",
    b64url({"alg": "HS256"}) + ".e30.!!!!", b64url({"alg": "HS256"}) + ".%%%." + b64url(b"x" * 32),
])
def test_garbage_is_refused_with_invalid_token_only(token: str) -> None:
    with pytest.raises(InvalidToken):
        hs256_verifier().verify(token)


@pytest.mark.parametrize("not_a_string", [None, b"a.b.c", 12, ["a", "b", "c"]])
def test_non_string_token_is_refused(not_a_string: Any) -> None:
    with pytest.raises(InvalidToken, match="not a string"):
        hs256_verifier().verify(not_a_string)


@pytest.mark.parametrize("payload", [b"not json", b"[1, 2]", b"null", b'"sub"', b"\xff\xfe", b"[" * 2500 + b"]" * 2500,
                                     b'{"exp": 1e999999}'])
def test_validly_signed_payload_that_is_not_a_claims_object_is_refused(payload: bytes) -> None:
    token = hand_signed_hs256({"alg": "HS256"}, payload)

    with pytest.raises(InvalidToken, match="payload|exp"):
        hs256_verifier().verify(token)


def test_every_single_character_mutation_is_refused() -> None:
    token = mint_token(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, subject="user_1", service=True,
                       scopes=["usage:write"], orgs=["org_1"])
    verifier = hs256_verifier()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \x00"
    generator = random.Random(1234)
    mutations = 0
    for position in range(len(token)):
        for replacement in generator.sample(alphabet, 4):
            if replacement == token[position]:
                continue
            mutated = token[:position] + replacement + token[position + 1:]
            mutations += 1
            with pytest.raises(InvalidToken):
                verifier.verify(mutated)
    for length in range(len(token)):
        with pytest.raises(InvalidToken):
            verifier.verify(token[:length])
    assert mutations > 3 * len(token)


# --- claim shapes --------------------------------------------------------------------------------


@pytest.mark.parametrize(("claim", "value", "reason"), [
    ("nobill/orgs", "*", "nobill/orgs"),
    ("nobill/orgs", "org_1", "nobill/orgs"),
    ("nobill/orgs", ["org_1", 2], "nobill/orgs"),
    ("nobill/orgs", {"org_1": True}, "nobill/orgs"),
    ("nobill/orgs", None, "nobill/orgs"),
    ("scope", ["usage:write"], "scope"),
    ("scope", None, "scope"),
    ("nobill/principal", "admin", "nobill/principal"),
    ("nobill/principal", "SERVICE", "nobill/principal"),
    ("nobill/principal", None, "nobill/principal"),
    ("email", ["a@example.com"], "email"),
    ("jti", 123, "jti"),
])
def test_malformed_claim_shapes_are_refused(claim: str, value: Any, reason: str) -> None:
    token = hand_signed_hs256({"alg": "HS256"}, valid_claims(**{claim: value}))

    with pytest.raises(InvalidToken, match=reason):
        hs256_verifier().verify(token)


@pytest.mark.parametrize("extra", [
    {"nobill/principal": "user"},
    {"nobill/principal": "service", "scope": "", "nobill/orgs": []},
    {"nobill/principal": "service", "scope": "usage:write", "nobill/orgs": ["*"]},
])
def test_well_formed_claim_shapes_are_accepted(extra: dict[str, Any]) -> None:
    token = hand_signed_hs256({"alg": "HS256"}, valid_claims(**extra))

    claims = hs256_verifier().verify(token)

    assert {name: claims[name] for name in extra} == extra


# --- minting -------------------------------------------------------------------------------------


def test_service_token_carries_principal_scope_and_orgs() -> None:
    token = mint_token(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, subject="svc_ingest", service=True,
                       scopes=["usage:write", "webhooks:ingest"], orgs=["org_1", "org_2"], ttl_seconds=120,
                       now=time.time())

    claims = hs256_verifier().verify(token)

    assert claims["sub"] == "svc_ingest"
    assert claims["nobill/principal"] == "service"
    assert claims["scope"] == "usage:write webhooks:ingest"
    assert claims["nobill/orgs"] == ["org_1", "org_2"]
    assert claims["exp"] - claims["iat"] == 120
    assert "email" not in claims


def test_service_token_for_all_orgs() -> None:
    token = mint_token(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, subject="svc_ops", service=True,
                       scopes=["usage:write"], orgs=["*"])

    assert hs256_verifier().verify(token)["nobill/orgs"] == ["*"]


def test_minted_times_follow_now() -> None:
    token = mint_token(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, subject="u", now=1_700_000_000.9,
                       ttl_seconds=60)

    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience=AUDIENCE, options={"verify_exp": False})
    assert (claims["iat"], claims["nbf"], claims["exp"]) == (1_700_000_000, 1_700_000_000, 1_700_000_060)


def test_each_minted_token_has_its_own_jti() -> None:
    first, second = (
        hs256_verifier().verify(mint_token(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, subject="u"))
        for _ in range(2)
    )

    assert first["jti"] != second["jti"]


@pytest.mark.parametrize("arguments", [
    {"subject": ""},
    {"ttl_seconds": 0},
    {"scopes": ["usage:write"]},  # scopes on a user token
    {"orgs": ["org_1"]},  # orgs on a user token
    {"service": True, "email": "svc@example.com"},
    {"service": True, "scopes": ["usage:write webhooks:ingest"]},  # two scopes in one string
    {"service": True, "scopes": [""]},
    {"service": True, "orgs": [""]},
])
def test_mint_refuses_inconsistent_arguments(arguments: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        mint_token(**{"secret": SECRET, "issuer": ISSUER, "audience": AUDIENCE, "subject": "u", **arguments})


def test_mint_refuses_a_single_string_for_scopes() -> None:
    with pytest.raises(TypeError):
        mint_token(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, subject="u", service=True, scopes="usage:write")


def test_mint_refuses_a_short_secret() -> None:
    with pytest.raises(ConfigError) as refused:
        mint_token(secret="short", issuer=ISSUER, audience=AUDIENCE, subject="u")

    assert refused.value.setting == "NOBILL_JWT_SECRET"


# --- configuration errors ------------------------------------------------------------------------


def test_neither_secret_nor_jwks_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as refused:
        TokenVerifier(JwtSettings(secret=None, jwks_file=None, issuer=ISSUER, audience=AUDIENCE))

    assert refused.value.setting == "NOBILL_JWT_SECRET"
    assert refused.value.problem == "set NOBILL_JWT_SECRET, NOBILL_JWT_JWKS_FILE or NOBILL_JWT_JWKS_URL"


@pytest.mark.parametrize("secret", ["", "x" * 31, "é" * 15])  # "é" is 2 bytes: 30 bytes
def test_secret_shorter_than_32_bytes_is_a_config_error(secret: str) -> None:
    with pytest.raises(ConfigError) as refused:
        hs256_verifier(secret=secret)

    assert refused.value.setting == "NOBILL_JWT_SECRET"
    assert "32 bytes" in refused.value.problem


def test_secret_of_exactly_32_bytes_is_accepted() -> None:
    secret = "x" * 32
    token = mint_token(secret=secret, issuer=ISSUER, audience=AUDIENCE, subject="u")

    assert hs256_verifier(secret=secret).verify(token)["sub"] == "u"


def test_public_key_pem_as_secret_is_a_config_error(rsa_key: rsa.RSAPrivateKey) -> None:
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()

    with pytest.raises(ConfigError) as refused:
        hs256_verifier(secret=public_pem)

    assert refused.value.setting == "NOBILL_JWT_SECRET"


@pytest.mark.parametrize(("setting", "overrides"), [
    ("NOBILL_JWT_ISSUER", {"issuer": ""}),
    ("NOBILL_JWT_AUDIENCE", {"audience": ""}),
])
def test_empty_issuer_or_audience_is_a_config_error(setting: str, overrides: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as refused:
        hs256_verifier(**overrides)

    assert refused.value.setting == setting


def test_missing_jwks_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        jwks_verifier(str(tmp_path / "absent.json"))

    assert refused.value.setting == "NOBILL_JWT_JWKS_FILE"
    assert "cannot read" in refused.value.problem


@pytest.mark.parametrize(("content", "problem"), [
    ("", "not valid JSON"),
    ("{not json", "not valid JSON"),
    ("[]", '"keys" list'),
    ('{"keys": {}}', '"keys" list'),
    ('{"keys": []}', "no RS256"),
    ('{"keys": ["rsa"]}', "not a JSON object"),
    ('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', "symmetric"),
    ('{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}]}', "no RS256"),
    ('{"keys": [{"kty": "RSA", "kid": "a", "n": "!!", "e": "AQAB"}]}', "not a valid RSA public key"),
    ('{"keys": [{"kty": "RSA", "kid": "a", "e": "AQAB"}]}', "not a valid RSA public key"),
    ('{"keys": [{"kty": "RSA", "kid": 7, "n": "AQAB", "e": "AQAB"}]}', '"kid" must be'),
    ('{"keys": [{"kty": "EC", "crv": "P-256", "x": "AQAB", "y": "AQAB"}]}', "32 bytes"),
    ('{"keys": [{"kty": "EC", "crv": "P-256", "x": "' + b64url(b"\x01" * 32) + '", "y": "' + b64url(b"\x02" * 32)
     + '"}]}', "not a valid EC public key"),  # not a point on the curve
])
def test_malformed_jwks_file_is_a_config_error(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(content)

    with pytest.raises(ConfigError) as refused:
        jwks_verifier(str(path))

    assert refused.value.setting == "NOBILL_JWT_JWKS_FILE"
    assert problem in refused.value.problem


def test_jwks_with_private_key_material_is_a_config_error(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    for private_key in (rsa_key, ec_key):
        algorithm = RSAAlgorithm if isinstance(private_key, rsa.RSAPrivateKey) else ECAlgorithm
        private_jwk = algorithm.to_jwk(private_key, as_dict=True)
        with pytest.raises(ConfigError, match="private key material"):
            jwks_verifier(write_jwks(tmp_path, [private_jwk]))


def test_weak_rsa_key_in_jwks_is_a_config_error(tmp_path: Path) -> None:
    weak_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)

    with pytest.raises(ConfigError, match="1024 bits"):
        jwks_verifier(write_jwks(tmp_path, [public_jwk(weak_key, kid="weak")]))


def test_jwk_alg_inconsistent_with_its_key_type_is_a_config_error(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    with pytest.raises(ConfigError, match='RSA key cannot have "alg"'):
        jwks_verifier(write_jwks(tmp_path, [public_jwk(rsa_key, kid="a", alg="ES256")]))
    with pytest.raises(ConfigError, match='EC key cannot have "alg"'):
        jwks_verifier(write_jwks(tmp_path, [public_jwk(ec_key, kid="a", alg="RS256")]))


def test_jwks_key_identity_problems_are_config_errors(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, second_rsa_key: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(ConfigError, match="more than once"):
        jwks_verifier(write_jwks(tmp_path, [public_jwk(rsa_key, kid="a"), public_jwk(second_rsa_key, kid="a")]))
    with pytest.raises(ConfigError, match='every key needs a "kid"'):
        jwks_verifier(write_jwks(tmp_path, [public_jwk(rsa_key, kid="a"), public_jwk(second_rsa_key, kid=None)]))


def test_jwks_file_is_read_once(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    path = write_jwks(tmp_path, [public_jwk(rsa_key, kid="a")])
    verifier = jwks_verifier(path)
    Path(path).unlink()

    token = jwt.encode(valid_claims(), rsa_key, algorithm="RS256", headers={"kid": "a"})
    assert verifier.verify(token)["sub"] == "user_1"

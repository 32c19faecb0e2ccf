"""Token policy beyond the signature: a bounded, printable `sub` (users and services), a
bounded lifetime, the verified-token cache, and signing keys from a JWKS URL."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from nobill.auth.tokens import InvalidToken, JwtSettings, TokenVerifier

ISSUER = "https://auth.nobill.test"
AUDIENCE = "nobill-api"
SECRET = "test-secret-0123456789-abcdefghijklmnop"


def verifier(**overrides: Any) -> TokenVerifier:
    settings = {"secret": SECRET, "jwks_file": None, "issuer": ISSUER, "audience": AUDIENCE, **overrides}
    return TokenVerifier(JwtSettings(**settings))


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user_1", "iat": now, "nbf": now, "exp": now + 600, **overrides}
    return {name: value for name, value in values.items() if value is not None}


def hs256(**overrides: Any) -> str:
    return jwt.encode(claims(**overrides), SECRET, algorithm="HS256")


# --- sub ---------------------------------------------------------------------------------


HOSTILE_SUBJECTS = {
    "nul": "svc\x00ingest",
    "bidi-override": "admin\u202egnp.exe",
    "zero-width": "ali\u200bce",
    "newline": "user\nforged log line",
    "del": "user\x7f",
    "c1-control": "user\x85",
    "3kb": "a" * 3000,
}


@pytest.mark.parametrize("service", [False, True], ids=["user", "service"])
@pytest.mark.parametrize("subject", list(HOSTILE_SUBJECTS.values()), ids=list(HOSTILE_SUBJECTS))
def test_a_long_or_unprintable_sub_is_refused(subject: str, service: bool) -> None:
    extra = {"nobill/principal": "service", "scope": "org:read", "nobill/orgs": ["*"]} if service else {}

    with pytest.raises(InvalidToken, match="sub"):
        verifier().verify(hs256(sub=subject, **extra))


def test_a_sub_of_255_printable_characters_is_accepted() -> None:
    assert verifier().verify(hs256(sub="é" * 255))["sub"] == "é" * 255


# --- lifetime ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "times",
    [
        pytest.param({"exp": 10**400}, id="exp-10e400"),
        pytest.param({"exp": 10**12, "iat": None, "nbf": None}, id="exp-far-without-iat"),
        pytest.param({"iat": 1_000_000_000_000}, id="iat-in-year-33658"),
        pytest.param({"iat": int(time.time()) + 3600, "nbf": None}, id="iat-an-hour-ahead"),
        pytest.param({"exp": int(time.time()) + 25 * 3600}, id="25-hours"),
        pytest.param({"iat": int(time.time()) - 2 * 86400, "exp": int(time.time()) + 60}, id="issued-two-days-ago"),
    ],
)
def test_absurd_or_too_long_lifetimes_are_refused(times: dict[str, Any]) -> None:
    with pytest.raises(InvalidToken, match="lifetime|iat|exp"):
        verifier().verify(hs256(**times))


def test_a_token_living_exactly_the_maximum_is_accepted() -> None:
    now = int(time.time())

    assert verifier(max_lifetime_seconds=3600).verify(hs256(iat=now, exp=now + 3600))["sub"] == "user_1"
    with pytest.raises(InvalidToken, match="lifetime"):
        verifier(max_lifetime_seconds=3600, leeway_seconds=0).verify(hs256(iat=now, exp=now + 3601))


def test_without_iat_the_lifetime_counts_from_now() -> None:
    now = int(time.time())
    check = verifier(max_lifetime_seconds=3600, leeway_seconds=0)

    assert check.verify(hs256(iat=None, nbf=None, exp=now + 3500))["sub"] == "user_1"
    with pytest.raises(InvalidToken, match="lifetime"):
        check.verify(hs256(iat=None, nbf=None, exp=now + 4000))


# --- verified-token cache ------------------------------------------------------------------


def test_a_cached_token_is_never_accepted_past_its_exp() -> None:
    check = verifier(leeway_seconds=0)
    token = hs256(exp=int(time.time()) + 2)
    first = check.verify(token)
    assert check.verify(token) is first  # the second call is served from the cache

    time.sleep(max(0.0, first["exp"] - time.time()) + 0.05)

    with pytest.raises(InvalidToken, match="expired"):
        check.verify(token)


def test_a_refused_token_is_not_remembered() -> None:
    check = verifier()
    forged = jwt.encode(claims(), "another-secret-that-is-long-enough-0000", algorithm="HS256")
    for _ in range(2):
        with pytest.raises(InvalidToken, match="bad signature"):
            check.verify(forged)


def test_the_cache_is_bounded() -> None:
    from nobill.auth import tokens

    check = verifier()
    for number in range(tokens.VERIFIED_CACHE_SIZE + 50):
        check._remember(f"token-{number}", {"exp": time.time() + 600})

    assert len(check._verified) <= tokens.VERIFIED_CACHE_SIZE


# --- JWKS URL ------------------------------------------------------------------------------


class _JwksServer:
    """A JWKS endpoint whose key set the test can change (key rotation at the provider)."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.fetches += 1
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/.well-known/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks_server():
    server = _JwksServer()
    yield server
    server.close()


def _jwk(key: Any, kid: str, **extra: Any) -> dict[str, Any]:
    algorithm = RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else ECAlgorithm
    return {**algorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, **extra}


def url_verifier(url: str, **overrides: Any) -> TokenVerifier:
    return verifier(secret=None, jwks_url=url, jwks_refresh_cooldown_seconds=0, **overrides)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rotated_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def test_tokens_verify_with_keys_from_the_jwks_url_and_a_rotation_needs_no_restart(
    jwks_server: _JwksServer, rsa_key: rsa.RSAPrivateKey, rotated_key: ec.EllipticCurvePrivateKey
) -> None:
    jwks_server.keys = [_jwk(rsa_key, "2026-11")]
    check = url_verifier(jwks_server.url)
    old = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "2026-11"})
    assert check.verify(old)["sub"] == "user_1"

    # The provider rotates: the new key appears under a new kid.
    jwks_server.keys = [_jwk(rsa_key, "2026-11"), _jwk(rotated_key, "2026-12")]
    new = jwt.encode(claims(sub="user_2"), rotated_key, algorithm="ES256", headers={"kid": "2026-12"})

    assert check.verify(new)["sub"] == "user_2"
    with pytest.raises(InvalidToken, match="unknown kid"):
        check.verify(jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "never-published"}))


def test_unknown_kids_do_not_refetch_within_the_cooldown(jwks_server: _JwksServer, rsa_key: rsa.RSAPrivateKey) -> None:
    jwks_server.keys = [_jwk(rsa_key, "a")]
    check = verifier(secret=None, jwks_url=jwks_server.url, jwks_refresh_cooldown_seconds=60)
    check.verify(jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "a"}))
    fetches = jwks_server.fetches

    for number in range(20):
        with pytest.raises(InvalidToken):
            check.verify(jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": f"random-{number}"}))

    assert jwks_server.fetches == fetches


# The weak key is the point: signing with it (as an attacker would) warns, by design.
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_the_key_policy_applies_to_keys_from_the_url(jwks_server: _JwksServer, rsa_key: rsa.RSAPrivateKey) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    jwks_server.keys = [
        _jwk(weak, "weak"),
        {"kty": "oct", "kid": "shared", "k": "c2VjcmV0LXRoYXQtaXMtbG9uZy1lbm91Z2gtZm9yLWhzMjU2LTAwMDA"},
        _jwk(rsa_key, "good"),
    ]
    check = url_verifier(jwks_server.url)

    with pytest.raises(InvalidToken, match="bits"):
        check.verify(jwt.encode(claims(), weak, algorithm="RS256", headers={"kid": "weak"}))
    with pytest.raises(InvalidToken):
        check.verify(jwt.encode(claims(), b"secret-that-is-long-enough-for-hs256-0000", algorithm="HS256", headers={"kid": "shared"}))
    # Algorithm confusion: the RSA public key as an HMAC secret.
    public_pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    import hashlib
    import hmac
    import base64

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'kid': 'good'}).encode())}.{b64(json.dumps(claims()).encode())}"
    forged = f"{signing_input}.{b64(hmac.digest(public_pem, signing_input.encode(), hashlib.sha256))}"
    with pytest.raises(InvalidToken, match="no NOBILL_JWT_SECRET"):
        check.verify(forged)
    # An RS256 key cannot verify an ES256 header.
    with pytest.raises(InvalidToken):
        check.verify(jwt.encode(claims(), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": "good"}))
    assert check.verify(jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "good"}))["sub"] == "user_1"


def test_an_unreachable_jwks_url_refuses_tokens(rsa_key: rsa.RSAPrivateKey) -> None:
    check = url_verifier("http://127.0.0.1:1/jwks.json")

    with pytest.raises(InvalidToken, match="JWKS URL"):
        check.verify(jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "a"}))

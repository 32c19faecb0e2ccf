"""Helpers shared by tests: tokens and authenticated stubs."""

from __future__ import annotations

import uuid
from typing import Any

import grpc

from nobill.v1 import audit_pb2_grpc, billing_pb2_grpc, tenancy_pb2_grpc, usage_pb2_grpc

TEST_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
# NOBILL_AUDIT_KEY of the test server: an old key that still verifies, and the signing key.
TEST_AUDIT_KEY = "test-old:audit-key-that-is-long-enough-0123456789,test-1:another-audit-key-long-enough-9876543210"


def mint(
    subject: str | None = None,
    *,
    email: str | None = None,
    service: bool = False,
    scopes: tuple[str, ...] = (),
    orgs: tuple[str, ...] = (),
    secret: str = TEST_SECRET,
    **extra: Any,
) -> str:
    from nobill.auth.tokens import mint_token

    return mint_token(
        secret=secret,
        issuer="nobill",
        audience="nobill",
        subject=subject or f"user-{uuid.uuid4().hex[:12]}",
        email=email,
        service=service,
        scopes=scopes,
        orgs=orgs,
        **extra,
    )


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


class _Bound:
    """A stub whose methods send the caller's credentials."""

    def __init__(self, stub: Any, metadata: tuple[tuple[str, str], ...]) -> None:
        self._stub = stub
        self._metadata = metadata

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)

        def call(request: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", 15)
            return method(request, metadata=self._metadata + tuple(kwargs.pop("metadata", ())), **kwargs)

        return call


class Client:
    """Typed stubs for one caller."""

    def __init__(self, channel: grpc.Channel, token: str | None, *, subject: str = "", email: str | None = None) -> None:
        metadata = bearer(token) if token else ()
        self.token = token
        self.subject = subject
        self.email = email
        self.tenancy = _Bound(tenancy_pb2_grpc.TenancyServiceStub(channel), metadata)
        self.billing = _Bound(billing_pb2_grpc.BillingServiceStub(channel), metadata)
        self.usage = _Bound(usage_pb2_grpc.UsageServiceStub(channel), metadata)
        self.audit = _Bound(audit_pb2_grpc.AuditServiceStub(channel), metadata)


def new_user(channel: grpc.Channel, *, email: str | None = None) -> Client:
    subject = f"user-{uuid.uuid4().hex[:12]}"
    email = email or f"{subject}@example.com"
    return Client(channel, mint(subject, email=email), subject=subject, email=email)


def new_service(channel: grpc.Channel, *, scopes: tuple[str, ...], orgs: tuple[str, ...]) -> Client:
    name = f"svc-{uuid.uuid4().hex[:8]}"
    return Client(channel, mint(name, service=True, scopes=scopes, orgs=orgs), subject=name)


def code_of(call: Any) -> grpc.StatusCode:
    """The status code a call fails with (the call must fail)."""
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    raise AssertionError("the call succeeded; expected it to fail")


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at database `name` (TCP or unix-socket URLs)."""
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def build_wheel(project: Any, out: Any) -> Any:
    """Build the wheel of `project` (the repository root, client/ or sandbox/) from a clean
    copy of the repository's sources into `out`; returns its path."""
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    relative = Path(project).resolve().relative_to(root)
    ignore = shutil.ignore_patterns("__pycache__", "build", "*.egg-info", ".mypy_cache")
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "src"
        copy.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(root / name, copy / name)
        for name in ("nobill", "gen", "migrations", "client", "sandbox"):
            shutil.copytree(root / name, copy / name, ignore=ignore)
        Path(out).mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out),
             str(copy / relative)],
            check=True, capture_output=True, timeout=300,
        )
    (wheel,) = Path(out).glob("*.whl")
    return wheel

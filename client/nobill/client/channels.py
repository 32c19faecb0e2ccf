"""Channels that send a bearer token (and a request id) on every call.

    from nobill.client import insecure_channel
    from nobill.v1 import tenancy_pb2, tenancy_pb2_grpc

    with insecure_channel("127.0.0.1:50051", token=lambda: current_token()) as channel:
        tenancy = tenancy_pb2_grpc.TenancyServiceStub(channel)
        tenancy.ListOrganizations(tenancy_pb2.ListOrganizationsRequest())

`token` is a string, or a callable returning the current token (asked before every call,
so a rotated token is picked up without a new channel). Part of the nobill-client
distribution: it needs only grpcio and protobuf.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

__all__ = [
    "BearerToken",
    "TokenSource",
    "aio_insecure_channel",
    "aio_secure_channel",
    "bearer",
    "dev_settings",
    "insecure_channel",
    "secure_channel",
]

TokenSource = str | Callable[[], str]

# NOBill refuses messages over 8 MiB; a client that knows it fails fast on its own side.
DEFAULT_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_send_message_length", 8 * 1024 * 1024),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 60_000),
)


def bearer(token: TokenSource) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying `token` (for stubs used without these channels)."""
    value = token() if callable(token) else token
    return (("authorization", f"Bearer {value}"),)


def _with_auth(details: Any, token: TokenSource) -> Any:
    metadata = list(details.metadata or ())
    if not any(key == "x-request-id" for key, _ in metadata):
        # A request id of our own, so the caller can quote it when asking about a call.
        metadata.append(("x-request-id", uuid.uuid4().hex))
    metadata.extend(bearer(token))
    return details._replace(metadata=metadata) if hasattr(details, "_replace") else _Details(details, metadata)


class _Details(grpc.ClientCallDetails):
    """ClientCallDetails with other metadata (grpc's own type is not always a namedtuple)."""

    def __init__(self, original: Any, metadata: list[tuple[str, str]]) -> None:
        self.method = original.method
        self.timeout = original.timeout
        self.metadata = tuple(metadata)
        self.credentials = original.credentials
        self.wait_for_ready = getattr(original, "wait_for_ready", None)
        self.compression = getattr(original, "compression", None)


class BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` (and a request id) to every call; a callable
    `token` is asked before each call, so a rotated token needs no new channel."""

    def __init__(self, token: TokenSource) -> None:
        self._token = token

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The credentials to send now, for a call made without this interceptor."""
        return bearer(self._token)

    def intercept_unary_unary(self, continuation, details, request):  # noqa: ANN001, ANN201
        return continuation(_with_auth(details, self._token), request)

    def intercept_unary_stream(self, continuation, details, request):  # noqa: ANN001, ANN201
        return continuation(_with_auth(details, self._token), request)

    def intercept_stream_unary(self, continuation, details, requests):  # noqa: ANN001, ANN201
        return continuation(_with_auth(details, self._token), requests)

    def intercept_stream_stream(self, continuation, details, requests):  # noqa: ANN001, ANN201
        return continuation(_with_auth(details, self._token), requests)


def insecure_channel(target: str, *, token: TokenSource, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    """A plaintext channel (inside a trusted network or on localhost) sending `token`."""
    channel = grpc.insecure_channel(target, options=[*DEFAULT_OPTIONS, *options])
    return grpc.intercept_channel(channel, BearerToken(token))


def secure_channel(
    target: str,
    *,
    token: TokenSource,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A TLS channel (system roots unless `credentials` says otherwise) sending `token`."""
    channel = grpc.secure_channel(target, credentials or grpc.ssl_channel_credentials(), options=[*DEFAULT_OPTIONS, *options])
    return grpc.intercept_channel(channel, BearerToken(token))


class _AioBearerToken(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    def __init__(self, token: TokenSource) -> None:
        self._token = token

    async def intercept_unary_unary(self, continuation, details, request):  # noqa: ANN001, ANN201
        return await continuation(_with_auth(details, self._token), request)

    async def intercept_unary_stream(self, continuation, details, request):  # noqa: ANN001, ANN201
        return await continuation(_with_auth(details, self._token), request)

    async def intercept_stream_unary(self, continuation, details, requests):  # noqa: ANN001, ANN201
        return await continuation(_with_auth(details, self._token), requests)

    async def intercept_stream_stream(self, continuation, details, requests):  # noqa: ANN001, ANN201
        return await continuation(_with_auth(details, self._token), requests)


def aio_insecure_channel(target: str, *, token: TokenSource, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
    """The asyncio counterpart of `insecure_channel`."""
    return grpc.aio.insecure_channel(target, options=[*DEFAULT_OPTIONS, *options], interceptors=[_AioBearerToken(token)])


def aio_secure_channel(
    target: str,
    *,
    token: TokenSource,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """The asyncio counterpart of `secure_channel`."""
    return grpc.aio.secure_channel(
        target, credentials or grpc.ssl_channel_credentials(), options=[*DEFAULT_OPTIONS, *options],
        interceptors=[_AioBearerToken(token)],
    )


def dev_settings(path: str | Path = ".nobill/dev.json") -> dict[str, Any]:
    """What `nobill dev` wrote: `grpc_addr`, `token` (a user), `service_token` (all scopes)."""
    return json.loads(Path(path).read_text())

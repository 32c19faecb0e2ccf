"""Typed stubs that send the caller's token on every call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from nobill.v1 import audit_pb2_grpc, billing_pb2_grpc, tenancy_pb2_grpc, usage_pb2_grpc

Token = str | Callable[[], str]


class TokenInjector(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call; `token` may be a function that
    returns a fresh token (called per call, so rotation needs no new channel)."""

    def __init__(self, token: Token) -> None:
        self._token = token

    def metadata(self) -> tuple[tuple[str, str], ...]:
        token = self._token() if callable(self._token) else self._token
        return (("authorization", f"Bearer {token}"),)

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = tuple(details.metadata or ()) + self.metadata()
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            getattr(details, "wait_for_ready", None), getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation: Any, details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: grpc.ClientCallDetails, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: grpc.ClientCallDetails, requests: Any) -> Any:
        return continuation(self._details(details), requests)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, method: str, timeout: float | None, metadata: Any, credentials: Any,
                 wait_for_ready: bool | None, compression: Any) -> None:
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression


class NobillClient:
    """Stubs for every NOBill service. UsageService lives on the usage server's address
    (NOBILL_USAGE_GRPC_ADDR), the others on the main one.

        client = NobillClient("nobill:50051", token, usage_target="nobill:50052")
        client.tenancy.GetOrganization(tenancy_pb2.GetOrganizationRequest(org_id=org_id))
    """

    def __init__(
        self,
        target: str,
        token: Token,
        *,
        usage_target: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.injector = TokenInjector(token)
        self._channels = [self._open(target, credentials)]
        main = grpc.intercept_channel(self._channels[0], self.injector)
        if usage_target and usage_target != target:
            self._channels.append(self._open(usage_target, credentials))
            usage = grpc.intercept_channel(self._channels[1], self.injector)
        else:
            usage = main
        self.usage_channel = self._channels[-1] if usage is not main else self._channels[0]
        self.tenancy = tenancy_pb2_grpc.TenancyServiceStub(main)
        self.billing = billing_pb2_grpc.BillingServiceStub(main)
        self.audit = audit_pb2_grpc.AuditServiceStub(main)
        self.usage = usage_pb2_grpc.UsageServiceStub(usage)

    @staticmethod
    def _open(target: str, credentials: grpc.ChannelCredentials | None) -> grpc.Channel:
        options = [("grpc.max_send_message_length", 8 * 1024 * 1024), ("grpc.max_receive_message_length", 8 * 1024 * 1024)]
        if credentials is None:
            return grpc.insecure_channel(target, options=options)
        return grpc.secure_channel(target, credentials, options=options)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> NobillClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

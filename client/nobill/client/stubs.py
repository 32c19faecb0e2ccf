"""Typed stubs that send the caller's token on every call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from nobill.client.channels import BearerToken, TokenSource
from nobill.v1 import audit_pb2_grpc, billing_pb2_grpc, tenancy_pb2_grpc, usage_pb2_grpc

# Kept for callers that named it; the one token source type is channels.TokenSource.
Token = TokenSource


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
        self.injector = BearerToken(token)
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

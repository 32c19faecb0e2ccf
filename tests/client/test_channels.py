"""nobill.client: channels that send a bearer token (asked for before every call) and a
request id, sync and asyncio, against the real server."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from nobill.client import aio_insecure_channel, bearer, insecure_channel
from nobill.v1 import tenancy_pb2, tenancy_pb2_grpc
from support import mint


def test_a_channel_sends_the_token_on_every_call(server) -> None:
    token = mint(email="client@example.com")
    with insecure_channel(f"127.0.0.1:{server.port}", token=token) as channel:
        tenancy = tenancy_pb2_grpc.TenancyServiceStub(channel)
        org = tenancy.CreateOrganization(tenancy_pb2.CreateOrganizationRequest(name="Client Co"), timeout=15).organization
        listed = tenancy.ListOrganizations(tenancy_pb2.ListOrganizationsRequest(), timeout=15)
    assert [o.id for o in listed.organizations] == [org.id]


def test_a_token_source_is_asked_before_each_call(server) -> None:
    tokens = [mint(), "not-a-token"]
    asked = []

    def current() -> str:
        asked.append(1)
        return tokens[len(asked) - 1]

    with insecure_channel(f"127.0.0.1:{server.port}", token=current) as channel:
        tenancy = tenancy_pb2_grpc.TenancyServiceStub(channel)
        tenancy.ListOrganizations(tenancy_pb2.ListOrganizationsRequest(), timeout=15)
        with pytest.raises(grpc.RpcError) as refused:
            tenancy.ListOrganizations(tenancy_pb2.ListOrganizationsRequest(), timeout=15)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED and len(asked) == 2


def test_each_call_gets_a_request_id_unless_the_caller_sets_one(server) -> None:
    with insecure_channel(f"127.0.0.1:{server.port}", token=mint()) as channel:
        tenancy = tenancy_pb2_grpc.TenancyServiceStub(channel)
        _, call = tenancy.ListOrganizations.with_call(tenancy_pb2.ListOrganizationsRequest(), timeout=15)
        generated = dict(call.trailing_metadata())["x-request-id"]
        _, call = tenancy.ListOrganizations.with_call(
            tenancy_pb2.ListOrganizationsRequest(), metadata=(("x-request-id", "mine-1"),), timeout=15
        )
    assert len(generated) == 32 and dict(call.trailing_metadata())["x-request-id"] == "mine-1"


def test_an_asyncio_channel_sends_the_token(server) -> None:
    async def scenario() -> int:
        async with aio_insecure_channel(f"127.0.0.1:{server.port}", token=mint()) as channel:
            tenancy = tenancy_pb2_grpc.TenancyServiceStub(channel)
            await tenancy.CreateOrganization(tenancy_pb2.CreateOrganizationRequest(name="Aio Co"), timeout=15)
            listed = await tenancy.ListOrganizations(tenancy_pb2.ListOrganizationsRequest(), timeout=15)
            return len(listed.organizations)

    assert asyncio.run(scenario()) == 1


def test_bearer_is_call_metadata() -> None:
    assert bearer("abc") == (("authorization", "Bearer abc"),)
    assert bearer(lambda: "xyz") == (("authorization", "Bearer xyz"),)

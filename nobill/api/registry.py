"""The one list of NOBill's gRPC services and the servicers that implement them.

The server registers exactly these, the access rules are read from exactly these, and
tests/test_contract.py fails if a service in protos/nobill/v1 is missing here. A new
service is one line below (its descriptor, its generated `add_..._to_server`, its servicer)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import ServiceDescriptor

from nobill.api.audit_servicer import AuditServicer
from nobill.api.billing_servicer import BillingServicer
from nobill.api.tenancy_servicer import TenancyServicer
from nobill.api.usage_servicer import UsageServicer
from nobill.config import Settings
from nobill.stripe.gateway import StripeGateway
from nobill.v1 import audit_pb2, audit_pb2_grpc, billing_pb2, billing_pb2_grpc, tenancy_pb2, tenancy_pb2_grpc
from nobill.v1 import usage_pb2, usage_pb2_grpc


@dataclass(frozen=True)
class Service:
    descriptor: ServiceDescriptor
    # The generated `add_<Service>Servicer_to_server`; works for grpc.Server and grpc.aio.Server.
    add_to_server: Callable[[Any, Any], None]
    servicer: type
    # Which server answers it: "main" (the threaded server) or "usage" (the grpc.aio usage
    # server on its own port, so long-lived streams never hold the main server's threads).
    server: str = "main"
    # Builds the servicer from the process's settings; most need none.
    build: Callable[[type, Settings], Any] = lambda servicer, settings: servicer()

    @property
    def full_name(self) -> str:
        return self.descriptor.full_name


SERVICES: tuple[Service, ...] = (
    Service(
        tenancy_pb2.DESCRIPTOR.services_by_name["TenancyService"],
        tenancy_pb2_grpc.add_TenancyServiceServicer_to_server,
        TenancyServicer,
    ),
    Service(
        billing_pb2.DESCRIPTOR.services_by_name["BillingService"],
        billing_pb2_grpc.add_BillingServiceServicer_to_server,
        BillingServicer,
        build=lambda servicer, settings: servicer(settings, StripeGateway.from_settings(settings)),
    ),
    Service(
        usage_pb2.DESCRIPTOR.services_by_name["UsageService"],
        usage_pb2_grpc.add_UsageServiceServicer_to_server,
        UsageServicer,
        server="usage",
    ),
    Service(
        audit_pb2.DESCRIPTOR.services_by_name["AuditService"],
        audit_pb2_grpc.add_AuditServiceServicer_to_server,
        AuditServicer,
    ),
)


def register_all(server: Any, settings: Settings, *, on: str = "main") -> list[str]:
    """Add the servicer of every service that runs `on` that server; their full names."""
    names = []
    for service in SERVICES:
        if service.server == on:
            service.add_to_server(service.build(service.servicer, settings), server)
            names.append(service.full_name)
    return names

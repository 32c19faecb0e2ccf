"""Access rules read from the contract: each RPC's `(nobill.v1.access)` method option."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.descriptor import ServiceDescriptor

from nobill.auth.permissions import ORG_PERMISSIONS, SERVICE_SCOPES
from nobill.errors import ConfigError
from nobill.v1 import access_pb2

# Infrastructure services that answer without credentials (load balancers, grpcurl).
OPEN_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection")


@dataclass(frozen=True)
class AccessRule:
    kind: str  # "org_permission" | "any_user" | "any_principal" | "service_scope"
    permission: str = ""


def nobill_services() -> list[ServiceDescriptor]:
    """The services the server registers (nobill/api/registry.py)."""
    from nobill.api.registry import SERVICES

    return [service.descriptor for service in SERVICES]


def load_rules(services: list[ServiceDescriptor] | None = None) -> dict[str, AccessRule]:
    """Map of '/package.Service/Method' to its rule. Raises ConfigError if any RPC declares
    none or names an unknown permission: the server must not start with a hole in it."""
    rules: dict[str, AccessRule] = {}
    problems: list[str] = []
    for service in nobill_services() if services is None else services:
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            options = method.GetOptions()
            if not options.HasExtension(access_pb2.access):
                problems.append(f"{path} declares no (nobill.v1.access) rule")
                continue
            declared = options.Extensions[access_pb2.access]
            kind = declared.WhichOneof("rule")
            if kind is None:
                problems.append(f"{path} has an empty (nobill.v1.access) rule")
                continue
            value = getattr(declared, kind)
            if kind == "org_permission" and value not in ORG_PERMISSIONS:
                problems.append(f"{path} needs unknown permission {value!r}")
            elif kind == "service_scope" and value not in SERVICE_SCOPES:
                problems.append(f"{path} needs unknown service scope {value!r}")
            elif kind in ("any_user", "any_principal") and value is not True:
                problems.append(f"{path} sets {kind} to false")
            rules[path] = AccessRule(kind, value if isinstance(value, str) else "")
    if problems:
        raise ConfigError("protos/nobill/v1", "; ".join(problems))
    return rules

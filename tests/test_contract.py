"""The proto contract: lint-clean, generated code fresh, every RPC guarded."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from nobill.api.access import load_rules, nobill_services
from nobill.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def _buf() -> str:
    buf = shutil.which("buf", path=str(Path(sys.executable).parent)) or shutil.which("buf")
    assert buf, "buf is not installed (pip install buf-bin, part of the dev extra)"
    return buf


def test_buf_lint_passes() -> None:
    result = subprocess.run([_buf(), "lint"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_contract_does_not_break_the_released_one() -> None:
    # A checked-in image (contract/README.md): works on a fresh clone, offline, in CI.
    result = subprocess.run(
        [_buf(), "breaking", "--against", "contract/released.binpb"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, "breaking change against contract/released.binpb:\n" + result.stdout + result.stderr


def test_buf_breaking_catches_a_removed_field(tmp_path: Path) -> None:
    """The check can fail: a copy of the contract without one field breaks it."""
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "protos", copy / "protos")
    shutil.copy(ROOT / "buf.yaml", copy / "buf.yaml")
    tenancy = copy / "protos" / "nobill" / "v1" / "tenancy.proto"
    text = tenancy.read_text()
    assert "string org_id = 1;" in text
    tenancy.write_text(text.replace("string org_id = 1;", "reserved 1;", 1))
    result = subprocess.run(
        [_buf(), "breaking", "--against", str(ROOT / "contract" / "released.binpb")],
        cwd=copy, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0 and "org_id" in result.stdout + result.stderr


def test_generated_code_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/gen_protos.py", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_the_api_reference_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/gen_api_docs.py", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_the_api_reference_names_every_rpc_and_who_may_call_it() -> None:
    text = (ROOT / "docs" / "API.md").read_text()
    for service, methods in EXPECTED.items():
        for method in methods:
            assert f"#### {service.rsplit('.', 1)[1]}.{method}" in text
    assert "services with scope `webhooks:ingest` (not users)" in text
    assert "any signed-in user (not services)" in text


def test_generated_modules_are_importable_as_nobill_v1_with_typed_stubs() -> None:
    from nobill.v1 import audit_pb2_grpc, billing_pb2_grpc, tenancy_pb2_grpc, usage_pb2_grpc  # noqa: F401

    generated = Path(tenancy_pb2_grpc.__file__).parent
    for name in ("tenancy", "billing", "usage", "audit", "common", "access"):
        assert (generated / f"{name}_pb2.pyi").exists()
    assert (generated / "tenancy_pb2_grpc.pyi").exists()


EXPECTED = {
    "nobill.v1.TenancyService": {
        "CreateOrganization", "GetOrganization", "ListOrganizations", "AddMember", "UpdateMemberRole",
        "RemoveMember", "ListMembers", "GetMyPermissions",
    },
    "nobill.v1.BillingService": {
        "ListPlans", "GetSubscription", "CreateCheckoutSession", "ChangePlan", "CancelSubscription",
        "ListInvoices", "GetEntitlements", "IngestStripeEvent", "IngestStripeEvents",
    },
    "nobill.v1.UsageService": {"RecordUsage", "StreamUsage", "GetUsageSummary"},
    "nobill.v1.AuditService": {"ListAuditEvents", "VerifyAuditChain"},
}


def test_the_public_names_clients_depend_on_exist() -> None:
    found = {service.full_name: {m.name for m in service.methods} for service in nobill_services()}
    assert found == EXPECTED


def test_every_service_in_the_contract_is_in_the_registry() -> None:
    import importlib
    import pkgutil

    import nobill.v1
    from nobill.api.registry import SERVICES

    in_protos = set()
    for module in pkgutil.iter_modules(nobill.v1.__path__):
        if module.name.endswith("_pb2"):
            descriptor = importlib.import_module(f"nobill.v1.{module.name}").DESCRIPTOR
            in_protos |= {service.full_name for service in descriptor.services_by_name.values()}
    assert {service.full_name for service in SERVICES} == in_protos
    for service in SERVICES:  # each servicer implements its own service's base class
        base = getattr(importlib.import_module(service.add_to_server.__module__), f"{service.descriptor.name}Servicer")
        assert issubclass(service.servicer, base), service.full_name


def test_every_rpc_declares_an_access_rule() -> None:
    rules = load_rules()
    assert len(rules) == sum(len(methods) for methods in EXPECTED.values())
    assert rules["/nobill.v1.TenancyService/CreateOrganization"].kind == "any_user"
    assert rules["/nobill.v1.TenancyService/ListOrganizations"].kind == "any_user"
    assert rules["/nobill.v1.BillingService/IngestStripeEvent"].kind == "service_scope"
    assert rules["/nobill.v1.BillingService/IngestStripeEvent"].permission == "webhooks:ingest"
    assert rules["/nobill.v1.BillingService/IngestStripeEvents"].kind == "service_scope"
    assert rules["/nobill.v1.BillingService/IngestStripeEvents"].permission == "webhooks:ingest"


def test_requests_acting_on_a_tenant_carry_org_id() -> None:
    orgless = {"CreateOrganization", "ListOrganizations", "ListPlans", "IngestStripeEvent", "IngestStripeEvents"}
    for service in nobill_services():
        for method in service.methods:
            if method.name not in orgless:
                assert "org_id" in method.input_type.fields_by_name, method.full_name


def _service_without_rule() -> list:
    """A throwaway service whose one RPC declares no access rule."""
    file = descriptor_pb2.FileDescriptorProto(name="unguarded.proto", package="unguarded", syntax="proto3")
    file.message_type.add(name="Empty")
    service = file.service.add(name="UnguardedService")
    service.method.add(name="Leak", input_type=".unguarded.Empty", output_type=".unguarded.Empty")
    pool = descriptor_pool.DescriptorPool()
    return list(pool.Add(file) and pool.FindFileByName("unguarded.proto").services_by_name.values())


def test_the_server_refuses_to_start_when_an_rpc_declares_no_rule() -> None:
    with pytest.raises(ConfigError, match="UnguardedService/Leak declares no"):
        load_rules(_service_without_rule())


def test_build_server_checks_rules_before_listening(settings, database, monkeypatch) -> None:
    from nobill.api import server as server_module

    monkeypatch.setattr(server_module, "load_rules", lambda: load_rules(_service_without_rule()))
    with pytest.raises(ConfigError):
        server_module.build_server(settings, database)

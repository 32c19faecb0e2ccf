"""Dependencies run one way (docs/ARCHITECTURE.md): no domain reads another domain's tables.
A domain asks another through its narrow entry instead (billing counts members with
nobill.tenancy.members). Read from the source, so a new import fails here at once."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "nobill"
DOMAINS = ("audit", "auth", "billing", "tenancy", "usage")

# Still to undo (issue "House"): tenancy reads billing's subscriptions table for an org's
# plan and status and locks its row to serialise membership changes. Listed so the test
# says so, and fails once it is gone so the entry goes too.
NOT_YET = {("tenancy", "billing")}


def _table_imports(domain: str) -> set[tuple[str, str]]:
    found = set()
    for path in (PACKAGE / domain).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                parts = name.split(".")
                if len(parts) >= 3 and parts[0] == "nobill" and parts[2] == "tables" and parts[1] != domain:
                    found.add((domain, parts[1]))
    return found


def test_no_domain_imports_another_domains_tables() -> None:
    found = set().union(*(_table_imports(domain) for domain in DOMAINS))
    assert found - NOT_YET == set(), f"domains reading another domain's tables (domain, owner): {sorted(found - NOT_YET)}"
    assert NOT_YET <= found, f"no longer found, remove from NOT_YET: {sorted(NOT_YET - found)}"


def test_the_scan_sees_an_import_of_another_domains_tables(tmp_path, monkeypatch) -> None:
    fake = tmp_path / "nobill"
    (fake / "usage").mkdir(parents=True)
    (fake / "usage" / "x.py").write_text("from nobill.billing.tables import subscriptions\nimport nobill.audit.tables\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    assert _table_imports("usage") == {("usage", "billing"), ("usage", "audit")}


def test_the_webhook_intake_does_not_import_the_applier() -> None:
    """The sidecar's path (intake) stores and routes; applying is the worker's. Both read the
    event table (nobill.billing.inbox_events)."""
    import subprocess
    import sys

    probe = "import sys, nobill.billing.inbox; print('nobill.billing.inbox_apply' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_outbox_kinds_are_one_explicit_table() -> None:
    """Every kind a row can have is in nobill/billing/outbox_kinds.py; nothing registers itself on import."""
    from nobill.billing import outbox_kinds

    assert set(outbox_kinds.HANDLERS) | set(outbox_kinds.STAGED) == {
        "create_customer", "set_enterprise_price", "correct_items", "sync_seats",
    }
    assert not set(outbox_kinds.HANDLERS) & set(outbox_kinds.STAGED)
    for path in (PACKAGE / "billing").glob("*.py"):
        source = path.read_text()
        assert "outbox.handler(" not in source and "staged_handler(" not in source, path.name

"""Only nobill/stripe/ imports the stripe library (the sandbox never does)."""

from __future__ import annotations

import ast
from pathlib import Path

NOBILL = Path(__file__).resolve().parents[2] / "nobill"
SANDBOX = Path(__file__).resolve().parents[2] / "sandbox" / "nobill" / "sandbox"


def _imports_stripe(path: Path) -> bool:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(alias.name.split(".")[0] == "stripe" for alias in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "stripe":
            return True
    return False


def test_only_the_stripe_package_imports_stripe() -> None:
    offenders = [
        str(path.relative_to(NOBILL.parent))
        for path in NOBILL.rglob("*.py")
        if "stripe" not in path.relative_to(NOBILL).parts[:1] and _imports_stripe(path)
    ]
    offenders += [str(path) for path in SANDBOX.rglob("*.py") if _imports_stripe(path)]
    assert offenders == []
    assert len(list(SANDBOX.rglob("*.py"))) > 20, "the sandbox's sources moved: point this test at them"
    assert _imports_stripe(NOBILL / "stripe" / "errors.py"), "the check itself must see an import"

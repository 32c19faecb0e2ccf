"""nobill/cli is a package with one module per command group; the rest of the product
never imports it (the CLI sits on top: `nobill dev` is started by it, not the other way)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "nobill"
NOT_COMMAND_GROUPS = {"__init__", "__main__", "arguments"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return names


def test_nothing_outside_the_cli_imports_it() -> None:
    offenders = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "cli" not in path.relative_to(PACKAGE).parts[:1]
        and any(name == "nobill.cli" or name.startswith("nobill.cli.") for name in _imports(path))
    )
    assert offenders == []
    assert "nobill.cli" in _imports(PACKAGE / "cli" / "__main__.py"), "the scan itself must see an import"


def test_every_module_of_the_cli_package_is_a_registered_command_group() -> None:
    from nobill import cli

    modules = {path.stem for path in (PACKAGE / "cli").glob("*.py")} - NOT_COMMAND_GROUPS
    assert {group.__name__.rsplit(".", 1)[1] for group in cli.COMMAND_GROUPS} == modules
    assert all(callable(group.register) for group in cli.COMMAND_GROUPS)

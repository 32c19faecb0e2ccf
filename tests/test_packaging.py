"""pyproject lists packages by hand (nobill.v1 lives in gen/); keep the list complete."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(path.parent.relative_to(ROOT).parts) for path in (ROOT / "nobill").rglob("__init__.py")
    } | {"nobill.v1"}
    assert on_disk == listed

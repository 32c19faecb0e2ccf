"""The package as shipped type-checks against its generated stubs (nobill/v1/*.pyi), so
clients' typed stubs stay honest. mypy runs on the built wheel's layout, where nobill.v1
sits inside nobill/ (in the source tree it lives in gen/ and mypy would see only Any).
nobill.v1 ships in the nobill-client wheel, so both wheels are unpacked together."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _unpacked_wheel(tmp_path: Path) -> Path:
    """The server wheel and the nobill-client wheel (nobill.v1) unpacked side by side, as
    pip installs them."""
    from support import build_wheel

    unpacked = tmp_path / "unpacked"
    for project in (ROOT, ROOT / "client"):
        zipfile.ZipFile(build_wheel(project, tmp_path / project.name)).extractall(unpacked)
    return unpacked


def _mypy(cwd: Path, *targets: str) -> subprocess.CompletedProcess:
    # NOTE: two checks are off. [override]: servicers take the interceptor's CallContext
    # (the caller resolved and passed explicitly) where the stubs say ServicerContext.
    # [abstract]: the stubs mark every RPC abstract; at run time an RPC a servicer does
    # not define answers UNIMPLEMENTED, which is how not-yet-built RPCs behave.
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(cwd / ".mypy_cache"), "--disable-error-code", "override",
         "--disable-error-code", "abstract", *targets],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )


def test_mypy_finds_no_errors_in_the_source_tree() -> None:
    result = _mypy(ROOT, "nobill")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_no_errors_in_the_shipped_package(tmp_path: Path) -> None:
    unpacked = _unpacked_wheel(tmp_path)
    (unpacked / "probe.py").write_text(
        "from nobill.v1 import tenancy_pb2\nreveal_type(tenancy_pb2.Organization().id)\n"
    )
    result = _mypy(unpacked, "nobill", "probe.py")
    assert result.returncode == 0, result.stdout + result.stderr
    # The generated stubs are really in use: a message field has its declared type.
    assert re.search(r'Revealed type is "(builtins\.)?str"', result.stdout), result.stdout

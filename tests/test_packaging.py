"""pyproject lists packages by hand (nobill.v1 lives in gen/); keep the list complete."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(path.parent.relative_to(ROOT).parts) for path in (ROOT / "nobill").rglob("__init__.py")
    } | {"nobill.v1", "nobill.migrations", "nobill.migrations.versions"}
    assert on_disk == listed


def test_the_built_wheel_lets_clients_import_nobill_v1(tmp_path) -> None:
    import subprocess
    import sys
    import zipfile

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = tmp_path.glob("nobill-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"nobill/v1/tenancy_pb2.py", "nobill/v1/tenancy_pb2.pyi", "nobill/v1/tenancy_pb2_grpc.py", "nobill/v1/py.typed"} <= names
    # Every revision ships, so an installed wheel migrates without the source tree.
    revisions = {f"nobill/migrations/versions/{p.name}" for p in (ROOT / "migrations" / "versions").glob("*.py")}
    assert revisions | {"nobill/migrations/env.py", "nobill/migrations/rls.py", "nobill/migrations/script.py.mako"} <= names
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(wheel).extractall(unpacked)
    # Only the wheel's own files on the path (the dependencies come from site-packages).
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from nobill.v1 import tenancy_pb2, tenancy_pb2_grpc; import nobill; "
        "assert nobill.__file__.startswith(sys.argv[1]), nobill.__file__; "
        "assert tenancy_pb2.__file__.startswith(sys.argv[1]), tenancy_pb2.__file__; "
        "print(tenancy_pb2_grpc.TenancyServiceStub.__name__)"
    )
    result = subprocess.run([sys.executable, "-c", probe, str(unpacked)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "TenancyServiceStub"

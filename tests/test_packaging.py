"""Three distributions share the `nobill` namespace: the server (pyproject.toml),
nobill-client (client/pyproject.toml: nobill.v1 and nobill.client, needing only grpcio and
protobuf) and nobill-sandbox (sandbox/pyproject.toml: the Stripe sandbox, development and
tests only). Each lists its packages by hand; keep the lists complete and disjoint, and
check what each built wheel holds."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVER_ONLY = ("sqlalchemy", "psycopg", "psycopg-binary", "dramatiq", "stripe", "alembic", "redis")


def _packages(pyproject: Path) -> set[str]:
    return set(tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["packages"])


DISTRIBUTIONS = {"server": ROOT, "client": ROOT / "client", "sandbox": ROOT / "sandbox"}


def test_every_package_is_in_exactly_one_distribution() -> None:
    listed = {name: _packages(project / "pyproject.toml") for name, project in DISTRIBUTIONS.items()}
    on_disk = {".".join(path.parent.relative_to(project).parts)
               for project in DISTRIBUTIONS.values() for path in (project / "nobill").rglob("__init__.py")}
    on_disk |= {"nobill", "nobill.v1", "nobill.migrations", "nobill.migrations.versions"}
    assert set().union(*listed.values()) == on_disk
    assert sum(len(packages) for packages in listed.values()) == len(on_disk), listed
    # A namespace package: an __init__.py in any distribution would hide the others' parts.
    assert not any((project / "nobill" / "__init__.py").exists() for project in DISTRIBUTIONS.values())


def test_the_product_folder_holds_only_the_product() -> None:
    """The sandbox and the client live in their own distribution folders, not in nobill/."""
    assert not (ROOT / "nobill" / "sandbox").exists() and not (ROOT / "nobill" / "client").exists()
    assert _packages(ROOT / "sandbox" / "pyproject.toml") == {"nobill.sandbox"}
    assert (ROOT / "sandbox" / "nobill" / "sandbox" / "__init__.py").exists()
    assert (ROOT / "client" / "nobill" / "client" / "__init__.py").exists()


def _wheel(project: Path, out: Path) -> Path:
    """Build `project`'s wheel from a clean copy of the sources (no stale build/ directory,
    no race with another test building the same project)."""
    from support import build_wheel

    return build_wheel(project, out)


def test_the_server_wheel_ships_migrations_but_not_the_client(tmp_path: Path) -> None:
    wheel = _wheel(ROOT, tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "nobill/cli/__init__.py" in names and "nobill/__init__.py" not in names
    assert not any(name.startswith(("nobill/v1/", "nobill/client/", "nobill/sandbox/")) for name in names)
    # Every revision ships, so an installed wheel migrates without the source tree.
    revisions = {f"nobill/migrations/versions/{p.name}" for p in (ROOT / "migrations" / "versions").glob("*.py")}
    assert revisions | {"nobill/migrations/env.py", "nobill/migrations/rls.py", "nobill/migrations/script.py.mako"} <= names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/METADATA"))).decode()
    assert "Requires-Dist: nobill-client==0.1.0" in metadata


def test_the_client_wheel_holds_the_stubs_and_helpers_and_needs_only_grpcio_and_protobuf(tmp_path: Path) -> None:
    wheel = _wheel(ROOT / "client", tmp_path)
    zipped = zipfile.ZipFile(wheel)
    names = set(zipped.namelist())
    assert {"nobill/v1/tenancy_pb2.py", "nobill/v1/tenancy_pb2.pyi", "nobill/v1/tenancy_pb2_grpc.py",
            "nobill/v1/py.typed", "nobill/client/__init__.py"} <= names
    assert "nobill/__init__.py" not in names
    metadata = zipped.read(next(n for n in names if n.endswith("/METADATA"))).decode()
    requires = sorted(line.split(":", 1)[1].strip().split(">")[0].split("=")[0].split("<")[0]
                      for line in metadata.splitlines() if line.startswith("Requires-Dist:"))
    assert requires == ["grpcio", "protobuf"]


@pytest.mark.e2e
def test_installing_the_client_alone_pulls_no_server_dependencies(tmp_path: Path) -> None:
    """A fresh virtualenv, the client wheel installed with its dependencies from the index."""
    wheel = _wheel(ROOT / "client", tmp_path / "dist")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "-c", str(ROOT / "constraints.txt"), str(wheel)],
        capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, install.stderr
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, timeout=60)
    installed = {line.split("==")[0].lower().replace("_", "-") for line in listed.stdout.splitlines()}
    assert {"nobill-client", "grpcio", "protobuf"} <= installed
    assert not installed & set(SERVER_ONLY), installed
    probe = (
        "import sys\n"
        "from nobill.v1 import tenancy_pb2, tenancy_pb2_grpc\n"
        "from nobill.client import insecure_channel\n"
        "channel = insecure_channel('127.0.0.1:1', token='t')\n"
        "assert tenancy_pb2_grpc.TenancyServiceStub(channel)\n"
        "assert not {'sqlalchemy', 'psycopg', 'dramatiq', 'stripe'} & set(sys.modules)\n"
        "print(tenancy_pb2.__file__)\n"
    )
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(str(venv))


@pytest.mark.e2e
def test_the_installed_wheels_migrate_and_serve_without_the_source_tree(tmp_path: Path, postgres_admin_url: str) -> None:
    """What the image does: both wheels installed (not editable) in a fresh virtualenv, run
    from a directory with no checkout in sight."""
    import os
    import signal
    import uuid

    import psycopg

    from support import TEST_AUDIT_KEY, TEST_SECRET, with_database

    dist = tmp_path / "dist"
    _wheel(ROOT / "client", dist / "client")
    _wheel(ROOT, dist / "server")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-c", str(ROOT / "constraints.txt"),
         *map(str, dist.glob("*/*.whl"))],
        capture_output=True, text=True, timeout=900,
    )
    assert install.returncode == 0, install.stderr
    name = f"nobill_wheel_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOBILL_", "PYTHONPATH"))}
    env |= {"NOBILL_DATABASE_URL": with_database(postgres_admin_url, name), "NOBILL_JWT_SECRET": TEST_SECRET, "NOBILL_AUDIT_KEY": TEST_AUDIT_KEY,
            "NOBILL_GRPC_ADDR": "127.0.0.1:0", "NOBILL_USAGE_GRPC_ADDR": "127.0.0.1:0"}
    nobill = str(venv / "bin" / "nobill")
    # Production has no sandbox: the command says how to get it instead of failing obscurely.
    sandbox = subprocess.run([nobill, "sandbox"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert sandbox.returncode == 2 and "pip install nobill-sandbox" in sandbox.stderr
    try:
        migrated = subprocess.run([nobill, "migrate"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert migrated.returncode == 0, migrated.stderr
        serving = subprocess.Popen([nobill, "serve"], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
        try:
            line = ""
            while '"serving"' not in line:
                line = serving.stderr.readline()
                assert line, "the server exited before serving"
        finally:
            serving.send_signal(signal.SIGTERM)
            serving.communicate(timeout=30)
        assert serving.returncode == 0
    finally:
        with psycopg.connect(postgres_admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_sandbox_wheel_holds_only_the_sandbox(tmp_path: Path) -> None:
    wheel = _wheel(ROOT / "sandbox", tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"nobill/sandbox/server.py", "nobill/sandbox/__main__.py", "nobill/sandbox/README.md"} <= names
    assert all(name.startswith(("nobill/sandbox/", "nobill_sandbox-")) for name in names), names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/METADATA"))).decode()
    assert "Requires-Dist" not in metadata  # standard library only

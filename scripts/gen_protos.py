#!/usr/bin/env python3
"""Regenerate gen/ from protos/ (Python messages, gRPC stubs and .pyi typings).

    python scripts/gen_protos.py          # rewrite gen/
    python scripts/gen_protos.py --check  # exit 1 if gen/ is stale (used by tests)
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.resources
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GEN = ROOT / "gen"
PACKAGE_DIR = Path("nobill") / "v1"


def generate_into(out: Path) -> None:
    """Run protoc (from grpcio-tools) with the mypy-protobuf plugins into `out`."""
    from grpc_tools import protoc

    bin_dir = Path(sys.executable).parent
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / PACKAGE_DIR).glob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    package = out / PACKAGE_DIR
    (package / "__init__.py").write_text('"""Generated from protos/nobill/v1 by scripts/gen_protos.py. Do not edit."""\n')
    (package / "py.typed").write_text("")


def differences(expected: Path, actual: Path) -> list[str]:
    """Relative paths that differ between two trees (added, removed or changed)."""
    found: list[str] = []
    comparison = filecmp.dircmp(expected, actual, ignore=["__pycache__"])

    def walk(cmp: filecmp.dircmp, prefix: str) -> None:
        found.extend(prefix + name for name in cmp.left_only + cmp.right_only)
        for name in cmp.common_files:
            if not filecmp.cmp(Path(cmp.left) / name, Path(cmp.right) / name, shallow=False):
                found.append(prefix + name)
        for name, sub in cmp.subdirs.items():
            walk(sub, prefix + name + "/")

    walk(comparison, "")
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report whether gen/ is up to date")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "gen"
        fresh.mkdir()
        generate_into(fresh)
        stale = differences(fresh, GEN) if GEN.exists() else ["gen/"]
        if args.check:
            if stale:
                print("gen/ is stale; run: python scripts/gen_protos.py\n  " + "\n  ".join(stale), file=sys.stderr)
                return 1
            print("gen/ is up to date")
            return 0
        if GEN.exists():
            shutil.rmtree(GEN)
        shutil.copytree(fresh, GEN)
        print(f"regenerated {GEN.relative_to(ROOT)}/ ({len(list((GEN / PACKAGE_DIR).iterdir()))} files)")
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())

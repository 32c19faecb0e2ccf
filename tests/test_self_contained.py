"""The repository carries everything it needs: a clone with nothing beside it builds, runs
and tests. No file of the project may read or name the reference material some checkouts
keep beside the repository (the `shared` directory next to it), which a user's clone
does not have."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIPPED_DIRECTORIES = {".git", ".venv", "build", "dist", "node_modules", "__pycache__", ".pytest_cache", ".mypy_cache"}

# Spelled in pieces so this file does not name what it looks for.
_SHARED = "sha" + "red"
OUTSIDE_REFERENCES = re.compile(
    "|".join(
        [
            r"\.\.[/\\]" + _SHARED + r"\b",  # the directory, relative to the repository
            r"\b" + _SHARED + r"[/\\](?:stripe|ARCHITECTURE|STYLE|NOTES)\b",  # a file inside it
            r"\.parent\s*/\s*[\"']" + _SHARED + r"[\"']",  # a path built beside the repository
            r"/work/" + _SHARED + r"\b",
        ]
    )
)


def _project_files() -> list[Path]:
    """The tracked files (git ls-files), or every file outside build and tool directories."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
        ).stdout.decode().split("\0")
        return [ROOT / name for name in listed if name]
    except (OSError, subprocess.CalledProcessError):
        return [
            path
            for path in ROOT.rglob("*")
            if path.is_file() and not SKIPPED_DIRECTORIES.intersection(path.relative_to(ROOT).parts)
        ]


def test_the_pattern_finds_what_it_guards_against() -> None:
    up = ".."
    for text in (
        f'Path("{up}/{_SHARED}/stripe/fixtures3.json")',
        f"see {_SHARED}/ARCHITECTURE.md",
        f'REPO_ROOT.parent / "{_SHARED}" / "stripe"',
    ):
        assert OUTSIDE_REFERENCES.search(text), text
    for text in ("Helpers shared by tests", "a namespace package shared with", 'idempotency_key": "shared"'):
        assert not OUTSIDE_REFERENCES.search(text), text


def test_no_project_file_names_the_directory_beside_the_repository() -> None:
    offenders = []
    for path in _project_files():
        if not path.is_file():
            continue  # listed but deleted in the work tree
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE_REFERENCES.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not offenders, "files that reach outside the repository:\n" + "\n".join(offenders)


def test_stripe_example_objects_are_vendored_with_their_licence() -> None:
    vendored = ROOT / "tests" / "sandbox" / "stripe_fixtures"
    assert (vendored / "fixtures3.json").is_file()
    assert "MIT License" in (vendored / "LICENSE").read_text()
    assert "openapi/fixtures3.json" in (vendored / "README.md").read_text()

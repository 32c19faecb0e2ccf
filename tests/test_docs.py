"""The product's docs live in the repository: every relative link resolves inside it, and
the tour's commands are the ones a new user can run from a checkout."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "contract" / "README.md"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(doc: Path) -> None:
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
        if re.match(r"^[a-z]+://", target):
            continue
        resolved = (doc.parent / target).resolve()
        assert resolved.is_relative_to(ROOT), f"{doc.name} links outside the repository: {target}"
        assert resolved.exists(), f"{doc.name} links to a missing file: {target}"


def test_the_tour_runs_nobill_from_the_virtualenv() -> None:
    readme = (ROOT / "README.md").read_text()
    # `make` puts nobill in .venv/bin, not on PATH: a bare `nobill token` fails for a new user.
    assert not re.search(r"(?<![/\w])nobill token --sub", readme)
    assert ".venv/bin/nobill token" in readme

"""docs/SECURITY.md names, for every defence, the test that shows it: those tests exist.

A reference is `test_file.py::test_name`, or `::test_name` for another test of the file
named just before it in the same cell, or a whole `test_file.py`.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
SECURITY = ROOT / "docs" / "SECURITY.md"


def references() -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    for line in SECURITY.read_text("utf-8").splitlines():
        if not line.startswith("|"):
            continue
        for cell in line.split("|"):
            current: str | None = None
            for file, name in re.findall(r"`((?:chaos/)?test_\w+\.py)?(?:::(test_\w+))?`", cell):
                if file:
                    current = file
                if not file and not name:
                    continue
                assert current is not None, f"{name} names no file before it: {cell}"
                found.append((current, name or None))
    return found


def test_every_test_named_in_the_threat_model_exists() -> None:
    refs = references()
    assert len(refs) > 30
    for file, name in refs:
        path = TESTS / file
        assert path.exists(), f"docs/SECURITY.md names {file}, which does not exist"
        if name is not None:
            assert re.search(rf"^(async )?def {name}\(", path.read_text("utf-8"), re.M), (
                f"docs/SECURITY.md names {file}::{name}, which does not exist")

"""docs/SECURITY.md names, for every defence, the tests that show it: those tests exist.

A reference is `test_file.py::test_name`, or `::test_name` for another test of the file
named just before it in the same cell. Every row of a defence table must name at least
one test in its "shown by" column, and each by its name: a whole file shows no claim in
particular.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
SECURITY = ROOT / "docs" / "SECURITY.md"
REFERENCE = r"`((?:chaos/)?test_\w+\.py)?(?:::(test_\w+))?`"


def rows() -> list[tuple[str, str]]:
    """Each defence table row: its defence, and its "shown by" cell."""
    found: list[tuple[str, str]] = []
    columns: list[str] = []
    for line in SECURITY.read_text("utf-8").splitlines():
        if not line.startswith("|"):
            columns = []
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not columns:
            columns = cells
        elif not set(line) <= set("|- "):
            assert columns == ["defence", "where", "shown by"], columns
            found.append((cells[0], cells[2]))
    return found


def references(cell: str) -> list[tuple[str, str | None]]:
    """The (file, test name or None) named in a cell."""
    found: list[tuple[str, str | None]] = []
    current: str | None = None
    for file, name in re.findall(REFERENCE, cell):
        if file:
            current = file
        if not file and not name:
            continue
        assert current is not None, f"{name} names no file before it: {cell}"
        found.append((current, name or None))
    return found


def collected_names(path: Path) -> set[str]:
    """The test functions pytest would collect from a file (module level or in a class)."""
    tree = ast.parse(path.read_text("utf-8"))
    names = set()
    for node in tree.body:
        body = node.body if isinstance(node, ast.ClassDef) else [node]
        names.update(f.name for f in body
                     if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
                     and f.name.startswith("test_"))
    return names


def test_every_defence_names_a_test_by_its_name() -> None:
    table = rows()
    assert len(table) > 30
    for defence, shown_by in table:
        refs = references(shown_by)
        assert refs, f"docs/SECURITY.md: no test shows {defence!r}"
        whole = [file for file, name in refs if name is None]
        assert not whole, f"docs/SECURITY.md names whole files {whole} for {defence!r}"


def test_every_test_named_in_the_threat_model_exists() -> None:
    refs = [ref for _, cell in rows() for ref in references(cell)]
    assert len(refs) > 60
    for file, name in refs:
        path = TESTS / file
        assert path.exists(), f"docs/SECURITY.md names {file}, which does not exist"
        assert name is None or name in collected_names(path), (  # (None: see above)
            f"docs/SECURITY.md names {file}::{name}, which does not exist")

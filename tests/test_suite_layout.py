"""The test suite's own layout: no test module imports another test module.

What several test modules share lives in tests/helpers.py (plain functions and classes) or
tests/conftest.py (fixtures). A test module that imports from another one runs that
module's imports and fixtures wherever it is used, and ties the two so that neither can be
changed or removed alone. Every ``.py`` file below tests/ is parsed (its ``ast``), and
every import in it, at any depth (inside functions too), absolute or relative, is resolved
to the modules it may load.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
FILES = sorted(TESTS.rglob("*.py"))


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


TEST_MODULES = frozenset(module_name(f) for f in FILES if f.name.startswith("test_"))


def imported(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module name an import in ``source`` (the text of ``module``) may load: for
    ``from a.b import c`` both ``a.b`` and ``a.b.c``, since ``c`` may be a module."""
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                up = parts[:len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join([*up, base] if base else up)
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return names


def imported_test_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """The test modules (other than itself) that ``module`` imports."""
    return (imported(source, module, is_package) & TEST_MODULES) - {module}


def test_imports_are_resolved_absolute_relative_and_nested() -> None:
    """The checker itself: each of these imports of a test module is seen."""
    offenders = {
        "from tests.test_cli import gateway": "tests.test_cli",
        "import tests.test_cli": "tests.test_cli",
        "import tests.test_cli as cli": "tests.test_cli",
        "from tests import test_cli": "tests.test_cli",
        "from .test_cli import gateway": "tests.test_cli",
        "from . import test_cli": "tests.test_cli",
        "from .. import test_cli": "tests.test_cli",  # from tests/chaos/
        "from ..test_federation import Gw": "tests.test_federation",
        "from tests.chaos.test_chaos import run": "tests.chaos.test_chaos",
        "def f():\n    from tests.test_cli import gateway\n": "tests.test_cli",
    }
    for source, target in offenders.items():
        where = "tests.chaos.test_x" if ".." in source else "tests.test_x"
        assert imported_test_modules(source, where) == {target}, source
    fine = ("from tests.helpers import Gw", "from tests.chaos.driver import Settings",
            "import gateway.cli.process", "from . import helpers", "from .conftest import http",
            "from gateway.cli import vectors")
    for source in fine:
        assert not imported_test_modules(source, "tests.test_x"), source


def test_no_test_module_imports_another_test_module() -> None:
    assert {"tests.test_federation", "tests.chaos.test_chaos"} <= TEST_MODULES  # the suite
    offenders = []
    for path in FILES:
        module = module_name(path)
        source = path.read_text(encoding="utf-8")
        offenders += [f"{path.relative_to(ROOT)} imports {name}" for name in sorted(
            imported_test_modules(source, module, is_package=path.name == "__init__.py"))]
    assert not offenders, ("shared code belongs in tests/helpers.py, fixtures in "
                           "tests/conftest.py:\n" + "\n".join(offenders))

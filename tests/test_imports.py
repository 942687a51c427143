"""The gateway's import rules, checked over the ``ast`` of every module under gateway/.

The layout names the parts (docs/ARCHITECTURE.md); these rules keep the parts apart:

1. ``crypto/`` imports nothing of the gateway outside ``crypto/`` (it is the one user of
   PyNaCl, and nothing else imports ``nacl``);
2. ``protocol/`` (the texts gateway and client share) imports only ``protocol/``,
   ``crypto/`` and the base; ``client/`` imports only ``client/``, ``protocol/``,
   ``crypto/`` and the base, directly or through what those import;
3. nothing below the entry points (``app``, ``__main__``, ``cli/``, ``client/``) imports
   ``channels/``, ``cli/`` or ``client/``, except that ``channels/`` modules use each
   other and ``app`` uses ``channels/``; ``channels/`` imports neither ``app`` nor ``cli/``;
4. no import cycles among the imports that run when a module is loaded, and the
   ``gateway`` command loads the demo and the client only inside the subcommand.

Imports inside functions run too, so they count for every rule but cycles; imports under
``if TYPE_CHECKING:`` count for a module's own imports in rules 1 to 3 (the dependency is
real), not for what the client loads through other modules nor for cycles (they never
run). Relative imports are resolved against the importing module's package.

The checker is exercised on a small fixture package that breaks every rule
(:func:`test_checker_reports_every_broken_rule`), so a checker that stopped finding
anything fails there, not silently here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "gateway"

#: Base modules the client and the shared protocol texts may use.
BASE = frozenset({"gateway", "gateway.errors", "gateway.clock", "gateway.logs",
                  "gateway.files", "gateway.cliutil"})
#: What the operators' command (and ``python -m gateway``) must not load unless asked to.
RUN_MUST_NOT_LOAD = ("gateway.cli.demo", "gateway.client")
#: Entry points: the top of the import graph.
ENTRY_POINTS = ("gateway.app", "gateway.__main__", "gateway.cli", "gateway.client")


def _in(module: str, *parts: str) -> bool:
    """Whether ``module`` is one of ``parts`` or inside one of them."""
    return any(module == p or module.startswith(p + ".") for p in parts)


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (absolute)
    path: Path
    line: int
    at_load: bool  # runs when the source is imported (not in a function, not TYPE_CHECKING)
    typing: bool  # under ``if TYPE_CHECKING:``: never runs


@dataclass(frozen=True)
class Violation:
    rule: str
    module: str
    target: str
    where: str  # file:line, or the cycle

    def __str__(self) -> str:
        return f"{self.where}: {self.module} -> {self.target} ({self.rule})"


def module_names(package_dir: Path) -> dict[str, Path]:
    """Every module of the package in ``package_dir``, by dotted name."""
    names = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, path: Path, known: Iterable[str]):
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.path = path
        self.known = set(known)
        self.imports: list[Import] = []
        self._function = 0
        self._typing = 0

    def _add(self, target: str, node: ast.stmt) -> None:
        at_load = self._function == 0 and self._typing == 0
        self.imports.append(Import(self.module, target, self.path, node.lineno, at_load,
                                   self._typing > 0))

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._in_function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._in_function(node)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._in_function(node)

    def _in_function(self, node: ast.AST) -> None:
        self._function += 1
        self.generic_visit(node)
        self._function -= 1

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        typing = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
        if not typing:
            self.generic_visit(node)
            return
        self._typing += 1
        for stmt in node.body:
            self.visit(stmt)
        self._typing -= 1
        for stmt in node.orelse:
            self.visit(stmt)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            if node.level > 1:
                base = base[: len(base) - (node.level - 1)]
            origin = ".".join(base + ([node.module] if node.module else []))
        else:
            origin = node.module or ""
        for alias in node.names:
            submodule = f"{origin}.{alias.name}"
            self._add(submodule if submodule in self.known else origin, node)


def scan(package_dir: Path) -> dict[str, list[Import]]:
    """The imports of every module of the package in ``package_dir``, by module."""
    names = module_names(package_dir)
    found = {}
    for name, path in names.items():
        collector = _Collector(name, path.name == "__init__.py", path, names)
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        found[name] = collector.imports
    return found


def _ours(target: str) -> bool:
    return _in(target, PACKAGE)


def _where(imp: Import, root: Path) -> str:
    return f"{imp.path.relative_to(root)}:{imp.line}"


def _layer_rules(graph: dict[str, list[Import]], root: Path) -> Iterator[Violation]:
    for imports in graph.values():
        for imp in imports:
            src, dst = imp.source, imp.target
            if _in(dst, "nacl") and not _in(src, "gateway.crypto"):
                yield Violation("nacl only in crypto", src, dst, _where(imp, root))
            if not _ours(dst):
                continue
            if _in(src, "gateway.crypto") and not _in(dst, "gateway.crypto"):
                yield Violation("crypto imports only crypto", src, dst, _where(imp, root))
            if _in(src, "gateway.protocol") and not (
                    _in(dst, "gateway.protocol", "gateway.crypto") or dst in BASE):
                yield Violation("protocol imports only protocol, crypto and the base",
                                src, dst, _where(imp, root))
            if _in(src, "gateway.client") and not (
                    _in(dst, "gateway.client", "gateway.protocol", "gateway.crypto")
                    or dst in BASE):
                yield Violation("client imports only client, protocol, crypto and the base",
                                src, dst, _where(imp, root))
            upper = _in(dst, "gateway.channels", "gateway.cli", "gateway.client")
            if upper and not _in(src, *ENTRY_POINTS) and not (
                    _in(src, "gateway.channels") and _in(dst, "gateway.channels")):
                yield Violation("only entry points import channels, cli and client",
                                src, dst, _where(imp, root))
            if src == "gateway.app" and _in(dst, "gateway.cli", "gateway.client"):
                yield Violation("app imports channels, not cli or client",
                                src, dst, _where(imp, root))
            if _in(src, "gateway.channels") and _in(dst, "gateway.app", "gateway.cli"):
                yield Violation("channels import neither app nor cli", src, dst,
                                _where(imp, root))


def _client_closure(graph: dict[str, list[Import]], root: Path) -> Iterator[Violation]:
    """What the client loads through base, protocol and crypto modules must obey rule 2
    too: a base module that grew a server import would bring the server along (imports
    inside functions load when called; TYPE_CHECKING ones never)."""
    for start in sorted(m for m in graph if _in(m, "gateway.client")):
        seen = {start}
        stack = [start]
        while stack:
            module = stack.pop()
            for imp in graph.get(module, ()):
                dst = imp.target
                if imp.typing or not _ours(dst) or dst in seen:
                    continue
                seen.add(dst)
                allowed = _in(dst, "gateway.client", "gateway.protocol",
                              "gateway.crypto") or dst in BASE
                if not allowed and not _in(module, "gateway.client"):  # direct: reported above
                    yield Violation("client loads only client, protocol, crypto and the base",
                                    start, dst, f"via {module} ({_where(imp, root)})")
                if allowed:
                    stack.append(dst)


def _loaded_at_import(graph: dict[str, list[Import]], start: str) -> dict[str, str]:
    """Modules loaded by importing ``start`` (imports that run at load time), each with
    the module that imports it."""
    parent = {start: ""}
    stack = [start]
    while stack:
        module = stack.pop()
        for imp in graph.get(module, ()):
            if imp.at_load and _ours(imp.target) and imp.target not in parent:
                parent[imp.target] = module
                stack.append(imp.target)
    return parent


def _run_loads_little(graph: dict[str, list[Import]]) -> Iterator[Violation]:
    for start in ("gateway.cli.main", "gateway.__main__"):
        if start not in graph:
            continue
        for module, by in sorted(_loaded_at_import(graph, start).items()):
            if _in(module, *RUN_MUST_NOT_LOAD):
                yield Violation("the gateway command loads the demo and client on demand",
                                start, module, f"imported by {by}")


def _cycles(graph: dict[str, list[Import]]) -> Iterator[Violation]:
    """Strongly connected components of the load-time import graph (Tarjan)."""
    edges = {m: sorted({i.target for i in imps if i.at_load and i.target in graph
                        and i.target != m})
             for m, imps in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in edges[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    for component in components:
        yield Violation("no import cycles", component[0], " ".join(component[1:]),
                        "cycle " + " <-> ".join(component))


def check(package_dir: Path) -> list[Violation]:
    """Every broken import rule in the package at ``package_dir``."""
    graph = scan(package_dir)
    root = package_dir.parent
    found = [*_layer_rules(graph, root), *_client_closure(graph, root),
             *_run_loads_little(graph), *_cycles(graph)]
    return list(dict.fromkeys(found))  # one per import line, not per name imported


# --- the rules hold on the gateway -----------------------------------------------------


def test_gateway_keeps_the_import_rules() -> None:
    violations = check(ROOT / PACKAGE)
    assert not violations, "\n".join(map(str, violations))


def test_scan_sees_the_whole_package() -> None:
    """The checker reads every module and finds their imports (a scan that found nothing
    would make every rule hold)."""
    graph = scan(ROOT / PACKAGE)
    assert len(graph) == len(list((ROOT / PACKAGE).rglob("*.py")))
    targets = {i.target for imps in graph.values() for i in imps}
    assert {"gateway.crypto.keys", "gateway.errors", "gateway.protocol.jsontext",
            "nacl.signing", "aiohttp"} <= targets
    assert any(_in(i.target, "gateway") for i in graph["gateway.client.api"])


def _modules_loaded(statement: str) -> set[str]:
    """The modules in ``sys.modules`` after running ``statement`` in a fresh interpreter."""
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, check=True)
    return set(done.stdout.split())


@pytest.mark.parametrize("module", ["gateway.client.api", "gateway.client.cli"])
def test_client_loads_no_server(module: str) -> None:
    loaded = _modules_loaded(f"import {module}")
    assert module in loaded and "aiohttp" in loaded  # the client does use aiohttp's client
    server = sorted(m for m in loaded if _in(m, "aiohttp.web", "gateway.store",
                                              "gateway.federation", "gateway.officers"))
    assert not server, f"importing {module} loads {server}"


def test_gateway_command_loads_no_demo_or_client() -> None:
    loaded = _modules_loaded("from gateway.cli import main\nmain.build_parser()")
    assert "gateway.cli.main" in loaded and "gateway.app" in loaded
    extra = sorted(m for m in loaded if _in(m, *RUN_MUST_NOT_LOAD))
    assert not extra, f"`gateway` loads {extra} before any subcommand runs"


# --- the checker finds what breaks them ------------------------------------------------

FIXTURE = {
    "__init__.py": "",
    "errors.py": "",
    "clock.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                 "    from gateway.store import Store\n\n"
                 "def later():\n    from gateway.ledger import c\n"),
    "files.py": "",
    "app.py": "from gateway.channels import admin\nfrom gateway.cli import main\n",
    "__main__.py": "from gateway.cli.main import run\n",
    "crypto/__init__.py": "",
    "crypto/keys.py": "import nacl.signing\nfrom gateway.errors import CryptoError\n",
    "crypto/note.py": "from .. import files\nfrom . import keys\n",
    "crypto/worker.py": ("from gateway.crypto import keys\n\n"
                         "def later():\n    from gateway.protocol import names\n"),
    "protocol/__init__.py": "",
    "protocol/names.py": "from gateway.crypto import keys\nfrom gateway import errors\n",
    "protocol/texts.py": "from gateway.officers import hub\n",
    "store/__init__.py": "",
    "officers/__init__.py": "",
    "officers/hub.py": ("import nacl.public\nfrom typing import TYPE_CHECKING\n"
                        "if TYPE_CHECKING:\n    from gateway.client.api import Client\n"),
    "officers/delivery.py": "def push():\n    from gateway.channels.client import send\n",
    "channels/__init__.py": "",
    "channels/client.py": "from gateway.channels import admin\n",
    "channels/admin.py": "from gateway.app import error_middleware\n",
    "client/__init__.py": "",
    "client/api.py": ("from gateway.protocol import names\nfrom gateway.store import Store\n"
                      "from ..protocol import texts\n"),
    "client/profile.py": ("from gateway.client import api\nfrom gateway import files\n"
                          "from gateway.clock import Clock\n"),
    "cli/__init__.py": "",
    "cli/main.py": "from gateway.cli import demo\nfrom gateway import app\n",
    "cli/demo.py": "from gateway.client import api\nfrom gateway.cli.main import run\n",
    "ledger/__init__.py": "",
    "ledger/a.py": "from gateway.ledger import b\n",
    "ledger/b.py": ("from typing import TYPE_CHECKING\nfrom gateway.ledger.a import x\n"
                    "if TYPE_CHECKING:\n    from gateway.ledger import c\n"),
    "ledger/c.py": "import gateway.ledger.b\n\ndef f():\n    from gateway.ledger import a\n",
}


def _write_fixture(tmp_path: Path) -> Path:
    package = tmp_path / PACKAGE
    for name, text in FIXTURE.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return package


def test_checker_reports_every_broken_rule(tmp_path: Path) -> None:
    found = {(v.rule, v.module, v.target) for v in check(_write_fixture(tmp_path))}
    expected = {
        ("crypto imports only crypto", "gateway.crypto.keys", "gateway.errors"),
        ("crypto imports only crypto", "gateway.crypto.note", "gateway.files"),  # relative
        ("crypto imports only crypto", "gateway.crypto.worker",
         "gateway.protocol.names"),  # inside a function
        ("nacl only in crypto", "gateway.officers.hub", "nacl.public"),
        ("protocol imports only protocol, crypto and the base", "gateway.protocol.texts",
         "gateway.officers.hub"),
        ("client imports only client, protocol, crypto and the base", "gateway.client.api",
         "gateway.store"),
        # through protocol.texts (relative import), which imports a server module:
        ("client loads only client, protocol, crypto and the base", "gateway.client.api",
         "gateway.officers.hub"),
        ("client loads only client, protocol, crypto and the base", "gateway.client.profile",
         "gateway.officers.hub"),
        # through a base module's import inside a function (its TYPE_CHECKING import of
        # the store loads nothing):
        ("client loads only client, protocol, crypto and the base", "gateway.client.profile",
         "gateway.ledger.c"),
        ("only entry points import channels, cli and client", "gateway.officers.hub",
         "gateway.client.api"),  # under TYPE_CHECKING
        ("only entry points import channels, cli and client", "gateway.officers.delivery",
         "gateway.channels.client"),  # inside a function
        ("app imports channels, not cli or client", "gateway.app", "gateway.cli.main"),
        ("channels import neither app nor cli", "gateway.channels.admin", "gateway.app"),
        ("the gateway command loads the demo and client on demand", "gateway.cli.main",
         "gateway.cli.demo"),
        ("the gateway command loads the demo and client on demand", "gateway.cli.main",
         "gateway.client.api"),
        ("the gateway command loads the demo and client on demand", "gateway.__main__",
         "gateway.cli.demo"),
        ("the gateway command loads the demo and client on demand", "gateway.__main__",
         "gateway.client.api"),
        # app <-> channels.admin, app <-> cli.main <-> cli.demo: one component
        ("no import cycles", "gateway.app",
         "gateway.channels.admin gateway.cli.demo gateway.cli.main"),
        # a <-> b at load time; c's ways back to them (under TYPE_CHECKING, inside a
        # function) are not cycles
        ("no import cycles", "gateway.ledger.a", "gateway.ledger.b"),
    }
    assert found == expected, (
        f"missing: {sorted(expected - found)}\nunexpected: {sorted(found - expected)}")

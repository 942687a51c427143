"""How the package describes itself to installers: pyproject.toml and the metadata
setuptools built from it."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_license_is_an_spdx_expression_that_setuptools_reads() -> None:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        doc = tomllib.load(fh)
    # The table form ({ text = ... }) makes setuptools warn that it is deprecated.
    assert doc["project"]["license"] == "Apache-2.0"
    (requirement,) = [r for r in doc["build-system"]["requires"] if r.startswith("setuptools")]
    found = re.fullmatch(r"setuptools>=(\d+)", requirement)
    assert found is not None and int(found.group(1)) >= 77, requirement  # PEP 639 support
    # What the installed distribution says (make reinstalls when pyproject.toml changes).
    metadata = importlib.metadata.metadata("focal-point-gateway")
    assert metadata["License-Expression"] == "Apache-2.0"


def test_dependencies_are_pinned_above_their_advisory_floors() -> None:
    """pyproject.toml's floors exclude the releases with known advisories; constraints.txt
    pins every package at or above them, and this environment was installed from it."""
    with open(ROOT / "pyproject.toml", "rb") as fh:
        floors = {re.split(r"[<>=!~ ]", r, maxsplit=1)[0].lower(): r
                  for r in tomllib.load(fh)["project"]["dependencies"]}
    assert "pynacl>=1.6.2" in floors["pynacl"] and "aiohttp>=3.12.14" in floors["aiohttp"]
    pins = dict(line.lower().split("==") for line in
                (ROOT / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    for name in ("aiohttp", "pynacl", "aiosqlite", "structlog", "prometheus-client"):
        pinned = pins[name.replace("-", "_")] if name.replace("-", "_") in pins else pins[name]
        assert importlib.metadata.version(name) == pinned, name
        floor = re.search(r">=([\d.]+)", floors[name])
        assert floor is not None
        assert _release(pinned) >= _release(floor.group(1)), (name, pinned)


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])

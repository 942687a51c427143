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

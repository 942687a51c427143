"""Fixtures that more than one test module uses (plain helpers are in tests/helpers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import Gw, make, pin, started, stop_all


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture
async def vn_kh(tmp_path: Path) -> AsyncIterator[tuple[Gw, Gw]]:
    """vn-mps and kh-cnp, partners of each other, running (stopped after the test)."""
    vn, kh = make(tmp_path, "vn-mps"), make(tmp_path, "kh-cnp")
    pin(vn, kh)
    await started(vn, kh)
    yield vn, kh
    await stop_all(vn, kh)

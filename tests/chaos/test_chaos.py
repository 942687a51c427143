"""The crash suite: SIGKILLed gateways lose, duplicate and invent nothing.

Short mode (the normal test run): three gateways, at least 100 kills, a couple of
minutes. Long mode, by environment variables:

    FPG_CHAOS_KILLS=2000 python -m pytest tests/chaos -s      # at least 2000 kills
    FPG_CHAOS_SECONDS=3600 python -m pytest tests/chaos -s    # and at least an hour
    FPG_CHAOS_SEED=1234 ...                                   # replay the killer's choices

``-s`` shows the summary line (and the seed); a failure shows them anyway.
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import pytest

from tests.chaos.checker import check
from tests.chaos.driver import Settings, run

SHORT_KILLS = 100


def settings_from_env() -> Settings:
    seed = os.environ.get("FPG_CHAOS_SEED")
    return Settings(
        kills=max(1, int(os.environ.get("FPG_CHAOS_KILLS", SHORT_KILLS))),
        seconds=float(os.environ.get("FPG_CHAOS_SECONDS", 0)),
        seed=int(seed) if seed else random.SystemRandom().randrange(10**9),
    )


async def test_sigkilled_gateways_lose_duplicate_and_invent_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = settings_from_env()
    print(f"\nchaos seed={settings.seed} kills>={settings.kills} dir={tmp_path}", flush=True)
    # Every phase is bounded on its own; this bounds the whole (a start takes ~1 s, and
    # longer as the ledger it recomputes grows).
    budget = 600 + 15 * settings.kills + 2 * settings.seconds
    report = await asyncio.wait_for(run(settings, tmp_path), budget)
    print(report.details())
    print(report.summary, flush=True)
    # The counts belong in CI's output even when the test passes and output is captured.
    with capsys.disabled():
        print(f"\nchaos (seed {settings.seed}): {report.summary}", flush=True)
    v = report.verdict
    assert len(report.kills) >= settings.kills
    assert v.acknowledged > 0 and v.delivered >= v.acknowledged
    assert report.ok, (f"{report.summary} (seed {settings.seed}; see {tmp_path})\n"
                       f"{report.details()}")
    assert not v.lost and not v.duplicated and not v.unexpected, report.summary


def test_checker_counts_lost_duplicated_and_unexpected_messages() -> None:
    sent = {"a": "x@vn", "b": "y@kh", "c": "y@kh", "d": "x@vn", "e": "z@la"}
    acked = ["a", "b", "c", "d"]
    rows = [("x@vn", "a"),            # delivered
            ("y@kh", "b"), ("y@kh", "b"),  # duplicated (twice in one inbox)
            ("x@vn", "d"), ("z@la", "d"),  # duplicated and misrouted: also unexpected
            ("z@la", "e"),            # never acknowledged, delivered: recovered
            ("x@vn", "f")]            # never sent: unexpected
    v = check(sent, acked, rows)
    assert v.lost == ("c",)
    assert v.duplicated == ("b", "d")
    assert v.unexpected == ("d", "f")
    assert (v.attempted, v.acknowledged, v.delivered, v.recovered) == (5, 4, 4, 1)
    assert not v.ok
    assert v.counts() == "acknowledged=4 delivered=4 lost=1 duplicated=2 unexpected=2"


def test_checker_passes_a_clean_run() -> None:
    sent = {"a": "x@vn", "b": "y@kh", "c": "y@kh"}
    v = check(sent, ["a", "b"], [("x@vn", "a"), ("y@kh", "b"), ("y@kh", "c")])
    assert v.ok and (v.acknowledged, v.delivered, v.recovered) == (2, 3, 1)
    with pytest.raises(AssertionError):
        check(sent, ["zz"], [])  # an acknowledgement of something never sent

"""bench/membership.py in its smoke run: it must set up a real gateway, measure every
operation on every desk and print the JSON object that bench/run_all.py reads."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench import run_all

MEMBERSHIP = Path(__file__).resolve().parent.parent / "bench" / "membership.py"
TIMEOUT_SECONDS = 300


@pytest.mark.slow
def test_the_quick_run_prints_every_figure_for_every_desk() -> None:
    done = subprocess.run([sys.executable, str(MEMBERSHIP), "--quick", "--json"],
                          capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, done.stdout[-3000:]
    result = json.loads(lines[0])
    assert result["benchmark"] == "membership" and result["quick"] is True
    r = result["results"]
    assert r["sizes"] == [1, 3] and r["rounds"] == 30
    assert set(r["desks"]) == {"1", "3"}
    for size, desk in r["desks"].items():
        assert desk["members"] == int(size)
        for what in ("check", "check_request", "check_verify", "send", "plain", "chain"):
            figures = desk[what]
            assert figures["n"] == 30, (size, what)
            assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"], (size, what)
        for q in ("p50", "p99"):
            for name in ("check_to_plain", "check_to_send", "send_to_plain"):
                value = desk[f"{name}_{q}"]
                assert isinstance(value, float) and math.isfinite(value) and value > 0
    # More recipients, a bigger envelope: the plain path sealed for the whole desk.
    assert r["desks"]["3"]["envelope_bytes"] > r["desks"]["1"]["envelope_bytes"]
    # bench/run_all.py runs it and turns it into rows of the report.
    assert ("membership", [], ["--quick"]) in run_all.RUNS
    rows = run_all.membership_rows(result)
    assert len(rows) == 6 and all(row.value > 0 and row.raw > 0 for row in rows)

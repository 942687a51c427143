"""bench/abuse.py in its smoke run: it must set up a real gateway, attack it from load
generator processes while honest officers sign in and send, and print every figure that
bench/run_all.py reads. Figures are checked for presence and sense, never against timing
targets (those are for the full run on a quiet machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import run_all

ABUSE = Path(__file__).resolve().parent.parent / "bench" / "abuse.py"
TIMEOUT_SECONDS = 300


@pytest.mark.slow
def test_the_quick_run_prints_every_figure() -> None:
    done = subprocess.run([sys.executable, str(ABUSE), "--quick", "--json"],
                          capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, done.stdout[-3000:]
    result = json.loads(lines[0])
    assert result["benchmark"] == "abuse" and result["quick"] is True
    r = result["results"]
    assert r["honest_officers"] == 3
    for name in ("unloaded", "attack"):
        phase = r[name]
        # Every officer signs in at the start of each phase, and all of them succeed.
        assert phase["signins"] >= 3 and phase["signin_success"] == 1.0, phase
        assert phase["send"]["n"] > 0 and not phase["sends_failed"], phase
        assert 0 < phase["send"]["p50_ms"] <= phase["send"]["p99_ms"] <= phase["send"]["max_ms"]
        assert phase["peak_descriptors"] > 10 and phase["peak_rss_mib"] > 10
    assert r["send_p99_ratio"] > 0
    assert r["attack"]["peak_descriptors"] > r["unloaded"]["peak_descriptors"]  # 20 idle
    assert r["gateway_log_bytes_during_attack"] > 0 and r["gateway_log_bytes_unloaded"] >= 0
    attackers = r["attackers"]
    assert attackers["flood_addresses"] == 40 and attackers["flood"]["connections"] >= 40
    assert attackers["flood"].get("challenge 200", 0) > 0
    assert attackers["flood_answered_per_second"] > 0
    assert attackers["idle"]["opened"] >= 20
    assert attackers["streams"]["attempts"] > 0
    refused = r["gateway_counters"]["fpg_rejected_requests_total"]
    assert refused.get("rate_limited", 0) > 0  # enrollment guesses past the global budget
    assert set(r["met"]) == {"signin_success", "send_p99_ratio"}
    # bench/run_all.py runs it and turns it into rows of the report.
    assert ("abuse", [], ["--quick"]) in run_all.RUNS
    rows = run_all.abuse_rows(result)
    assert len(rows) >= 4 and all(row.value >= 0 and row.raw > 0 for row in rows)

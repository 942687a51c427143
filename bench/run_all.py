"""Every benchmark of the project in one go, and bench/REPORT.md from what they measured.

    python bench/run_all.py [--quick] [--out bench/REPORT.md]

Each benchmark runs as its own process with ``--json``; this script collects the
objects and writes one report in which every figure stands next to the raw limit it is
compared with, measured in the same run (PyNaCl verify, SQLite batched insert with
fsync, a trivial aiohttp handler, the sending gateway's own accept rate, an empty
gateway's memory, sealing and posting without the membership check), and the ratio of
the two. ``--quick`` runs small sizes (a smoke run: its figures are not the documented
ones).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

BENCH = Path(__file__).resolve().parent
REPORT = BENCH / "REPORT.md"

#: name, full-run arguments, quick-run arguments
RUNS: tuple[tuple[str, list[str], list[str]], ...] = (
    ("crypto", [], ["--seconds", "0.3"]),
    ("ledger", [], ["--entries", "20000", "--append-events", "20000", "--proofs", "200",
                    "--rounds", "1"]),
    ("accept", [], ["--seconds", "3", "--warmup", "1", "--officers", "16"]),
    ("relay", [], ["--quick"]),
    ("memory", [], ["--messages", "10000", "--seconds", "3"]),
    ("membership", [], ["--quick"]),
    ("abuse", [], ["--quick"]),
)
TIMEOUT_SECONDS = 1800


class Row(NamedTuple):
    bench: str
    figure: str
    value: float
    unit: str
    raw_name: str
    raw: float
    target: str = ""
    met: bool | None = None

    @property
    def ratio(self) -> float:
        return self.value / self.raw if self.raw else float("nan")


def run(name: str, args: list[str]) -> tuple[dict[str, Any], float]:
    """One benchmark's JSON object and its wall time."""
    started = time.perf_counter()
    print(f"run_all: {name} {' '.join(args)}", file=sys.stderr, flush=True)
    done = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), *args, "--json"],
                          capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench/{name}.py failed (status {done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"bench/{name}.py printed no JSON object")
    return json.loads(lines[-1]), time.perf_counter() - started


def rows(results: dict[str, dict[str, Any]]) -> list[Row]:
    """The report's figures, each with its raw limit from the same run."""
    out: list[Row] = []
    crypto = results["crypto"]["results"]
    raw_verify = max(crypto["raw PyNaCl VerifyKey.verify"]["per_second"],
                     crypto["raw PyNaCl crypto_sign_open"]["per_second"])
    targets = results["crypto"].get("targets", {})
    met = results["crypto"].get("met", {})
    for figure, entry in crypto.items():
        if figure.startswith("raw "):
            continue
        target = f">= {targets[figure]:.0%} of raw" if figure in targets else ""
        out.append(Row("crypto", f"envelope {figure}", entry["per_second"], "ops/s",
                       "PyNaCl Ed25519 verify", raw_verify, target, met.get(figure)))

    ledger = results["ledger"]["results"]
    ledger_met = results["ledger"].get("met", {})
    out.append(Row("ledger", "ledger appends (entry, Merkle nodes, fsync'd group commit)",
                   ledger["append_per_second"], "entries/s",
                   "SQLite batched INSERT + fsync, same batch sizes",
                   ledger["raw_insert_per_second_same_batch"], ">= 50% of raw",
                   ledger_met.get("append >= 50% of raw batched insert")))

    accept = results["accept"]["results"]
    accept_met = results["accept"].get("met") or accept.get("met", {})
    raw_http = accept["raw_aiohttp_per_second"]
    out.append(Row("accept", "accepted messages, durable (closed loop)",
                   accept["accepted_per_second"], "msg/s", "trivial aiohttp handler",
                   raw_http, ">= 3,000 msg/s",
                   _met(accept_met, "accepted")))
    floors = accept["floor"]
    out.append(Row("accept", "accepted messages, durable (closed loop)",
                   accept["accepted_per_second"], "msg/s",
                   "floor: verify + group commit only, one process (bench/floor.py)",
                   floors["1"]["per_second"], "a one-process gateway stays below it"))
    out.append(Row("accept", "floor, two processes on one port and one database",
                   floors["2"]["per_second"], "msg/s", "floor, one process",
                   floors["1"]["per_second"]))
    loop = accept["open_loop"]
    offered = loop["offered_per_second"]
    out.append(Row("accept", f"answered at {offered:,.0f} msg/s offered (open loop)",
                   loop["answered"] / loop["seconds"] if loop["seconds"] else 0.0, "msg/s",
                   "offered rate", offered, "all answered, p99 < 50 ms "
                   f"(measured p99 {loop['p99_ms']} ms)",
                   _met(accept_met, "p99")))

    relay = results["relay"]["results"]
    relay_met = relay.get("met", {})
    tp, bl = relay["throughput"], relay["backlog"]
    out.append(Row("relay", "end to end vn-mps -> kh-cnp (accepted to in KH's inbox)",
                   tp["end_to_end_per_second"], "msg/s", "vn-mps accept rate, same run",
                   tp["vn_accept_per_second"], ">= 2,000 msg/s",
                   relay_met.get("throughput")))
    out.append(Row("relay", f"backlog drain ({bl['queued']:,} queued while KH was down)",
                   bl["drain_per_second"], "msg/s", "trivial aiohttp handler (accept run)",
                   raw_http, ">= 2,000 msg/s", relay_met.get("drain")))
    up = relay["latency"]["la_up"]["flash"]["p99_ms"]
    down = relay["latency"]["la_down"]["flash"]["p99_ms"]
    out.append(Row("relay", "flash p99 to KH while partner LA is down", down or 0.0, "ms",
                   "flash p99 to KH with LA up", up or 0.0, "ratio <= 1.1",
                   relay_met.get("dead_partner")))
    mem = results["memory"]
    out.append(Row("memory", f"peak RSS, gateway holding {mem['messages']:,} queued",
                   mem["loaded"]["peak_rss_mib"], "MiB", "peak RSS, same gateway, empty",
                   mem["empty"]["peak_rss_mib"], f"< {mem['target_mib']:.0f} MiB", mem["met"]))
    if "membership" in results:  # absent from the results of runs before it existed
        out += membership_rows(results["membership"])
    if "abuse" in results:
        out += abuse_rows(results["abuse"])
    return out


def abuse_rows(result: dict[str, Any]) -> list[Row]:
    """Honest officers under attack, next to the same officers unloaded in the same run."""
    r = result["results"]
    quiet, loud, met = r["unloaded"], r["attack"], r.get("met", {})
    attack = (f"under attack ({r['attackers']['flood_addresses']} flooding addresses, "
              f"{r['attackers']['stream_attempts_asked']} stream attempts, "
              f"{r['attackers']['idle_connections_asked']} idle connections)")
    return [
        Row("abuse", f"honest sign-ins that succeeded, {attack}",
            100 * (loud["signin_success"] or 0.0), "%", "the same, unloaded",
            100 * (quiet["signin_success"] or 0.0), "100 %", met.get("signin_success")),
        Row("abuse", f"honest send p99, {attack}", loud["send"]["p99_ms"] or 0.0, "ms",
            "honest send p99, unloaded", quiet["send"]["p99_ms"] or 0.0, "ratio <= 3",
            met.get("send_p99_ratio")),
        Row("abuse", "gateway peak descriptors under attack", loud["peak_descriptors"], "fds",
            "unloaded", quiet["peak_descriptors"]),
        Row("abuse", "gateway peak RSS under attack", loud["peak_rss_mib"], "MiB",
            "unloaded", quiet["peak_rss_mib"]),
        Row("abuse", f"gateway log written during the attack ({loud['seconds']:g} s)",
            r["gateway_log_bytes_during_attack"] / 1024, "KiB",
            f"the same, unloaded ({quiet['seconds']:g} s)",
            r["gateway_log_bytes_unloaded"] / 1024),
    ]


def membership_rows(result: dict[str, Any]) -> list[Row]:
    """Per desk size: the client's membership check and a whole send, each next to sealing
    and posting the same envelope without the check."""
    out = []
    for size, desk in result["results"]["desks"].items():
        plain = f"seal + POST without the check, desk of {size}"
        for q in ("p50", "p99"):
            out.append(Row("membership", f"membership check (proofs request + checking), "
                           f"desk of {size}, {q}", desk["check"][f"{q}_ms"], "ms",
                           f"{plain}, {q}", desk["plain"][f"{q}_ms"]))
        out.append(Row("membership", f"whole GatewayClient.send, desk of {size}, p50",
                       desk["send"]["p50_ms"], "ms", f"{plain}, p50", desk["plain"]["p50_ms"]))
    return out


def _met(met: dict[str, bool], prefix: str) -> bool | None:
    return next((v for k, v in met.items() if k.startswith(prefix)), None)


def _num(value: float) -> str:
    if value != value:  # NaN
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.1f}"


def render(results: dict[str, dict[str, Any]], times: dict[str, float], quick: bool) -> str:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmark report",
        "",
        f"Made by `python bench/run_all.py{' --quick' if quick else ''}` on {stamp}: "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}, "
        f"{platform.system()}. Every figure stands next to the raw limit it is compared "
        "with, measured in the same run, and the ratio of the two.",
        "",
    ]
    if quick:
        lines += ["**Quick run: small sizes, not the documented figures.**", ""]
    lines += ["| bench | figure | value | raw limit (same run) | raw | ratio | target | met |",
              "|---|---|---:|---|---:|---:|---|---|"]
    for r in rows(results):
        met = {True: "yes", False: "**no**", None: "-"}[r.met]
        lines.append(f"| {r.bench} | {r.figure} | {_num(r.value)} {r.unit} | {r.raw_name} | "
                     f"{_num(r.raw)} {r.unit} | {r.ratio:.2f} | {r.target} | {met} |")
    lines += ["", "Wall time of each benchmark: " + ", ".join(
        f"{name} {seconds:.0f} s" for name, seconds in times.items()) + ".", "",
        "## What each benchmark printed", "",
        "The JSON objects as the benchmarks wrote them (profiles left out); the README "
        "explains each benchmark.", ""]
    for name, result in results.items():
        shown = {k: v for k, v in result.items() if k != "profiles"}
        if isinstance(shown.get("results"), dict):
            shown["results"] = {k: v for k, v in shown["results"].items()
                                if k != "profiles"}
        lines += [f"### {name}", "", "```json", json.dumps(shown, indent=1, sort_keys=True),
                  "```", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--out", type=Path, default=REPORT, help="where to write the report")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="only write the report from the results file of an earlier run")
    args = parser.parse_args()
    saved = args.out.with_suffix(".json")  # every run's raw results, beside the report
    if args.render:
        doc = json.loads(args.render.read_text())
        results, times, args.quick = doc["results"], doc["times"], doc["quick"]
    else:
        results, times = {}, {}
        for name, full, quick in RUNS:
            results[name], times[name] = run(name, quick if args.quick else full)
            saved.write_text(json.dumps({"results": results, "times": times,
                                         "quick": args.quick}))
    report = render(results, times, args.quick)
    args.out.write_text(report, encoding="utf-8")
    print(report.split("\n## ")[0])
    print(f"run_all: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``gateway demo``: the whole scenario as a real process, and its set-up on its own.

The demo starts three real ``gateway run`` processes on free loopback ports; the test
runs it exactly as a newcomer would (``--once``), then reads what it left behind: the
timeline on standard output, each gateway's log, the metrics it scraped and the
databases. None of them may hold a word of what the officers wrote.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.cli.demo import COUNTRIES, SECRETS, SERVICE_LEVELS
from gateway.config import load_config

pytestmark = pytest.mark.slow

IDS = [c.id for c in COUNTRIES]


def demo(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """``python -m gateway demo ARGS`` in its own process group. On a timeout it gets
    SIGTERM first, on which it stops its gateways (each runs in a process group of its
    own), and SIGKILL after 30 s."""
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "demo", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        pytest.fail(f"the demo did not finish within {timeout} s:\n{out}\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [(dict(s.labels), s.value) for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == name]


def test_demo_once_plays_the_whole_scenario_and_leaks_no_plaintext(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    started = time.monotonic()
    result = demo("--once", "--free-ports", "--dir", str(root))
    elapsed = time.monotonic() - started
    out = result.stdout
    assert result.returncode == 0, f"{out}\n{result.stderr}"
    assert elapsed < 60, f"the demo took {elapsed:.1f} s (target: under a minute)"

    # Every step of the scenario is on the timeline, in order.
    steps = [
        r"enrolled\s+border-liaison officer of border-liaison@vn-mps",
        r"== a\) Flash hotline",
        r"vn-mps\s+sent\s+flash hotline [0-9a-f]{32} border-liaison@vn-mps -> "
        r"anti-trafficking@kh-cnp",
        r"vn-mps\s+receipt\s+kh-cnp signed a receipt for [0-9a-f]{8}: accepted",
        r"kh-cnp\s+opened\s+anti-trafficking officer verified and decrypted",
        r"vn-mps\s+read-ack",
        r"vn-mps\s+BREACH\s+flash hotline [0-9a-f]{8} missed its 'reply' service level",
        r"vn-mps\s+escalated duty-supervisor@vn-mps got a breach notice .* verified",
        r"kh-cnp\s+sent\s+flash reply [0-9a-f]{8}",
        r"vn-mps\s+reply\s+[0-9a-f]{8} was answered by",
        r"== b\) Case notification with an MLA request",
        r"vn-mps\s+sent\s+priority case [0-9a-f]{32} central-authority@vn-mps -> "
        r"central-authority@la-mps",
        r"la-mps\s+opened\s+central-authority officer verified and decrypted",
        r"== c\) Partner outage",
        r"la-mps\s+stopped\s+SIGTERM; the gateway stopped \(status 0\)",
        r"vn-mps\s+queue\s+admin view \(`gateway partners`\): la-mps down, 3 queued",
        r"la-mps\s+started",
        r"vn-mps\s+drained\s+queue for la-mps empty",
        r"la-mps\s+delivered .* once each",
        r"== d\) A new member joins anti-trafficking@kh-cnp",
        r"kh-cnp\s+enrolled\s+second anti-trafficking officer .* waits to be admitted",
        r"kh-cnp\s+pending\s+second anti-trafficking officer waits to join .* safety code "
        r"(\d{4} ){4}\d{4}",
        r"kh-cnp\s+admitted\s+anti-trafficking officer's screen shows (\d{4} ){4}\d{4}, the same",
        r"kh-cnp\s+shared\s+.* keys of 1 earlier message",
        r"kh-cnp\s+opened\s+second anti-trafficking officer verified and decrypted the flash "
        r"hotline [0-9a-f]{8}, sent before it joined",
        r"== Metrics",
        r"== Ledgers",
        r"== Where to look",
        r"== Scenario complete in",
    ]
    position = 0
    for step in steps:
        found = re.compile(step).search(out, position)
        assert found, f"step not on the timeline (after position {position}): {step}\n{out}"
        position = found.end()
    # The answer really was slower than the service level.
    slow = re.search(r"flash reply [0-9a-f]{8} to [0-9a-f]{8}, ([\d.]+) s after", out)
    reply_within = next(s.within_seconds for s in SERVICE_LEVELS
                        if (s.priority, s.stage) == ("flash", "reply"))
    assert slow and float(slow.group(1)) > reply_within
    for gateway in IDS:
        assert re.search(rf"^{gateway}\s+ledger ok: \d+ entries recomputed, \d+ signed "
                         r"checkpoints verified; the newest \(size (\d+) = ledger size", out,
                         re.M), out
        assert f"partners --config {root / gateway / 'gateway.toml'}" in out

    # What the demo scraped: every stage of the flash alert seen from Viet Nam, with
    # partner and priority labels, and the breach the slow answer caused.
    vn = (root / "vn-mps" / "metrics.prom").read_text()
    stages = {labels["stage"] for labels, value in samples(vn, "fpg_response_seconds_count")
              if value and (labels["direction"], labels["partner"], labels["kind"],
                            labels["priority"]) == ("outbound", "kh-cnp", "hotline", "flash")}
    assert stages == {"receipt", "delivered", "read", "reply"}
    breaches = samples(vn, "fpg_service_level_breaches_total")
    assert any(labels["priority"] == "flash" and labels["stage"] == "reply" and value >= 1
               for labels, value in breaches), breaches
    kh = (root / "kh-cnp" / "metrics.prom").read_text()
    assert any(value >= 1 and labels["stage"] == "reply"
               for labels, value in samples(kh, "fpg_service_level_breaches_total"))

    # Nothing the officers wrote is anywhere but inside the sealed envelopes: not on the
    # timeline or standard error, not in the logs, metrics, configs or databases.
    files = [p for p in root.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"gateway.log", "metrics.prom", "gateway.sqlite3"}
    for secret in SECRETS:
        assert secret not in out and secret not in result.stderr, secret
        for path in files:
            assert secret.encode() not in path.read_bytes(), (secret, path)


def test_setup_only_writes_pinned_configs_and_reuses_its_keys(tmp_path: Path) -> None:
    root = tmp_path / "fed"
    first = demo("--setup-only", "--dir", str(root), timeout=60)
    assert first.returncode == 0, first.stderr
    assert "created" in first.stdout
    configs = {gw: load_config(root / gw / "gateway.toml") for gw in IDS}
    fingerprints = {gw: re.search(rf"{gw} .* fingerprint ([A-Z2-7 ]+)\n", first.stdout)
                    for gw in IDS}
    for gw, config in configs.items():
        # Default ports: what config/prometheus.yml and docker-compose.yml expect.
        country = next(c for c in COUNTRIES if c.id == gw)
        assert (config.server.host, config.server.port) == ("127.0.0.1", country.port)
        assert (config.metrics.host, config.metrics.port) == ("127.0.0.1", country.metrics_port)
        assert config.keys.insecure_dev_mode
        assert config.service_levels == SERVICE_LEVELS
        partners = {p.id: p for p in config.partners}
        assert set(partners) == set(IDS) - {gw}
        for other, pinned in partners.items():
            found = fingerprints[other]
            assert found is not None
            assert pinned.fingerprint == found.group(1).strip()
            assert pinned.url == f"http://127.0.0.1:{configs[other].server.port}"
    keys = {gw: (root / gw / "keys" / "gateway.key").read_bytes() for gw in IDS}

    again = demo("--setup-only", "--dir", str(root), timeout=60)
    assert again.returncode == 0, again.stderr
    assert "reused" in again.stdout
    assert keys == {gw: (root / gw / "keys" / "gateway.key").read_bytes() for gw in IDS}


def test_a_directory_that_is_not_a_demo_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = demo("--setup-only", "--dir", str(tmp_path), timeout=60)
    assert result.returncode == 1
    assert "holds files but not the three demo gateways" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_busy_default_port_is_named_before_anything_starts(tmp_path: Path) -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT leftovers
    try:
        try:
            holder.bind(("127.0.0.1", COUNTRIES[0].port))
            holder.listen(1)
        except OSError:
            pass  # something else listens there already: the demo must say so all the same
        result = demo("--once", "--dir", str(tmp_path / "demo"), timeout=60)
    finally:
        holder.close()
    assert result.returncode == 1
    assert re.search(r"port \d+ \(\S+ (gateway|metrics)\) on 127.0.0.1 is in use", result.stderr)
    assert "--free-ports" in result.stderr
    assert "== a)" not in result.stdout

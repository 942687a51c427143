"""`gateway queue` end to end: real `gateway run` processes, real `gateway-client` processes.

Two demo gateways (`gateway demo --setup-only`: vn-mps and kh-cnp pinned to each other,
short retry intervals) run as processes. VN's officer sends a hotline to KH's desk while
KH is down; the operator lists it, shows it and returns it; the officer finds the signed
non-delivery notice with the operator's reason; VN's ledger verifies; KH comes back and
receives the officer's next message, never the returned one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.cli.process import ServerProcess

TIMEOUT = 60
TEXT = "Queue e2e 9K: plaintext that no operator command prints."
REASON = "KH link down for maintenance until Monday; please resend then"


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FPG_CLIENT_PROFILE"}
    result = subprocess.run([sys.executable, "-m", *args], capture_output=True,
                            timeout=TIMEOUT, env=env, input=stdin)
    return subprocess.CompletedProcess(result.args, result.returncode,
                                       result.stdout.decode("utf-8"),
                                       result.stderr.decode("utf-8"))


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stdout


def failed(result: subprocess.CompletedProcess[str]) -> str:
    """The one-line error of a refused `gateway` command."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    return line


def gateway(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run("gateway", *args, "--config", str(config))


def client(profile: Path, *args: str, stdin: bytes | None = None
           ) -> subprocess.CompletedProcess[str]:
    return run("gateway.client.cli", "--profile", str(profile), *args, stdin=stdin)


def enroll(config: Path, url: str, desk: str, profile: Path) -> None:
    code = ok(gateway(config, "officers", "invite", "--desk", desk)).strip()
    ok(client(profile, "enroll", url, "--insecure-dev-keys", "--json",
              stdin=code.encode("ascii") + b"\n"))


def eventually(check: Callable[[], Any], what: str, seconds: float = 30.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_queue_return_with_real_gateways_end_to_end(tmp_path: Path) -> None:
    root = tmp_path / "federation"
    ok(run("gateway", "demo", "--setup-only", "--dir", str(root), "--free-ports"))
    vn_cfg, kh_cfg = root / "vn-mps" / "gateway.toml", root / "kh-cnp" / "gateway.toml"
    a, k = tmp_path / "officers" / "a", tmp_path / "officers" / "k"
    with ServerProcess.gateway(vn_cfg) as vn:
        kh = ServerProcess.gateway(kh_cfg)
        kh.start()
        try:
            enroll(vn_cfg, vn.url, "border-liaison", a)
            enroll(kh_cfg, kh.url, "anti-trafficking", k)

            def sent(text: str) -> str | None:
                result = client(a, "send", "hotline", "anti-trafficking@kh-cnp", "--text",
                                text, "--json")
                return json.loads(result.stdout)["id"] if result.returncode == 0 else None
            first = eventually(lambda: sent("first, while KH is up"),
                               "VN's officer to reach KH's desk")
            eventually(lambda: first in client(k, "inbox", "anti-trafficking").stdout,
                       "the first message at KH")
        finally:
            kh.stop()

        empty = ok(gateway(vn_cfg, "queue", "list"))
        assert empty.splitlines()[-1] == "(queue empty)"
        queued = sent(TEXT)
        assert queued is not None
        eventually(lambda: json.loads(ok(gateway(vn_cfg, "queue", "list", "--json")))[
            "messages"][0]["attempts"] >= 1, "a failed attempt to reach KH")
        listing = ok(gateway(vn_cfg, "queue", "list", "kh-cnp"))
        (row,) = [line for line in listing.splitlines() if line.startswith(queued)]
        assert row.split()[1:5] == ["kh-cnp", "border-liaison@vn-mps", "hotline", "routine"]
        shown = ok(gateway(vn_cfg, "queue", "show", queued))
        assert f"message:     {queued}" in shown and "to:          anti-trafficking@kh-cnp" \
            in shown
        shown_json = json.loads(ok(gateway(vn_cfg, "queue", "show", queued, "--json")))
        assert shown_json["message"]["attempts"] >= 1
        for out in (listing, shown, json.dumps(shown_json)):
            assert TEXT not in out

        bad = gateway(vn_cfg, "queue", "return", queued, "--reason", "two\nlines")
        assert "control characters" in failed(bad)
        returned = ok(gateway(vn_cfg, "queue", "return", queued, "--reason", REASON))
        assert "returned" in returned and "border-liaison@vn-mps" in returned
        again = gateway(vn_cfg, "queue", "return", queued, "--reason", REASON)
        assert "is not queued" in failed(again)
        assert ok(gateway(vn_cfg, "queue", "list")).splitlines()[-1] == "(queue empty)"

        # The sending officer finds the signed notice with the reason.
        notices = ok(client(a, "notices", "border-liaison"))
        (line,) = [x for x in notices.splitlines() if queued in x]
        assert "NOT DELIVERED" in line and "returned by the operator" in line
        assert REASON in line
        status = ok(client(a, "status", queued))
        assert "the operator returned it" in status and REASON in status
        verified = ok(gateway(vn_cfg, "ledger", "verify"))
        assert "ok" in verified.lower()

        # KH comes back: the next message arrives, the returned one never does.
        kh = ServerProcess.gateway(kh_cfg)
        kh.start()
        try:
            later = sent("later, after the return")
            assert later is not None
            eventually(lambda: later in client(k, "inbox", "anti-trafficking").stdout,
                       "the later message at KH")
            inbox = json.loads(ok(client(k, "inbox", "anti-trafficking", "--json")))
            assert {m["id"] for m in inbox["messages"]} == {first, later}
        finally:
            kh.stop()
    assert ok(gateway(vn_cfg, "ledger", "verify"))

"""`gateway report` and `gateway reconcile` against a running `gateway run` process, over
its admin socket: what they print, and their errors. (What they compute is tested with
two gateways in tests/test_cases_e2e.py.)"""

from __future__ import annotations

import json
import socket
from pathlib import Path

from gateway.cli.process import ServerProcess
from gateway.crypto.keys import GatewaySigningKey
from tests.helpers import gateway, one_line_error


def test_report_and_reconcile_commands(tmp_path: Path) -> None:
    d = tmp_path / "gw"
    assert gateway("init", str(d), "--id", "vn-mps", "--port", "0",
                   "--insecure-dev-keys").returncode == 0
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: the partner is down
    config = d / "gateway.toml"
    config.write_text(config.read_text() + f"""
[federation]
request_timeout_seconds = 1

[[partners]]
id = "la-mps"
url = "http://127.0.0.1:{port}"
fingerprint = "{GatewaySigningKey.generate().public.fingerprint}"
""")
    assert "is the gateway running" in one_line_error(
        gateway("report", "--config", str(config)))
    with ServerProcess.gateway(config):
        shown = gateway("report", "--config", str(config))
        assert shown.returncode == 0 and shown.stdout.strip() == "vn-mps: (no requests)"
        doc = json.loads(gateway("report", "--json", "--config", str(config)).stdout)
        assert (doc["gateway"], doc["pairs"]) == ("vn-mps", [])
        down = gateway("reconcile", "la-mps", "--config", str(config))
        assert "la-mps unreachable" in one_line_error(down)
        unknown = gateway("reconcile", "xx-none", "--config", str(config))
        assert "xx-none is not a partner of this gateway" in one_line_error(unknown)
        days = gateway("reconcile", "la-mps", "--days", "0", "--config", str(config))
        assert days.returncode == 2 and "--days" in days.stderr

"""`gateway partners`: the operator's view of partners, through the admin socket."""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.request
from pathlib import Path

from gateway.appkeys import PARTNERS
from gateway.channels import admin
from gateway.cli.admin import admin_request, format_partners
from gateway.cli.process import ServerProcess
from gateway.crypto.keys import GatewaySigningKey
from tests.helpers import gateway, officers, one_line_error, until


async def test_partner_report_follows_an_outage_and_retry_wakes_the_sender(
        vn_kh, http, tmp_path: Path) -> None:
    vn, kh = vn_kh
    assert vn.app is not None
    a, _ = await officers(vn, kh, http)
    await kh.stop()
    for i in range(3):
        await a.send("hotline", "anti-trafficking@kh-cnp", {"type": "hotline", "text": f"{i}"},
                     priority="flash")
    path = tmp_path / "admin.sock"
    async with admin.serving(vn.app, path):
        assert path.stat().st_mode & 0o777 == 0o600

        async def kh_report() -> dict:
            report = await admin_request(path, "GET", "/partners")
            (entry,) = report["partners"]
            return entry
        await until(lambda: _down(kh_report()), "KH reported down")
        entry = await kh_report()
        assert entry["queued"] == 3 and entry["oldest_queued"] is not None
        assert entry["failures"] >= 1 and entry["last_error"]
        text = format_partners(await admin_request(path, "GET", "/partners"))
        assert "kh-cnp" in text and "down" in text and "last error" in text

        partner = vn.app[PARTNERS].get("kh-cnp")
        assert partner is not None
        partner.kick.clear()
        answer = await admin_request(path, "POST", "/partners/kh-cnp/retry")
        assert answer == {"partner": "kh-cnp", "woken": True}
        try:
            await admin_request(path, "POST", "/partners/xx-none/retry")
            raise AssertionError("an unknown partner was accepted")
        except Exception as exc:
            assert "not a partner" in str(exc)

        await kh.start()
        await until(lambda: _drained(kh_report()), "KH reported up, queue empty, no failures")
        assert (await kh_report())["last_contact"] is not None
    assert not path.exists()


async def _down(entry) -> bool:
    e = await entry
    return bool(e["state"] == "down" and e["queued"] == 3 and e["failures"])


async def _drained(entry) -> bool:
    e = await entry
    return bool(e["state"] == "up" and e["queued"] == 0 and e["failures"] == 0)


def test_partners_command_against_a_running_gateway(tmp_path: Path) -> None:
    d = tmp_path / "gw"
    assert gateway("init", str(d), "--id", "vn-mps", "--port", "0",
                   "--insecure-dev-keys").returncode == 0
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: the partner is down
    config = d / "gateway.toml"
    fingerprint = GatewaySigningKey.generate().public.fingerprint
    metrics_port_file = tmp_path / "metrics.port"
    text = config.read_text().replace(
        "\n[metrics]", f'\n[metrics]\nport_file = "{metrics_port_file}"', 1)
    config.write_text(text + f"""
[federation]
health_seconds = 0.1

[[partners]]
id = "kh-cnp"
url = "http://127.0.0.1:{port}"
fingerprint = "{fingerprint}"
""")
    not_running = gateway("partners", "--config", str(config))
    assert not_running.returncode == 1
    assert "is the gateway running" in one_line_error(not_running)
    with ServerProcess.gateway(config) as server:
        deadline = time.monotonic() + 20
        while True:
            shown = gateway("partners", "--config", str(config))
            assert shown.returncode == 0, shown.stderr
            if "down" in shown.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert "vn-mps partners at" in shown.stdout
        (row,) = [line for line in shown.stdout.splitlines() if line.startswith("kh-cnp ")]
        assert row.split()[1] == "down", shown.stdout
        assert f"kh-cnp: key {fingerprint}\n" in shown.stdout  # pinned, never rotated
        retried = gateway("partners", "retry", "kh-cnp", "--config", str(config))
        assert retried.returncode == 0 and "woken" in retried.stdout
        unknown = gateway("partners", "retry", "xx-none", "--config", str(config))
        assert unknown.returncode == 1
        assert "not a partner" in one_line_error(unknown)
        as_json = gateway("partners", "--json", "--config", str(config))
        assert '"id": "kh-cnp"' in as_json.stdout
        status = gateway("status", "--config", str(config))
        assert status.returncode == 0, status.stderr
        lines = status.stdout.splitlines()
        assert lines[0].startswith("vn-mps (version ")
        assert lines[1].startswith("ledger: ")
        assert any(line.split()[:2] == ["kh-cnp", "down"] for line in lines), status.stdout
        assert any(line.split()[:3] == ["flash", "read", "within"] for line in lines)
        assert "(nothing observed yet)" in status.stdout
        status_json = json.loads(gateway("status", "--json", "--config", str(config)).stdout)
        assert status_json["gateway"] == "vn-mps"
        assert {lv["stage"] for lv in status_json["service_levels"]} == {
            "delivered", "read", "reply"}
        metrics_port = int(metrics_port_file.read_text())
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                    timeout=10) as response:
            page = response.read().decode()
        assert 'fpg_partner_up{partner="kh-cnp"} 0.0' in page
        assert 'fpg_gateway_info{gateway="vn-mps"' in page
        if sys.platform == "linux":  # the process collector reads /proc
            memory = [line for line in page.splitlines()
                      if line.startswith("process_resident_memory_bytes ")]
            assert len(memory) == 1 and float(memory[0].split()[1]) > 1e6, memory
            assert "process_start_time_seconds " in page
    assert server.returncode == 0
    assert not (d / "data" / "admin.sock").exists()

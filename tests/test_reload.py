"""Reloading a running gateway's configuration (gateway.reload): partners removed and
added again, service levels, desks, an invalid file refused, settings that need a restart.

These run the application in the test's process (real HTTP servers on loopback, real
SQLite files) and call the reloader SIGHUP and `gateway reload` call; the signal itself,
certificates and `gateway run` processes are in test_reload_process.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.appkeys import PARTNER_LOOPS, PARTNERS, SERVICE_LEVELS
from gateway.channels import admin
from gateway.cli.admin import admin_request
from gateway.config_edit import add_partner, remove_partner
from gateway.errors import GatewayError
from gateway.reload import Reloader
from tests.helpers import Gw, make, officers, pin, started, stop_all, until


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def toml(doc: dict[str, Any]) -> str:
    """The configuration document ``Gw.config_doc`` gives, as a TOML file."""
    out: list[str] = []
    for name, table in doc.items():
        if isinstance(table, list):
            for item in table:
                out.append(f"[[{name}]]")
                out += [f"{k} = {_value(v)}" for k, v in item.items()]
                out.append("")
            continue
        out.append(f"[{name}]")
        out += [f"{k} = {_value(v)}" for k, v in table.items()]
        out.append("")
    return "\n".join(out)


def config_file(gw: Gw) -> Path:
    path = gw.directory / "gateway.toml"
    path.write_text(toml(gw.config_doc()))
    return path


def reloader(gw: Gw) -> Reloader:
    assert gw.app is not None
    return Reloader(gw.app, gw.directory / "gateway.toml", None, None)


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


async def test_a_removed_partner_stops_its_loops_and_keeps_its_queue_until_added_again(
        tmp_path: Path, http) -> None:
    vn, kh = make(tmp_path, "vn-mps"), make(tmp_path, "kh-cnp")
    pin(vn, kh)
    await started(vn, kh)
    try:
        assert vn.app is not None
        path, reload = config_file(vn), reloader(vn)
        await reload.reload()  # desks seen from here on
        a, k = await officers(vn, kh, http)
        loops = vn.app[PARTNER_LOOPS]
        assert loops.running("kh-cnp") == ["refresh", "relay", "witness"]
        await kh.stop()
        for i in range(2):
            await a.send("hotline", "anti-trafficking@kh-cnp", {"type": "hotline",
                                                               "text": f"held {i}"},
                         priority="flash")
        url = vn.partners["kh-cnp"][0]
        remove_partner(path, "kh-cnp")
        with capture_logs() as logs:
            answer = await reload.reload()
        assert answer == {"refused": None, "changes": ["partner kh-cnp removed"],
                          "needs_restart": []}
        (removed,) = events(logs, "partner_removed")
        assert removed["partner"] == "kh-cnp" and removed["held"] == 2
        assert events(logs, "reloaded")[0]["changes"] == 1
        assert loops.running("kh-cnp") == [] and "kh-cnp" not in vn.app[PARTNERS].by_id
        # KH listens again: VN no longer sends to it, and keeps what it holds.
        await kh.start()
        await asyncio.sleep(1.0)  # FAST: a sender would have retried many times by now
        assert vn.rows("SELECT COUNT(*) FROM outbox WHERE partner = 'kh-cnp'") == [(2,)]
        assert (await k.inbox("anti-trafficking"))["messages"] == []
        # Added again: its loops start and what was held goes out.
        add_partner(path, "kh-cnp", url, kh.key.public.fingerprint)
        with capture_logs() as logs:
            answer = await reload.reload()
        assert answer["changes"] == ["partner kh-cnp added"]
        assert events(logs, "partner_added")[0]["url"] == url
        assert loops.running("kh-cnp") == ["refresh", "relay", "witness"]
        await until(lambda: vn.rows("SELECT COUNT(*) FROM outbox") == [(0,)], "the drain")
        inbox = await k.inbox("anti-trafficking")
        assert len(inbox["messages"]) == 2
    finally:
        await stop_all(vn, kh)


async def test_an_invalid_file_is_refused_and_the_configuration_in_force_stays(
        tmp_path: Path) -> None:
    vn, kh = make(tmp_path, "vn-mps"), make(tmp_path, "kh-cnp")
    pin(vn, kh)
    await started(vn)
    try:
        assert vn.app is not None
        path, reload = config_file(vn), reloader(vn)
        good = path.read_text()
        partners = vn.app[PARTNERS]
        levels = vn.app[SERVICE_LEVELS].levels
        for bad, error in [
            (good.replace('[[partners]]\nid = "kh-cnp"', '[[partners]]\nid = "KH"'),
             "[[partners]] #1 id: must be 1-63 lowercase"),
            (good + "\n[[service_levels]]\npriority = \"urgent\"\nstage = \"read\"\n"
             "within_seconds = 60\n", "[[service_levels]] #1 priority: must be one of"),
            (good + "\n[[partners]]\nid = \"la-mps\"\n", "[[partners]] #2 url: required"),
            (good + "[broken", "not valid TOML"),
        ]:
            path.write_text(bad)
            with capture_logs() as logs:
                answer = await reload.reload()
            assert answer["refused"] is not None and error in answer["refused"]
            assert answer["changes"] == []
            (refused,) = events(logs, "reload_refused")
            assert error in refused["error"] and refused["log_level"] == "error"
            assert not events(logs, "reloaded")
            assert list(partners.by_id) == ["kh-cnp"]
            assert vn.app[SERVICE_LEVELS].levels == levels
            assert vn.app[PARTNER_LOOPS].running("kh-cnp") == ["refresh", "relay", "witness"]
        path.unlink()
        assert "no such config file" in (await reload.reload())["refused"]
    finally:
        await stop_all(vn)


async def test_service_levels_are_applied_and_other_settings_named_for_a_restart(
        tmp_path: Path) -> None:
    vn = make(tmp_path, "vn-mps")
    await started(vn)
    try:
        assert vn.app is not None
        path, reload = config_file(vn), reloader(vn)
        await reload.reload()  # desks seen from here on
        await vn.add_desk("night-watch")
        with capture_logs() as logs:
            assert (await reload.reload())["changes"] == ["desks"]
        (desks,) = events(logs, "desks_changed")
        assert desks["added"] == ["night-watch@vn-mps"] and desks["removed"] == []
        doc = vn.config_doc()
        doc["service_levels"] = [{"priority": "flash", "stage": "read",
                                  "within_seconds": 42.0, "escalate": True}]
        doc["gateway"]["id"] = "vn-new"
        doc["limits"]["burst"] = 7
        doc["federation"] = {**doc["federation"], "health_seconds": 3.0}
        path.write_text(toml(doc))
        with capture_logs() as logs:
            answer = await reload.reload()
        assert answer["changes"] == ["service levels"]
        assert answer["needs_restart"] == ["[gateway] id", "[limits] burst",
                                           "[federation] health_seconds"]
        (restart,) = events(logs, "reload_needs_restart")
        assert restart["settings"] == answer["needs_restart"]
        flash_read = [lv for lv in vn.app[SERVICE_LEVELS].levels
                      if (lv.priority, lv.stage) == ("flash", "read")]
        assert [lv.within_seconds for lv in flash_read] == [42.0]
        assert len(vn.app[SERVICE_LEVELS].levels) == 9  # the defaults stay (issue 22, 8)
        assert vn.app[PARTNERS].config.federation.health_seconds == 0.1  # not applied
        assert events(logs, "service_levels_changed")
        # The same file again: nothing more to apply, the restart still named.
        again = await reload.reload()
        assert again["changes"] == [] and again["needs_restart"] == answer["needs_restart"]
    finally:
        await stop_all(vn)


async def test_a_partner_whose_url_changed_is_restarted_with_it(tmp_path: Path) -> None:
    vn, kh = make(tmp_path, "vn-mps"), make(tmp_path, "kh-cnp")
    pin(vn, kh)
    await started(vn)
    try:
        assert vn.app is not None
        path, reload = config_file(vn), reloader(vn)
        await reload.reload()  # desks seen from here on
        remove_partner(path, "kh-cnp")
        add_partner(path, "kh-cnp", "http://127.0.0.1:9", kh.key.public.fingerprint)
        with capture_logs() as logs:
            answer = await reload.reload()
        assert answer["changes"] == ["partner kh-cnp changed"]
        (changed,) = events(logs, "partner_changed")
        assert changed["url"] == "http://127.0.0.1:9"
        assert vn.app[PARTNERS].require("kh-cnp").config.url == "http://127.0.0.1:9"
        assert vn.app[PARTNER_LOOPS].running("kh-cnp") == ["refresh", "relay", "witness"]
    finally:
        await stop_all(vn)


async def test_the_admin_reload_of_a_gateway_without_a_reloader_is_refused(
        tmp_path: Path) -> None:
    vn = make(tmp_path, "vn-mps")
    await started(vn)
    try:
        assert vn.app is not None
        sock = tmp_path / "admin.sock"
        async with admin.serving(vn.app, sock):
            with pytest.raises(GatewayError, match="cannot reload its configuration"):
                await admin_request(sock, "POST", "/reload")
    finally:
        await stop_all(vn)

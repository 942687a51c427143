"""Response-time metrics across a border, scraped from the real /metrics listeners.

Viet Nam's gateway learns Cambodia's stages from what comes back: the signed receipt
(receipt, delivered), the forwarded read acknowledgement (read) and the relayed reply
(reply). A reply level of one millisecond makes the breach certain; the test waits for it
before answering.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.channels import admin
from gateway.channels import metrics as metrics_channel
from gateway.cli.admin import admin_request, format_status
from gateway.config import MetricsSection
from gateway.crypto.keys import GatewaySigningKey
from tests.helpers import Gw, free_socket, officers, pin, started, stop_all, until, watching

REPLY_WITHIN = 0.001


class MGw(Gw):
    def config_doc(self) -> dict[str, Any]:
        doc = super().config_doc()
        doc["metrics"] = {"check_seconds": 0.05}
        doc["service_levels"] = [
            {"priority": "flash", "stage": "read", "within_seconds": 3600},
            {"priority": "flash", "stage": "reply", "within_seconds": REPLY_WITHIN},
        ]
        return doc


@pytest.fixture
async def vn_kh(tmp_path: Path) -> AsyncIterator[tuple[Gw, Gw]]:
    vn, kh = (MGw(name, GatewaySigningKey.generate(), tmp_path / name, free_socket())
              for name in ("vn-mps", "kh-cnp"))
    pin(vn, kh)
    await started(vn, kh)
    yield vn, kh
    await stop_all(vn, kh)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@contextlib.asynccontextmanager
async def listener(gw: Gw, **settings: Any) -> AsyncIterator[str]:
    assert gw.app is not None
    section = MetricsSection(port=0, **settings)
    async with metrics_channel.serving(gw.app, section) as port:
        yield f"http://127.0.0.1:{port}/metrics"


def samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value, for every sample line of a Prometheus text page."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            found[key] = float(value)
    return found


def key(name: str, **kv: str) -> str:
    """A sample's key as the exposition writes it: labels in name order."""
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(kv.items())) + "}"


async def test_each_stage_of_a_flash_alert_is_measured_on_both_sides(vn_kh, http) -> None:
    vn, kh = vn_kh
    a, k = await officers(vn, kh, http)
    a_events, a_watch = await watching(a)
    k_events, k_watch = await watching(k)
    text = "Victim located at the Bavet crossing; team requested"
    sent = await a.send("hotline", "anti-trafficking@kh-cnp",
                        {"type": "hotline", "text": text}, priority="flash")
    mid = sent["id"]
    await until(lambda: any(e == "receipt" for e, _ in a_events), "the receipt")
    await k.read(mid)
    await until(lambda: any(e == "read" for e, _ in a_events), "the read ack back at VN")
    # Unanswered past its (1 ms) level: both desks are told, each by its own gateway.
    await until(lambda: any(e == "breach" for e, _ in a_events), "VN's breach event")
    await until(lambda: any(e == "breach" for e, _ in k_events), "KH's breach event")
    breach = next(d for e, d in a_events if e == "breach")
    assert (breach["id"], breach["stage"], breach["priority"]) == (mid, "reply", "flash")
    answer = await k.send("reply", "border-liaison@vn-mps", {"type": "reply", "text": "ok"},
                          priority="flash", in_reply_to=mid, thread=mid)
    await until(lambda: any(e == "reply" for e, _ in a_events), "the reply at VN")
    a_watch.cancel()
    k_watch.cancel()

    async with listener(vn) as vn_url, listener(kh) as kh_url:
        async def scrape(url: str) -> str:
            async with http.get(url) as response:
                assert response.status == 200
                assert response.content_type == "text/plain"
                return await response.text()

        out = {"direction": "outbound", "partner": "kh-cnp", "kind": "hotline",
               "priority": "flash"}
        inb = dict(out, direction="inbound", partner="vn-mps")

        async def observed(url: str, lbl: dict[str, str], stage: str) -> bool:
            page = samples(await scrape(url))
            return page.get(key("fpg_response_seconds_count", stage=stage, **lbl)) == 1
        for stage in ("receipt", "delivered", "read", "reply"):
            await until(lambda s=stage: observed(vn_url, out, s), f"VN's {stage} stage")
        for stage in ("delivered", "read", "reply"):
            await until(lambda s=stage: observed(kh_url, inb, s), f"KH's {stage} stage")
        vn_page, kh_page = await scrape(vn_url), await scrape(kh_url)
    vn_s, kh_s = samples(vn_page), samples(kh_page)
    assert vn.app is not None
    async with admin.serving(vn.app, vn.directory / "admin.sock"):
        status = await admin_request(vn.directory / "admin.sock", "GET", "/status")
    shown = format_status(status)
    assert "reply     flash          1" in shown  # one reply observed, flash
    # The two levels configured, and the defaults of the other priorities and stages:
    # only the flash reply was missed.
    breached = {(lv["priority"], lv["stage"]): lv["breaches"] for lv in status["service_levels"]}
    assert breached[("flash", "read")] == 0 and breached[("flash", "delivered")] == 0
    assert {k: n for k, n in breached.items() if n} == {("flash", "reply"): 1}
    assert vn_s[key("fpg_messages_total", outcome="accepted", **out)] == 1
    assert vn_s[key("fpg_messages_total", outcome="relayed", **out)] == 1
    assert vn_s[key("fpg_messages_total", outcome="read", **out)] == 1
    assert kh_s[key("fpg_messages_total", outcome="delivered", **inb)] == 1
    for side, direction in ((vn_s, "outbound"), (kh_s, "inbound")):
        assert side[key("fpg_service_level_breaches_total", direction=direction,
                        priority="flash", stage="reply")] == 1
        assert side[key("fpg_service_level_breaches_total", direction=direction,
                        priority="flash", stage="read")] == 0  # read within the hour
    assert vn_s['fpg_outbox_depth{partner="kh-cnp"}'] == 0
    assert vn_s['fpg_partner_up{partner="kh-cnp"}'] == 1
    assert vn_s["fpg_ledger_size"] > 0
    assert [v for key, v in vn_s.items()
            if key.startswith('fpg_gateway_info{gateway="vn-mps",')] == [1]
    # Label values are bounded: no message ids, desks, officers or text in the pages.
    for page in (vn_page, kh_page):
        for secret in (mid, answer["id"], text, "anti-trafficking", "border-liaison", "@"):
            assert secret not in page
    for secret in (mid, answer["id"], text, "anti-trafficking", "border-liaison", "off-"):
        assert secret not in shown and secret not in json.dumps(status)
        for value in set(re.findall(r'="([^"]*)"', page)):  # names, codes, numbers only
            assert re.fullmatch(r"[a-z0-9_.+-]{1,24}|\+Inf", value), value


async def test_metrics_behind_a_token(vn_kh, http, tmp_path) -> None:
    vn, _ = vn_kh
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-scrape-token-0123456789\n")
    async with listener(vn, token_file=token_file) as url:
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"},
                        {"Authorization": "Basic czNjcmV0"}):
            async with http.get(url, headers=headers) as response:
                assert response.status == 401
                assert "fpg_" not in await response.text()
        good = {"Authorization": "Bearer s3cret-scrape-token-0123456789"}
        async with http.get(url, headers=good) as response:
            assert response.status == 200
            assert "fpg_ledger_size" in await response.text()

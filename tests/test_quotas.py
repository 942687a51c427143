"""Quotas and the disk reserve (gateway/officers/quotas.py): a flood of messages is
refused before anything is stored, with a code and a time to retry, and a restart of
the gateway gives nobody their day back."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path

import aiohttp
import pytest

from gateway.app import create_app
from gateway.appkeys import CLOCK, DELIVERY, STORE
from gateway.cli.process import ServerProcess
from gateway.client.api import ApiError, GatewayClient
from gateway.client.roster import Roster
from gateway.clock import ManualClock
from gateway.config import parse_config
from gateway.crypto.keyfile import KeyBundle
from gateway.crypto.keys import ROLE_GATEWAY_SIGNING, GatewaySigningKey
from gateway.officers.quotas import DiskReserveError, QuotaExceededError, Quotas
from tests.helpers import enroll_invited, enrolled_officer, running_gateway

KEY = GatewaySigningKey(b"\x61" * 32)
MIB = 1024 * 1024


def quotas(free: int = 10 * 1024 * MIB) -> tuple[Quotas, ManualClock]:
    clock = ManualClock()
    return Quotas(clock, officer_per_day=10 * MIB, desk_per_day=15 * MIB,
                  data_dir=Path("/"), reserve_bytes=100 * MIB, free=lambda _: free), clock


def test_an_officers_day_refills_evenly_and_a_refusal_costs_nothing() -> None:
    q, clock = quotas()
    q.charge("off-a", "desk@vn", 6 * MIB)
    with pytest.raises(QuotaExceededError) as spent:
        q.charge("off-a", "desk@vn", 6 * MIB)
    assert spent.value.code == "quota_exceeded" and spent.value.http_status == 429
    assert spent.value.retry_after == pytest.approx(2 * MIB / (10 * MIB / 86_400), rel=0.01)
    q.charge("off-a", "desk@vn", 4 * MIB)  # the refused message took nothing
    clock.advance(86_400 * 0.6)
    q.charge("off-a", "desk@vn", 5 * MIB)  # 6 MiB back after 0.6 of a day
    with pytest.raises(QuotaExceededError) as never:
        q.charge("off-b", "other@vn", 11 * MIB)
    assert never.value.retry_after is None and "larger than a day's" in never.value.message


def test_a_desks_officers_share_its_day() -> None:
    q, _ = quotas()
    q.charge("off-a", "desk@vn", 8 * MIB)
    with pytest.raises(QuotaExceededError, match="desk@vn's quota"):
        q.charge("off-b", "desk@vn", 8 * MIB)
    q.charge("off-b", "other@vn", 8 * MIB)


def test_the_disk_reserve_is_kept() -> None:
    q, _ = quotas(free=101 * MIB)
    q.charge("off-a", "desk@vn", MIB // 2)
    with pytest.raises(DiskReserveError) as full:
        q.charge("off-a", "desk@vn", 2 * MIB)
    assert full.value.code == "disk_reserve" and full.value.http_status == 507


async def test_a_flood_is_refused_before_anything_is_stored(tmp_path, aiohttp_server) -> None:
    config = parse_config(
        {"gateway": {"id": "vn-mps", "public_url": "http://127.0.0.1:1",
                     "data_dir": str(tmp_path)},
         "keys": {"file": "unused.key"}, "log": {"level": "error"},
         "limits": {"officer_bytes_per_day": 8 * 1024}}, tmp_path / "gw.toml")
    app = create_app(config, KeyBundle("vn-mps", {ROLE_GATEWAY_SIGNING: KEY}))
    server = await aiohttp_server(app)
    for desk in ("trafficking", "border-liaison"):
        await app[STORE].add_desk(desk, None, app[CLOCK].now_ms())
    async with aiohttp.ClientSession() as http:
        a = await enrolled_officer(app, server, http, "trafficking")
        await enrolled_officer(app, server, http, "border-liaison")
        text = {"type": "hotline", "text": "x" * 3000}
        sent = [await a.send("hotline", "border-liaison", text) for _ in range(2)]
        with pytest.raises(ApiError) as refused:
            await a.send("hotline", "border-liaison", text)
        assert (refused.value.status, refused.value.code) == (429, "quota_exceeded")
        app[DELIVERY].quotas.free = lambda _: 0  # the disk fills up
        app[DELIVERY].quotas.officers.per_day = 1e12
        app[DELIVERY].quotas.officers.rate = 1e12
        with pytest.raises(ApiError) as full:
            await a.send("hotline", "border-liaison", text)
        assert (full.value.status, full.value.code) == (507, "disk_reserve")
    with sqlite3.connect(tmp_path / "gateway.sqlite3") as db:
        assert db.execute("SELECT id FROM messages ORDER BY mseq").fetchall() == [
            (s["id"],) for s in sent]


def test_the_days_budgets_are_replayed_from_what_was_stored() -> None:
    """Sends replayed at start leave the budgets as the charges themselves did."""
    live, clock = quotas()
    start = clock.now_ms()
    sends = []
    for k, (officer, size) in enumerate([("off-a", 3 * MIB), ("off-b", 5 * MIB),
                                         ("off-a", 4 * MIB)]):
        live.charge(officer, "desk@vn", size)
        sends.append((officer, "desk@vn", clock.now_ms(), size))
        clock.advance(3600 * (k + 1))
    restored, later = quotas()
    later.advance((clock.now_ms() - start) / 1000)
    restored.restore(sends, clock.now_ms())
    for budgets, again, key in ((live.officers, restored.officers, "off-a"),
                                (live.officers, restored.officers, "off-b"),
                                (live.desks, restored.desks, "desk@vn")):
        assert again.level(key) == pytest.approx(budgets.level(key))
    assert restored.officers.level("off-c") == 10 * MIB  # nobody else was charged
    restored.restore([("off-c", "x@vn", start - 1, MIB)], start + 86_400_000)
    assert restored.officers.level("off-c") == 10 * MIB  # a day later it is all back


def test_a_restarted_gateway_still_refuses_an_officer_whose_day_is_spent(
        tmp_path: Path) -> None:
    """A real ``gateway run`` process, stopped and started again on the same database."""
    limits = "[limits]\nofficer_bytes_per_day = 8192\n"
    text = {"type": "hotline", "text": "x" * 3000}
    with running_gateway(tmp_path / "gw", ("trafficking", "border-liaison"),
                         limits) as running:
        async def spend() -> GatewayClient:
            async with aiohttp.ClientSession() as http:
                roster = Roster()
                for desk in ("trafficking", "border-liaison"):
                    creds, answer = await enroll_invited(http, running, desk)
                    await roster.join(http, creds, answer)
                    if desk == "trafficking":
                        sender = creds
                a = GatewayClient(http, sender)
                for _ in range(2):
                    assert (await a.send("hotline", "border-liaison", text))["status"] == \
                        "accepted"
                with pytest.raises(ApiError) as refused:
                    await a.send("hotline", "border-liaison", text)
                assert (refused.value.status, refused.value.code) == (429, "quota_exceeded")
                return a

        a = asyncio.run(spend())
    # Stopped; a new process on the same data directory (its memory starts empty).
    with ServerProcess.gateway(running.cfg) as server:
        async def after_restart() -> None:
            async with aiohttp.ClientSession() as http:
                creds = dataclasses.replace(a.creds, gateway_url=server.url)
                again = GatewayClient(http, creds)
                with pytest.raises(ApiError) as refused:
                    await again.send("hotline", "border-liaison", text)
                assert (refused.value.status, refused.value.code) == (429, "quota_exceeded")
                assert refused.value.message.startswith("your quota")

        asyncio.run(after_restart())
    assert server.returncode == 0
    with sqlite3.connect(running.cfg.parent / "data" / "gateway.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone() == (2,)

"""Stored notices through real gateways on 127.0.0.1: an officer who was not watching
finds breaches, escalations and non-delivery notices later, reads them by cursor, and a
stream opened after them with a cursor replays them.

The escalation test injects a ManualClock (the service-level task sleeps on it); the
non-delivery test lets a short-lived message expire for real while the partner is down.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.appkeys import DIRECTORY, NOTICES, STORE
from gateway.client.api import ApiError, GatewayClient
from gateway.client.cli import notice_text
from gateway.clock import ManualClock
from gateway.crypto.keys import GatewaySigningKey
from gateway.protocol.notices import BreachNotice, NonDeliveryNotice
from tests.helpers import (
    T0,
    FaultGw,
    fault_gw,
    make,
    officers,
    pin,
    started,
    stop_all,
    until,
)


class LevelsGw(FaultGw):
    def config_doc(self) -> dict[str, Any]:
        doc = super().config_doc()
        doc["metrics"] = {"check_seconds": 15}
        doc["service_levels"] = [
            {"priority": "flash", "stage": "read", "within_seconds": 900, "escalate": True}]
        return doc


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def first_events(client: GatewayClient, n: int,
                       since: int | None) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    async for kind, data in client.stream(since=since):
        events.append((kind, data))
        if len(events) == n:
            break
    return events


async def test_a_supervisor_who_was_offline_finds_the_escalation_in_the_inbox(
        tmp_path: Path, http) -> None:
    clock = ManualClock(T0)
    base = fault_gw(tmp_path, "vn-mps", clock)
    vn = LevelsGw(base.id, base.key, base.directory, base.sock, federation=base.federation,
                  clock=clock)
    await vn.start()
    try:
        assert vn.app is not None
        store = vn.app[STORE]
        await store.add_desk("supervisors", None, T0)
        await store.add_desk("border-liaison", "supervisors", T0)
        await store.add_desk("trafficking", None, T0)
        await vn.app[DIRECTORY].reload()
        sender = await vn.officer(http, "trafficking")
        desk = await vn.officer(http, "border-liaison")
        boss = await vn.officer(http, "supervisors")  # signed in, not watching
        for officer in (sender, desk, boss):
            officer.clock = clock  # the gateway's time: envelopes are dated by it
        sent = await sender.send("hotline", "border-liaison@vn-mps",
                                 {"type": "hotline", "text": "Victim located"},
                                 priority="flash")
        await until(lambda: "service_levels" in clock.asleep(), "the checker to sleep")
        clock.advance(901)  # unread past the 900 s of flash/read

        async def escalated() -> bool:
            return bool((await boss.notices("supervisors", unread=True))["notices"])
        await until(escalated, "the escalation in the supervisor's notices")

        listed = await boss.notices("supervisors", unread=True)
        assert listed["unread"] == 1
        (n,) = listed["notices"]
        assert (n["event"], n["id"], n["late_desk"], n["stage"], n["read"]) == (
            "escalation", sent["id"], "border-liaison@vn-mps", "read", None)
        signed = await boss.open_signed_notice(n)  # the gateway's signature, kept
        assert isinstance(signed, BreachNotice)
        assert (signed.message_id, signed.supervisor, signed.due_ms) == (
            sent["id"], "supervisors@vn-mps", T0 + 900_000)
        line = await notice_text(boss, n)  # what `gateway-client inbox` prints for it
        assert f"ESCALATED: flash hotline {sent['id']} not read by border-liaison" in line
        tampered = {**n, "notice": n["notice"][:-8] + "AAAAAAA="}
        assert "DOES NOT VERIFY" in await notice_text(boss, tampered)

        # The late desk has its own (unsigned) breach notice; unread is per officer.
        (late,) = (await desk.notices("border-liaison", unread=True))["notices"]
        assert (late["event"], late["id"], late["due"]) == ("breach", sent["id"],
                                                            T0 + 900_000)
        # Read later by cursor: reading it marks it read, for this officer only.
        again = await boss.notice("supervisors", n["cursor"])
        assert again["notice"] == n["notice"] and again["read"] == clock.now_ms()
        after = await boss.notices("supervisors")
        assert after["unread"] == 0 and after["notices"][-1]["read"] == clock.now_ms()
        assert (await boss.notices("supervisors", unread=True))["notices"] == []
        assert (await desk.notices("border-liaison"))["unread"] == 1
        marked = await desk.mark_notices_read("border-liaison", [late["cursor"]])
        assert (marked["marked"], marked["unread"]) == (1, 0)
        with pytest.raises(ApiError) as missing:
            await boss.notice("supervisors", late["cursor"])  # border-liaison's, not this
        assert (missing.value.status, missing.value.code) == (404, "unknown_notice")
        with pytest.raises(ApiError) as foreign:  # not a member of the sending desk
            await sender.notices("supervisors")
        assert (foreign.value.status, foreign.value.code) == (403, "not_a_member")
    finally:
        await stop_all(vn)


async def test_a_non_delivery_notice_waits_in_the_sender_desks_notices_and_replays(
        tmp_path: Path, http) -> None:
    vn, kh = make(tmp_path, "vn-mps"), make(tmp_path, "kh-cnp")
    pin(vn, kh)
    await started(vn, kh)
    try:
        a, _ = await officers(vn, kh, http)
        await kh.stop()
        short = await a.send("hotline", "anti-trafficking@kh-cnp",
                             {"type": "hotline", "text": "1"}, lifetime_ms=1500)
        await until(lambda: vn.rows("SELECT 1 FROM desk_notices WHERE kind = 'expired'"),
                    "the non-delivery notice", 15)
        # Nobody was watching: the sending desk's notices hold it, signed.
        listed = await a.notices("border-liaison", unread=True)
        (n,) = [x for x in listed["notices"] if x["event"] == "expired"]
        assert (n["id"], n["partner"], n["reason"]) == (short["id"], "kh-cnp", "expired")
        signed = await a.open_signed_notice(n)
        assert isinstance(signed, NonDeliveryNotice) and signed.message_id == short["id"]
        assert "NOT DELIVERED" in await notice_text(a, n)

        # A stream opened afterwards with a cursor before it receives it, once; one
        # opened without a cursor does not; a later notice reaches both live.
        replay = asyncio.create_task(first_events(a, 2, since=n["cursor"] - 1))
        live = asyncio.create_task(first_events(a, 1, since=None))
        await asyncio.sleep(0.3)  # both subscribed
        later = await a.send("hotline", "anti-trafficking@kh-cnp",
                             {"type": "hotline", "text": "2"}, lifetime_ms=1500)
        replayed = await asyncio.wait_for(replay, 15)
        assert [(k, d["id"]) for k, d in replayed] == [("expired", short["id"]),
                                                        ("expired", later["id"])]
        assert replayed[0][1]["cursor"] == n["cursor"]
        assert replayed[0][1]["notice"] == n["notice"]  # as stored, as listed
        assert [(k, d["id"]) for k, d in await asyncio.wait_for(live, 15)] == [
            ("expired", later["id"])]
        # A stream opened after both with the first's cursor gets only the second.
        rest = await asyncio.wait_for(first_events(a, 1, since=n["cursor"]), 15)
        assert [(k, d["id"]) for k, d in rest] == [("expired", later["id"])]
    finally:
        await stop_all(vn, kh)


async def test_a_notice_published_while_a_stream_replays_is_sent_once(
        tmp_path: Path, http, monkeypatch: pytest.MonkeyPatch) -> None:
    vn = make(tmp_path, "vn-mps")
    await started(vn)
    try:
        assert vn.app is not None
        officer = await vn.officer(http, "border-liaison")
        feed, store = vn.app[NOTICES], vn.app[STORE]

        async def breach(mid: str) -> None:
            async with store.transaction() as tx:
                await tx.execute("INSERT INTO desk_notices (desk, kind, at_ms, message_id,"
                                 " detail) VALUES ('border-liaison', 'breach', 1, ?, ?)",
                                 (mid, f'{{"id":"{mid}"}}'))
            await feed.catch_up()
        await breach("a" * 32)
        replay = feed.replay

        async def racing(desks: Any, since: int) -> Any:
            await breach("b" * 32)  # after the stream subscribed, before it reads
            return await replay(desks, since)
        monkeypatch.setattr(feed, "replay", racing)
        stream = asyncio.create_task(first_events(officer, 4, since=0))
        await asyncio.sleep(0.3)  # replayed: the joined, a and b
        await breach("c" * 32)  # live: b must not come a second time before it
        events = await asyncio.wait_for(stream, 15)
        assert [(k, d.get("id")) for k, d in events] == [
            ("membership", None), ("breach", "a" * 32), ("breach", "b" * 32),
            ("breach", "c" * 32)]
    finally:
        await stop_all(vn)


async def test_a_stream_refuses_a_bad_since(tmp_path: Path, http) -> None:
    vn = make(tmp_path, "vn-mps")
    vn.key = GatewaySigningKey.generate()
    await started(vn)
    try:
        officer = await vn.officer(http, "border-liaison")
        with pytest.raises(ApiError) as bad:
            await first_events(officer, 1, since=-1)
        assert (bad.value.status, bad.value.code) == (400, "bad_parameter")
    finally:
        await stop_all(vn)

"""Admission to a desk: a dishonest operator cannot quietly add a reader (issue 20, item 1).

A real gateway process on 127.0.0.1; the operator's commands run as their own processes,
as in production. The operator invites and enrolls keys of its own on a desk that has a
member: they wait, unsealed-for, until a member admits them after comparing the safety
code. A store tampered with behind the gateway's back (an admission with a forged
signature, an "operator" admission onto a desk that has members, signed with the
gateway's own key) is caught by the sender's client, which refuses to seal.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from gateway.client.api import ApiError, GatewayClient
from gateway.client.roster import Roster
from gateway.crypto.envelope import peek_header
from gateway.crypto.keys import (
    OfficerSigningKey,
)
from gateway.errors import ClientError, CryptoError
from gateway.protocol.admission import OPERATOR, admission_text
from tests.helpers import (
    Running,
    enroll_invited,
    gateway,
    gateway_key,
    running_gateway,
    tamper,
)

ROSTER = Roster()
BL = "border-liaison@vn-mps"


@pytest.fixture(scope="module")
def running(tmp_path_factory) -> Iterator[Running]:
    directory = tmp_path_factory.mktemp("admission") / "gw"
    with running_gateway(directory, ("trafficking", "border-liaison", "victim-support")) as gw:
        yield gw


async def enrolled(http: aiohttp.ClientSession, running: Running, desk: str
                   ) -> tuple[GatewayClient, dict[str, Any]]:
    """An officer enrolled with an operator's code; not admitted anywhere by the test."""
    creds, answer = await enroll_invited(http, running, desk)
    return GatewayClient(http, creds), answer


async def member(http: aiohttp.ClientSession, running: Running,
                 desk: str) -> GatewayClient:
    client, answer = await enrolled(http, running, desk)
    await ROSTER.join(http, client.creds, answer)
    return client


async def recipients_of(client: GatewayClient, message_id: str) -> list[str]:
    _, data, _ = await client.request("GET", f"/v1/messages/{message_id}")
    return sorted(peek_header(data).recipients)  # the X25519 key ids it was sealed for


def test_the_operators_own_keys_wait_until_a_member_admits_them(running) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as http:
            m1 = await member(http, running, "border-liaison")
            sender = await member(http, running, "trafficking")
            rogue, answer = await enrolled(http, running, "border-liaison")
            assert answer["pending"] == [BL]

            # The gateway does not bind it: no desk, no inbox; no client seals for it.
            await rogue.sign_in()
            with pytest.raises(ApiError) as refused:
                await rogue.inbox("border-liaison")
            assert refused.value.code == "not_a_member"
            first = (await sender.send("hotline", "border-liaison",
                                       {"type": "hotline", "text": "before"}))["id"]
            keys = await recipients_of(m1, first)
            assert keys == [m1.creds.encryption.public.key_id]
            with pytest.raises(ApiError):
                await rogue.open(first)

            # The desk's members see it waiting, with the code its keys give.
            listed = await m1.members("border-liaison")
            assert [p["officer"] for p in listed["pending"]] == [rogue.creds.officer_id]
            assert [(m["officer"], m["admitted_by"]) for m in listed["members"]] == [
                (m1.creds.officer_id, OPERATOR)]

            # A wrong safety code admits nothing.
            with pytest.raises(ClientError) as mismatch:
                await m1.admit("border-liaison", rogue.creds.officer_id, "0000 " * 5)
            assert mismatch.value.code == "safety_code_mismatch"
            assert [p["officer"] for p in (await m1.members("border-liaison"))["pending"]] == [
                rogue.creds.officer_id]

            # Admitted after comparing the code: new messages are sealed for it too.
            await m1.admit("border-liaison", rogue.creds.officer_id,
                           rogue.my_safety_code("border-liaison"))
            listed = await m1.members("border-liaison")
            assert listed["pending"] == []
            assert (rogue.creds.officer_id, m1.creds.officer_id) in [
                (m["officer"], m["admitted_by"]) for m in listed["members"]]
            second = (await sender.send("hotline", "border-liaison",
                                        {"type": "hotline", "text": "after"}))["id"]
            assert (await rogue.read(second)).payload["text"] == "after"
            with pytest.raises(CryptoError) as not_for_it:  # history is not shared by this
                await rogue.open(first)
            assert not_for_it.value.code == "not_a_recipient"
    asyncio.run(scenario())


def test_the_operator_cannot_admit_onto_a_desk_that_has_members(running) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as http:
            await member(http, running, "victim-support")
            rogue, _ = await enrolled(http, running, "victim-support")
            return rogue.creds.officer_id
    rogue = asyncio.run(scenario())
    result = gateway("officers", "admit", rogue, "--desk", "victim-support", "--config",
                     str(running[1]))
    assert result.returncode != 0
    assert "has members: one of them admits" in result.stderr


@pytest.mark.parametrize("forgery", ["forged_member_signature", "operator_onto_a_staffed_desk"])
def test_a_reader_added_behind_the_gateway_is_caught_by_the_client(running, forgery) -> None:
    desk = f"desk-{forgery.replace('_', '-')}"
    cfg = running[1]
    assert gateway("desks", "add", desk, "--config", str(cfg)).returncode == 0

    async def scenario() -> None:
        async with aiohttp.ClientSession() as http:
            m1 = await member(http, running, desk)
            sender = await member(http, running, "trafficking")
            rogue, _ = await enrolled(http, running, desk)
            at = m1.clock.now_ms()
            text = admission_text(f"{desk}@vn-mps", rogue.creds.officer_id,
                                  rogue.creds.signing.public.b64(),
                                  rogue.creds.encryption.public.b64(),
                                  m1.creds.officer_id if forgery.startswith("forged")
                                  else OPERATOR, at)
            if forgery == "forged_member_signature":  # m1 never signed this
                by, signature = m1.creds.officer_id, OfficerSigningKey.generate().sign(text)
            else:  # the operator holds the gateway's key, but m1 is a member
                by, signature = OPERATOR, gateway_key(cfg).sign(text)
            tamper(cfg, "INSERT INTO admissions VALUES (?,?,?,?,?)", rogue.creds.officer_id,
                   desk, by, at, signature)

            async def listed() -> bool:
                desks = await sender.directory(refresh=True)
                return len(desks[f"{desk}@vn-mps"].members) == 2
            for _ in range(100):
                if await listed():
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the tampered admission never reached the directory")
            with pytest.raises(ClientError) as refused:
                await sender.send("hotline", desk, {"type": "hotline", "text": "secret"})
            assert refused.value.code == "unproven_member"
            assert rogue.creds.officer_id in refused.value.message
    asyncio.run(scenario())


def test_the_desk_is_told_who_waits_joins_and_leaves(running) -> None:
    cfg = running[1]
    assert gateway("desks", "add", "told", "--config", str(cfg)).returncode == 0

    async def scenario() -> tuple[str, str]:
        async with aiohttp.ClientSession() as http:
            m1 = await member(http, running, "told")
            events: list[tuple[str, Any]] = []
            connected = asyncio.Event()

            async def watch() -> None:
                async for kind, data in m1.stream(connected=connected):
                    events.append((kind, data))
            watcher = asyncio.create_task(watch())
            await asyncio.wait_for(connected.wait(), 10)
            newcomer, _ = await enrolled(http, running, "told")
            officer = newcomer.creds.officer_id
            await m1.admit("told", officer, newcomer.my_safety_code("told"))
            revoked = await asyncio.to_thread(
                gateway, "officers", "revoke", officer, "--config", str(cfg))
            assert revoked.returncode == 0, revoked.stderr
            for _ in range(200):
                if len([e for e in events if e[0] == "membership"]) >= 3:
                    break
                await asyncio.sleep(0.05)
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            told = [(d["kind"], d["officer"], d["by"]) for k, d in events if k == "membership"]
            assert told == [("pending", officer, None), ("joined", officer, m1.creds.officer_id),
                            ("left", officer, None)]
            listed = (await m1.notices("told"))["notices"]
            assert [(n["kind"], n["officer"]) for n in listed] == [
                ("joined", m1.creds.officer_id), ("pending", officer), ("joined", officer),
                ("left", officer)]
            return m1.creds.officer_id, officer
    first, officer = asyncio.run(scenario())
    with sqlite3.connect(cfg.parent / "data" / "gateway.sqlite3") as db:  # stored, not only sent
        rows = db.execute("SELECT kind, officer_id, by FROM desk_notices WHERE desk = 'told'"
                          " ORDER BY seq").fetchall()
    assert rows == [("joined", first, "operator"), ("pending", officer, None),
                    ("joined", officer, first), ("left", officer, None)]

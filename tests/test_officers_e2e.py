"""Acceptance: a real gateway process on 127.0.0.1, officers of three desks.

Officer A (desk trafficking) sends a flash hotline to desk border-liaison, which has two
enrolled officers; both read it, officer C of a third desk cannot; the read
acknowledgements and the reply reach A's live stream; `gateway ledger prove` shows
accept, delivery, reads and reply with proofs that verify. Operator commands run as
their own processes against the running gateway's database.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.client.api import ApiError, GatewayClient
from gateway.client.roster import Roster
from gateway.crypto.note import NoteVerifier
from gateway.protocol.checkpoint import open_checkpoint
from gateway.protocol.merkle import leaf_hash, verify_inclusion
from tests.helpers import Running, enroll_invited, gateway, running_gateway

TEXT = "Khẩn: nạn nhân ở cửa khẩu Mộc Bài — ជនរងគ្រោះ — 受害者 — ຜູ້ເຄາະຮ້າຍ — ผู้เสียหาย"

MEMBERS = Roster()  # the module's gateway: who admits whom


@pytest.fixture(scope="module")
def running(tmp_path_factory) -> Iterator[Running]:
    directory = tmp_path_factory.mktemp("e2e") / "gw"
    with running_gateway(directory, ("trafficking", "border-liaison", "victim-support"),
                         "[ledger]\ncheckpoint_interval = 0.5\n") as gw:
        yield gw


async def officer(http: aiohttp.ClientSession, url: str, cfg: Path, fingerprint: str,
                  desk: str) -> GatewayClient:
    creds, answer = await enroll_invited(http, Running(url, cfg, fingerprint), desk)
    await MEMBERS.join(http, creds, answer)
    return GatewayClient(http, creds)


async def scenario(url: str, cfg: Path, fingerprint: str) -> str:
    async with aiohttp.ClientSession() as http:
        a = await officer(http, url, cfg, fingerprint, "trafficking")
        b1 = await officer(http, url, cfg, fingerprint, "border-liaison")
        b2 = await officer(http, url, cfg, fingerprint, "border-liaison")
        c = await officer(http, url, cfg, fingerprint, "victim-support")

        events: list[tuple[str, dict]] = []
        connected = asyncio.Event()

        async def watch() -> None:
            async for kind, data in a.stream(connected=connected):
                events.append((kind, data))

        watcher = asyncio.create_task(watch())
        try:
            await asyncio.wait_for(connected.wait(), timeout=10)
            sent = await a.send("hotline", "border-liaison", {"type": "hotline", "text": TEXT},
                                priority="flash")
            mid = sent["id"]
            for b in (b1, b2):
                assert (await b.read(mid)).payload["text"] == TEXT
            for attempt in (c.open(mid), c.inbox("border-liaison")):
                with pytest.raises(ApiError) as info:
                    await attempt
                assert info.value.status in (403, 404)
            reply = await b2.reply(await b2.open(mid), {"type": "reply", "text": "Đã rõ. 收到。"})
            for _ in range(200):
                kinds = [k for k, _ in events]
                if kinds.count("read") >= 2 and "reply" in kinds:
                    break
                await asyncio.sleep(0.05)
            kinds = [k for k, d in events]
            assert kinds.count("read") == 2, events
            assert ("reply", reply["id"]) in [(k, d.get("reply")) for k, d in events]
            assert ("message", reply["id"]) in [(k, d.get("id")) for k, d in events]
            assert (await a.read(reply["id"])).payload["text"] == "Đã rõ. 收到。"
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

        # Revocation by the operator takes effect on the running gateway at once.
        assert gateway("officers", "revoke", c.creds.officer_id, "--config",
                       str(cfg)).returncode == 0
        for _ in range(40):
            try:
                await c.inbox("victim-support")
            except ApiError as exc:
                assert exc.code == "revoked"
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the revoked officer could still use the gateway")
        return mid


def test_hotline_between_desks_on_a_real_gateway(running) -> None:
    url, cfg, fingerprint = running
    mid = asyncio.run(scenario(url, cfg, fingerprint))
    deadline = time.monotonic() + 20
    while True:  # the running gateway checkpoints every 0.5 s
        proved = gateway("ledger", "prove", mid, "--config", str(cfg))
        if proved.returncode == 0:
            doc = json.loads(proved.stdout)
            if len(doc["events"]) == 5:
                break
        assert time.monotonic() < deadline, proved.stderr
        time.sleep(0.2)
    from gateway.crypto.keyfile import read_public
    from gateway.crypto.keys import ROLE_GATEWAY_SIGNING, VerifyKey

    key_file = cfg.parent / "keys" / "gateway.key"
    key = VerifyKey.from_b64(read_public(key_file)[1][ROLE_GATEWAY_SIGNING], ROLE_GATEWAY_SIGNING)
    cp = open_checkpoint(doc["checkpoint"]["note"].encode(), "fpg/vn-mps",
                         [NoteVerifier("fpg/vn-mps", key)])
    types = []
    for event in doc["events"]:
        verify_inclusion(leaf_hash(event["entry"].encode()), event["seq"], cp.size,
                         [base64.b64decode(p) for p in event["inclusion_proof"]], cp.root)
        types.append(json.loads(event["entry"])["type"])
    assert types == ["accepted", "delivered", "read", "read", "replied"]
    assert gateway("ledger", "verify", "--config", str(cfg)).returncode == 0

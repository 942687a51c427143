"""Officers on one gateway, over real HTTP on 127.0.0.1: enroll, send, read, reply, stream."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path

import aiohttp
import pytest

from gateway.app import create_app
from gateway.appkeys import CLOCK, DIRECTORY, LEDGER, STORE
from gateway.client.api import ApiError, GatewayClient, enroll
from gateway.config import parse_config
from gateway.crypto.keyfile import KeyBundle
from gateway.crypto.keys import ROLE_GATEWAY_SIGNING, OfficerEncryptionKey, OfficerSigningKey
from gateway.errors import CryptoError
from gateway.officers.enrollment import new_code
from gateway.protocol.checkpoint import open_checkpoint
from gateway.protocol.merkle import leaf_hash, verify_inclusion
from gateway.protocol.officers import code_hash
from tests.helpers import GATEWAY_KEY, members_of

TEXT = "Nạn nhân được tìm thấy tại cửa khẩu — រកឃើញជនរងគ្រោះ — 已找到受害者 — ພົບ — พบ"


def config(tmp_path: Path, **limits: object):
    return parse_config(
        {"gateway": {"id": "vn-mps", "public_url": "http://127.0.0.1:1"},
         "keys": {"file": "unused.key"},
         "ledger": {"checkpoint_interval": 3600.0},
         "limits": limits},
        tmp_path / "gw.toml",
    )


class World:
    def __init__(self, server, http: aiohttp.ClientSession) -> None:
        self.server = server
        self.app = server.app
        self.http = http
        self.url = str(server.make_url("")).rstrip("/")

    async def officer(self, *desks: str) -> GatewayClient:
        store, now = self.app[STORE], self.app[CLOCK].now_ms()
        code = new_code()
        await store.add_enrollment_code(code_hash(code), list(desks), now, now + 3_600_000)
        creds, answer = await enroll(self.http, self.url, code, OfficerSigningKey.generate(),
                                     OfficerEncryptionKey.generate())
        await members_of(self.app).join(self.http, creds, answer)
        return GatewayClient(self.http, creds)


@pytest.fixture
async def world(tmp_path, aiohttp_server):
    app = create_app(config(tmp_path), KeyBundle("vn-mps", {ROLE_GATEWAY_SIGNING: GATEWAY_KEY}))
    server = await aiohttp_server(app)
    store = app[STORE]
    for desk in ("trafficking", "border-liaison", "victim-support"):
        await store.add_desk(desk, None, app[CLOCK].now_ms())
    async with aiohttp.ClientSession() as http:
        yield World(server, http)


async def collect(client: GatewayClient, events: list, ready: asyncio.Event) -> None:
    async for kind, data in client.stream(connected=ready):
        events.append((kind, data))


async def test_flash_hotline_read_acknowledged_and_answered(world) -> None:
    a = await world.officer("trafficking")
    b1 = await world.officer("border-liaison")
    b2 = await world.officer("border-liaison")
    c = await world.officer("victim-support")

    a_events: list = []
    ready = asyncio.Event()
    watcher = asyncio.create_task(collect(a, a_events, ready))
    await asyncio.wait_for(ready.wait(), timeout=10)

    sent = await a.send("hotline", "border-liaison", {"type": "hotline", "text": TEXT},
                        priority="flash")
    assert sent["status"] == "accepted" and len(sent["ledger"]) == 2
    mid = sent["id"]

    for b in (b1, b2):
        inbox = await b.inbox("border-liaison")
        assert [m["id"] for m in inbox["messages"]] == [mid]
        assert inbox["messages"][0]["priority"] == "flash"
        opened = await b.read(mid)
        assert opened.payload["text"] == TEXT and opened.sender_officer == a.creds.officer_id

    with pytest.raises(ApiError) as info:  # C's desk neither sent nor received it
        await c.open(mid)
    assert info.value.status == 404
    _, raw, _ = await b1.request("GET", f"/v1/messages/{mid}")
    from gateway.crypto.envelope import open_envelope, verify_envelope

    with pytest.raises(CryptoError):  # and C could not open it with its own key anyway
        open_envelope(verify_envelope(raw, a.creds.signing.public), c.creds.encryption)
    with pytest.raises(ApiError) as info:
        await c.inbox("border-liaison")
    assert info.value.status == 403 and info.value.code == "not_a_member"

    original = await b1.open(mid)
    replied = await b1.reply(original, {"type": "reply", "text": "Đã nhận. Team en route."})
    reply = await a.read(replied["id"])
    assert reply.header.in_reply_to == mid and reply.header.thread == mid

    for _ in range(100):
        kinds = [k for k, _ in a_events]
        if kinds.count("read") >= 2 and "reply" in kinds and "message" in kinds:
            break
        await asyncio.sleep(0.05)
    kinds = [k for k, _ in a_events]
    assert kinds.count("read") == 2 and "reply" in kinds and "message" in kinds
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)

    status = await a.status(mid)
    assert status["first_read"] is not None and status["first_reply"] is not None
    assert len(status["reads"]) == 2
    assert [e["type"] for e in status["events"]] == ["accepted", "delivered", "read", "read",
                                                      "replied"]

    # The ledger proves accept, delivery, both reads and the reply.
    ledger = world.app[LEDGER]
    await ledger.make_checkpoint()
    proof = await ledger.prove_message(mid)
    cp = open_checkpoint(proof["checkpoint"]["note"].encode(), ledger.origin, ledger.verifiers)
    for event in proof["events"]:
        verify_inclusion(leaf_hash(event["entry"].encode()), event["seq"], cp.size,
                         [base64.b64decode(p) for p in event["inclusion_proof"]], cp.root)
    assert [json.loads(e["entry"])["type"] for e in proof["events"]] == [
        "accepted", "delivered", "read", "read", "replied"]


async def test_read_acknowledgement_is_once_per_officer(world) -> None:
    a, b = await world.officer("trafficking"), await world.officer("border-liaison")
    mid = (await a.send("hotline", "border-liaison", {"type": "hotline", "text": "x"}))["id"]
    message = await b.open(mid)
    assert (await b.acknowledge(message))["status"] == "recorded"
    assert (await b.acknowledge(message))["status"] == "duplicate"
    with pytest.raises(ApiError) as info:  # the sender's desk does not acknowledge reading
        await a.acknowledge(message)
    assert info.value.status == 403
    with pytest.raises(CryptoError):  # nor can it open what it sealed for the other desk
        await a.open(mid)


async def test_case_notification_round_trips(world) -> None:
    a, b = await world.officer("trafficking"), await world.officer("border-liaison")
    case = {"type": "case", "case_ref": "VN-2026-0042", "legal_basis": "treaty",
            "offence": "trafficking in persons (ລັກລອບຄ້າມະນຸດ)",
            "requested_actions": ["locate person", "collect evidence"],
            "deadline": "2026-12-31", "text": "ព័ត៌មានបន្ថែម 详情"}
    mid = (await a.send("case", "border-liaison", case, priority="priority"))["id"]
    assert (await b.read(mid)).payload == case


async def test_sessions_challenges_cannot_be_replayed_and_revocation_is_immediate(world) -> None:
    from gateway.protocol.officers import session_text

    a = await world.officer("trafficking")
    creds = a.creds
    async with world.http.post(world.url + "/v1/session/challenge",
                               json={"officer": creds.officer_id}) as r:
        challenge = base64.b64decode((await r.json())["challenge"])
    body = {"officer": creds.officer_id, "challenge": base64.b64encode(challenge).decode(),
            "signature": base64.b64encode(creds.signing.sign(
                session_text("vn-mps", creds.officer_id, challenge))).decode()}
    async with world.http.post(world.url + "/v1/session", json=body) as r:
        assert r.status == 200
    async with world.http.post(world.url + "/v1/session", json=body) as r:  # replayed
        assert r.status == 401 and (await r.json())["error"] == "bad_challenge"
    assert (await a.inbox("trafficking"))["messages"] == []
    await world.app[STORE].revoke_officer(creds.officer_id, world.app[CLOCK].now_ms())
    await world.app[DIRECTORY].reload()
    with pytest.raises(ApiError) as info:
        await a.inbox("trafficking")
    assert info.value.status == 401 and info.value.code == "revoked"


async def test_large_envelope_arriving_in_many_chunks(world) -> None:
    a, b = await world.officer("trafficking"), await world.officer("border-liaison")
    from gateway.client.payload import attachment

    photo = os.urandom(2_000_000)  # 2 MB: many network reads
    doc = {"type": "hotline", "text": "ảnh", "attachments": [attachment("a.jpg", "image/jpeg",
                                                                        photo)]}
    mid = (await a.send("hotline", "border-liaison", doc))["id"]
    assert (await b.read(mid)).payload == doc


async def test_a_retry_is_answered_duplicate_even_after_the_desk_changed(world) -> None:
    a, b = await world.officer("trafficking"), await world.officer("border-liaison")
    directory = await a.directory()
    from gateway.crypto.envelope import EnvelopeHeader, new_message_id, seal_envelope

    mid = new_message_id()
    now = a.clock.now_ms()
    header = EnvelopeHeader(id=mid, kind="hotline", priority="flash", sender="trafficking@vn-mps",
                            recipient="border-liaison@vn-mps", created=now, expires=now + 60_000,
                            thread=mid)
    data = seal_envelope(header, b'{"text":"x","type":"hotline"}', a.creds.signing,
                         directory["border-liaison@vn-mps"].encryption_keys())
    post = ("POST", "/v1/messages")
    status, answer, _ = await a.request(*post, data=data,
                                        headers={"Content-Type": "application/vnd.fpg.envelope"})
    assert status == 201
    await world.officer("border-liaison")  # the desk now has another officer
    status, answer, _ = await a.request(*post, data=data,
                                        headers={"Content-Type": "application/vnd.fpg.envelope"})
    assert status == 200 and json.loads(answer)["status"] == "duplicate"
    assert len((await b.inbox("border-liaison"))["messages"]) == 1

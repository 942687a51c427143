"""History for new members: earlier messages open after a member shares their keys
(issue 20, item 4).

A gateway on 127.0.0.1 (aiohttp's test server, real SQLite) whose clock, like the
officers' clients', is a manual one: messages are sent months before the newcomer joins.
Until a member shares the desk's history the newcomer cannot open them; after it, those
of the last 180 days open and older ones still do not. The gateway holds only wraps it
cannot open, and refuses shares that are not a member's.
"""

from __future__ import annotations

import base64
import hashlib
import re
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.app import create_app
from gateway.appkeys import CLOCK, STORE
from gateway.client.api import ApiError, GatewayClient, enroll
from gateway.client.roster import Roster
from gateway.clock import ManualClock
from gateway.crypto.keyfile import KeyBundle
from gateway.crypto.keys import ROLE_GATEWAY_SIGNING, OfficerEncryptionKey, OfficerSigningKey
from gateway.errors import ClientError, CryptoError
from gateway.officers.enrollment import new_code
from gateway.protocol.history import Share, share_text
from gateway.protocol.officers import code_hash
from tests.helpers import GATEWAY_KEY, T0, gateway_config

DAY = 86_400_000
TEXTS = {"200 days": "oldest: a trafficking route", "100 days": "a victim's location",
         "10 days": "a case deadline"}


class World:
    def __init__(self, app: Any, url: str, http: aiohttp.ClientSession) -> None:
        self.app, self.url, self.http = app, url, http
        self.clock: ManualClock = app[CLOCK]
        self.roster = Roster(self.clock)

    async def officer(self, desk: str, *, admitted: bool = True) -> GatewayClient:
        code, now = new_code(), self.clock.now_ms()
        await self.app[STORE].add_enrollment_code(code_hash(code), [desk], now, now + DAY)
        creds, answer = await enroll(self.http, self.url, code, OfficerSigningKey.generate(),
                                     OfficerEncryptionKey.generate())
        if admitted:
            await self.roster.join(self.http, creds, answer)
        return GatewayClient(self.http, creds, self.clock)


@pytest.fixture
async def world(tmp_path: Path, aiohttp_server: Any) -> Any:
    clock = ManualClock(T0)
    app = create_app(gateway_config(tmp_path, GATEWAY_KEY),
                     KeyBundle("vn-mps", {ROLE_GATEWAY_SIGNING: GATEWAY_KEY}), clock=clock)
    server = await aiohttp_server(app)
    for desk in ("trafficking", "border-liaison"):
        await app[STORE].add_desk(desk, None, clock.now_ms())
    async with aiohttp.ClientSession() as http:
        yield World(app, str(server.make_url("")).rstrip("/"), http)


async def months_of_messages(w: World) -> tuple[GatewayClient, GatewayClient, dict[str, str]]:
    """A member of border-liaison and a sender; messages 200, 100 and 10 days before now."""
    member, sender = await w.officer("border-liaison"), await w.officer("trafficking")
    sent = {}
    for age, gap in (("200 days", 100), ("100 days", 90), ("10 days", 10)):
        sent[age] = (await sender.send("case", "border-liaison", case(TEXTS[age])))["id"]
        w.clock.advance(gap * DAY / 1000)  # seconds
    return member, sender, sent


def case(text: str) -> dict[str, Any]:
    return {"type": "case", "case_ref": "VN-2026-0042", "legal_basis": "treaty",
            "offence": "trafficking in persons", "requested_actions": ["identify"],
            "deadline": "2027-06-30", "text": text}


async def test_a_new_member_opens_earlier_messages_only_after_the_share(world: World) -> None:
    w = world
    member, sender, sent = await months_of_messages(w)
    newcomer = await w.officer("border-liaison")  # admitted by the member, no share yet
    for message_id in sent.values():
        with pytest.raises(CryptoError) as sealed_before:
            await newcomer.open(message_id)
        assert sealed_before.value.code == "not_a_recipient"

    shared = await member.share_history("border-liaison", newcomer.creds.officer_id)
    assert shared == 2  # the last 180 days: not the 200-day-old message
    for age in ("100 days", "10 days"):
        opened = await newcomer.open(sent[age])
        assert opened.payload["text"] == TEXTS[age]
        assert opened.shared_by == member.creds.officer_id
    with pytest.raises(CryptoError) as too_old:
        await newcomer.open(sent["200 days"])
    assert too_old.value.code == "not_a_recipient"

    # The gateway holds the wraps, signed by the member; it cannot open them.
    with sqlite3.connect(w.app[STORE].path) as db:
        rows = db.execute("SELECT message_id, shared_by FROM history_shares WHERE officer_id"
                          " = ?", (newcomer.creds.officer_id,)).fetchall()
    assert sorted(rows) == sorted((sent[a], member.creds.officer_id)
                                  for a in ("100 days", "10 days"))

    # A share altered in the gateway's database (its signature, or who shared it) is caught.
    def tamper(sql: str, *params: Any) -> None:
        with sqlite3.connect(w.app[STORE].path) as db:
            db.execute(sql, (*params, sent["10 days"], newcomer.creds.officer_id))
    tamper("UPDATE history_shares SET signature = ? WHERE message_id = ? AND officer_id = ?",
           bytes(64))
    with pytest.raises(CryptoError) as forged:
        await newcomer.open(sent["10 days"])
    assert forged.value.code == "bad_share"
    tamper("UPDATE history_shares SET shared_by = ? WHERE message_id = ? AND officer_id = ?",
           sender.creds.officer_id)
    with pytest.raises(ClientError) as stranger:
        await newcomer.open(sent["10 days"])
    assert stranger.value.code == "unproven_member"

    # Sharing again stores nothing new; a later member can pass the share on.
    assert await member.share_history("border-liaison", newcomer.creds.officer_id) == 0
    third = await w.officer("border-liaison")
    assert await newcomer.share_history("border-liaison", third.creds.officer_id,
                                        threads=frozenset({sent["100 days"]})) == 1
    assert (await third.open(sent["100 days"])).payload["text"] == TEXTS["100 days"]


async def test_shares_are_refused_unless_a_member_signed_them_for_a_member(world: World) -> None:
    w = world
    member, sender, sent = await months_of_messages(w)
    newcomer = await w.officer("border-liaison")
    waiting = await w.officer("border-liaison", admitted=False)
    message = await w.app[STORE].get_message(sent["10 days"])
    assert message is not None

    def share(by: GatewayClient, signer: OfficerSigningKey, to: GatewayClient,
              message_id: str = sent["10 days"], digest: str = message.digest,
              late_ms: int = 0) -> dict[str, Any]:
        wrap, at = bytes(80), w.clock.now_ms() - late_ms
        text = share_text(message_id, digest, to.creds.officer_id,
                          to.creds.encryption.public.key_id, wrap, by.creds.officer_id, at)
        return Share(message_id, wrap, by.creds.officer_id, at, signer.sign(text)).to_json()

    async def post(by: GatewayClient, to: GatewayClient, shares: Any, code: str) -> None:
        with pytest.raises(ApiError) as refused:
            await by.request("POST", "/v1/desks/border-liaison@vn-mps/shares",
                             json={"officer": to.creds.officer_id, "shares": shares})
        assert refused.value.code == code, refused.value

    await post(sender, newcomer, [share(sender, sender.creds.signing, newcomer)], "not_a_member")
    await post(member, waiting, [share(member, member.creds.signing, waiting)],
               "not_a_member_of_desk")
    await post(member, newcomer, [share(member, OfficerSigningKey.generate(), newcomer)],
               "bad_signature")
    await post(member, newcomer, [share(member, member.creds.signing, newcomer,
                                        digest="0" * 64)], "bad_signature")
    other = (await sender.send("hotline", "trafficking", {"type": "hotline", "text": "x"}))
    await post(member, newcomer, [share(member, member.creds.signing, newcomer,
                                        message_id=other["id"])], "unknown_message")
    await post(member, newcomer, [share(member, member.creds.signing, newcomer,
                                        late_ms=DAY)], "bad_time")
    await post(member, newcomer, [], "bad_field")
    await post(member, newcomer, [share(member, member.creds.signing, newcomer)] * 101,
               "bad_field")
    with sqlite3.connect(w.app[STORE].path) as db:  # nothing of that was kept
        assert db.execute("SELECT count(*) FROM history_shares").fetchone()[0] == 0

    # A share whose wrap does not hold the content key (here: zeros) does not open.
    good = share(member, member.creds.signing, newcomer)
    _, body, _ = await member.request("POST", "/v1/desks/border-liaison@vn-mps/shares",
                                      json={"officer": newcomer.creds.officer_id,
                                            "shares": [good]})
    assert b'"stored": 1' in body
    with pytest.raises(CryptoError) as bad_wrap:
        await newcomer.open(sent["10 days"])
    assert bad_wrap.value.code == "decryption_failed"
    assert base64.b64decode(good["wrap"]) == bytes(80)


def test_the_protocol_documents_vector_is_what_the_code_makes() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md").read_text("utf-8")
    block = doc[doc.index("### 7.7 History shares"):doc.index("## 8. The client channel")]
    text = re.search(r"```\n(fpg history share v1\n.*?)```", block, re.S)
    assert text is not None
    sharer, encryption = OfficerSigningKey(b"\x03" * 32), OfficerEncryptionKey(b"\x02" * 32)
    made = share_text("0123456789abcdef0123456789abcdef", hashlib.sha256(b"envelope").hexdigest(),
                      "off-0123456789abcdef", encryption.public.key_id, bytes([5]) * 80,
                      "off-fedcba9876543210", 1767225600000)
    assert text.group(1).encode() == made
    signature = re.search(r"signature `([A-Za-z0-9+/=]+)`", block)
    assert signature is not None
    assert signature.group(1) == base64.b64encode(sharer.sign(made)).decode()

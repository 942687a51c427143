"""Security checks that must refuse, each named by the code it refuses with; and the
claims of docs/SECURITY.md that no other test checked.

Each test here fails if its check is deleted from the gateway: it puts a refused case
beside one that differs from it only in what the check is about and must pass, so it
cannot pass because of some other refusal or because nothing worked at all.

Real gateways on 127.0.0.1, real SQLite files, real keys and signatures. Relayed batches
and read acknowledgements are made by hand, signed as the partner would sign them (its
gateway key is the test's), since a correct partner never sends what is refused here.
What was stored, or not, is read back with SQL.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.appkeys import CLOCK, STORE
from gateway.client.api import ApiError, GatewayClient
from gateway.crypto.envelope import EnvelopeHeader, new_message_id, seal_envelope
from gateway.crypto.keys import (
    GatewaySigningKey,
    OfficerEncryptionKey,
)
from gateway.crypto.note import NoteSigner, sign_note, split_note
from gateway.federation.hop import sign_hop
from gateway.federation.partners import (
    FEDERATION_DIRECTORY_PATH,
    FEDERATION_MESSAGES_PATH,
    FEDERATION_READS_PATH,
)
from gateway.federation.receipts import Receipt, open_receipt
from gateway.federation.receiver import BATCH_MEDIA_TYPE, READS_MEDIA_TYPE
from gateway.protocol.officers import read_claim, read_text
from tests.helpers import Gw as SharedGw
from tests.helpers import free_socket, officers, partner_known, pin, until

# --- two gateways on loopback ------------------------------------------------------------


class Gw(SharedGw):
    """The shared harness's gateway, with the three test desks made at each start."""

    async def start(self) -> None:
        await super().start()
        for desk in ("trafficking", "border-liaison", "anti-trafficking"):
            await self.add_desk(desk)

    async def stop(self) -> None:
        if self.runner is not None:
            await super().stop()

    def now(self) -> int:
        assert self.app is not None
        return int(self.app[CLOCK].now_ms())


def make(tmp_path: Path, name: str) -> Gw:
    return Gw(name, GatewaySigningKey.generate(), tmp_path / name, free_socket())


@pytest.fixture
async def vn_kh(tmp_path: Path) -> AsyncIterator[tuple[Gw, Gw]]:
    """vn-mps and kh-cnp, partners of each other, running (stopped after the test)."""
    vn, kh = make(tmp_path, "vn-mps"), make(tmp_path, "kh-cnp")
    pin(vn, kh)
    try:
        await vn.start()
        await kh.start()
        yield vn, kh
    finally:
        await vn.stop()
        await kh.stop()


# --- relayed batches made by hand --------------------------------------------------------


def binding_of(gw: Gw, officer: GatewayClient) -> tuple[bytes, int]:
    """The officer's binding as its gateway signed it, and the start of its validity."""
    ((binding, since),) = gw.rows("SELECT binding, enrolled_ms FROM officers WHERE id = ?",
                                  officer.creds.officer_id)
    return bytes(binding), int(since)


@dataclass(frozen=True)
class Sealed:
    id: str
    data: bytes

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def seal(officer: GatewayClient, readers: list[OfficerEncryptionKey], created: int, *,
         frm: str = "border-liaison@vn-mps", to: str = "anti-trafficking@kh-cnp",
         expires: int | None = None, message_id: str | None = None,
         payload: bytes = b'{"text":"x"}') -> Sealed:
    """An envelope signed by ``officer``'s own key, as its client would seal it."""
    mid = message_id or new_message_id()
    header = EnvelopeHeader(id=mid, kind="hotline", priority="flash", sender=frm,
                            recipient=to, created=created,
                            expires=created + 86_400_000 if expires is None else expires,
                            thread=mid)
    return Sealed(mid, seal_envelope(header, payload, officer.creds.signing,
                                     [r.public for r in readers]))


async def relay(vn: Gw, kh: Gw, http: aiohttp.ClientSession,
                items: list[tuple[Sealed, bytes]]) -> list[tuple[str, str, str | None]]:
    """``items`` (envelope, binding) posted to KH as VN's signed batch: each receipt's
    (message id, outcome, reason), once its signature by KH verified."""
    body = json.dumps({"v": 1, "messages": [
        {"envelope": base64.b64encode(s.data).decode(), "binding": base64.b64encode(b).decode()}
        for s, b in items]}).encode()
    headers = sign_hop(vn.key, "vn-mps", "kh-cnp", "POST", FEDERATION_MESSAGES_PATH, body,
                       kh.now())
    async with http.post(kh.url + FEDERATION_MESSAGES_PATH, data=body,
                         headers={**headers, "Content-Type": BATCH_MEDIA_TYPE}) as r:
        assert r.status == 200, await r.text()
        notes = (await r.json())["receipts"]
    receipts = [open_receipt(n.encode(), "kh-cnp", [kh.key.public]) for n in notes]
    for (sealed, _), receipt in zip(items, receipts, strict=True):
        assert receipt.digest == sealed.digest and receipt.sender == "vn-mps"
    return [(r.message_id, r.outcome, r.reason) for r in receipts]


def stored(gw: Gw) -> set[str]:
    return {row[0] for row in gw.rows("SELECT id FROM messages")}


# --- 1. the writer's fsync ---------------------------------------------------------------


async def test_the_writer_connection_syncs_fully(tmp_path, http) -> None:
    """The accept path commits on the store's writer connection with ``synchronous=FULL``
    (2) in WAL mode: an acknowledged message survives a power cut, not only a killed
    process (which keeps the page cache, so tests/test_crash.py cannot see a missing
    fsync). Asked of the running gateway's own store, on the connection it commits on."""
    vn = make(tmp_path, "vn-mps")
    await vn.start()
    try:
        assert vn.app is not None
        store = vn.app[STORE]
        async with store.transaction() as writer:
            assert list(await writer.execute_fetchall("PRAGMA synchronous")) == [(2,)]
            assert list(await writer.execute_fetchall("PRAGMA journal_mode")) == [("wal",)]
        # The one the committer uses for accepts is that same connection.
        assert writer is store._writer
    finally:
        await vn.stop()


# --- 2. the sender's check of a receipt's digest -----------------------------------------


class Proxy:
    """Passes every request to ``target`` and its answer back; while ``forge``, a 200
    answer on ``path`` goes through :meth:`rewrite` (what it made is kept in ``forged``)."""

    def __init__(self, target: str, path: str) -> None:
        self.target, self.path = target, path
        self.forge, self.forged = True, list[str]()
        self.sock = free_socket()
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def rewrite(self, data: bytes) -> bytes:
        raise NotImplementedError

    async def start(self, http: aiohttp.ClientSession) -> None:
        async def forward(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            headers = {k: v for k, v in request.headers.items()
                       if k.lower() not in ("host", "content-length")}
            async with http.request(request.method, self.target + request.path_qs,
                                    data=body or None, headers=headers) as answer:
                data = await answer.read()
            if request.path == self.path and answer.status == 200 and self.forge:
                data = self.rewrite(data)
            return web.Response(status=answer.status, body=data,
                                content_type=answer.content_type)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", forward)
        self.runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self.runner.setup()
        await web.SockSite(self.runner, self.sock).start()


class ReceiptForger(Proxy):
    """Each receipt of KH's answer to a batch replaced by one KH's key signs anew with
    another digest: a partner's receipt for other bytes than those sent."""

    def __init__(self, target: str, kh_key: GatewaySigningKey) -> None:
        super().__init__(target, FEDERATION_MESSAGES_PATH)
        self.kh_key = kh_key

    def rewrite(self, data: bytes) -> bytes:
        notes = []
        for note in json.loads(data)["receipts"]:
            receipt = open_receipt(note.encode(), "kh-cnp", [self.kh_key.public])
            other = dataclasses.replace(receipt, digest="0" * 64)
            notes.append(Receipt.sign(other, self.kh_key).decode())
        self.forged.extend(notes)
        return json.dumps({"receipts": notes}).encode()


@contextlib.asynccontextmanager
async def behind(proxy: Proxy, vn: Gw, kh: Gw,
                 http: aiohttp.ClientSession) -> AsyncIterator[None]:
    """VN and KH running, VN reaching KH through ``proxy``; all stopped afterwards."""
    pin(vn, kh, url=proxy.url)
    await proxy.start(http)
    try:
        await vn.start()
        await kh.start()
        yield
    finally:
        await vn.stop()
        await kh.stop()
        assert proxy.runner is not None
        await proxy.runner.cleanup()


async def test_a_receipt_for_another_digest_is_refused_by_the_sender(tmp_path, http) -> None:
    """A receipt signed by the partner, naming the message and this gateway, but for
    other bytes than those sent, is refused ("receipts refused": the batch stays queued
    and backs off), recorded nowhere; the resend's genuine receipt is recorded."""
    vn, kh = make(tmp_path, "vn-mps"), make(tmp_path, "kh-cnp")
    proxy = ReceiptForger(kh.url, kh.key)
    async with behind(proxy, vn, kh, http):
        a, _ = await officers(vn, kh, http)
        sent = (await a.send("hotline", "anti-trafficking@kh-cnp",
                             {"type": "hotline", "text": "x"}, priority="flash"))["id"]

        def refused_or_recorded() -> bool:
            return bool(vn.rows("SELECT 1 FROM receipts") or vn.rows(
                "SELECT 1 FROM partner_state WHERE last_error LIKE '%receipts refused%'"))
        await until(refused_or_recorded, "VN to refuse (or record) the forged receipt")
        assert proxy.forged
        assert vn.rows("SELECT message_id, outcome FROM receipts") == []
        ((failures, error),) = vn.rows("SELECT failures, last_error FROM partner_state"
                                       " WHERE partner = 'kh-cnp'")
        assert failures >= 1 and f"receipt for {sent} names another message" in error
        assert vn.rows("SELECT message_id FROM outbox") == [(sent,)]
        assert kh.rows("SELECT id FROM messages") == [(sent,)]  # KH did store it

        proxy.forge = False  # KH's own receipts from now on
        await until(lambda: vn.rows("SELECT COUNT(*) FROM outbox") == [(0,)], "the resend")
        ((outcome, receipt),) = vn.rows("SELECT outcome, receipt FROM receipts")
        assert outcome == "duplicate"
        assert bytes(receipt).decode() not in proxy.forged
        assert open_receipt(bytes(receipt), "kh-cnp", [kh.key.public]).digest == vn.rows(
            "SELECT digest FROM messages WHERE id = ?", sent)[0][0]


# --- 3 to 5. the receiver's checks of a relayed envelope ---------------------------------


async def test_a_relayed_envelope_from_a_desk_outside_its_binding_is_sender_not_bound(
        vn_kh, http) -> None:
    """The sending officer's binding must name the envelope's ``from`` desk (and cover its
    creation time): another desk of the same partner is refused."""
    vn, kh = vn_kh
    a, k = await officers(vn, kh, http)  # a is of border-liaison@vn-mps only
    binding, since = binding_of(vn, a)
    now, readers = kh.now(), [k.creds.encryption]
    other_desk = seal(a, readers, now, frm="trafficking@vn-mps")  # a desk VN has
    before = seal(a, readers, since - 1)
    own_desk = seal(a, readers, now)
    assert await relay(vn, kh, http, [(other_desk, binding), (before, binding),
                                      (own_desk, binding)]) == [
        (other_desk.id, "rejected", "sender_not_bound"),
        (before.id, "rejected", "sender_not_bound"),
        (own_desk.id, "accepted", None)]
    assert stored(kh) == {own_desk.id}


async def test_a_relayed_envelope_past_its_expiry_is_expired(vn_kh, http) -> None:
    vn, kh = vn_kh
    a, k = await officers(vn, kh, http)
    binding, since = binding_of(vn, a)
    assert kh.now() > since + 1
    late = seal(a, [k.creds.encryption], since, expires=since + 1)
    live = seal(a, [k.creds.encryption], since, expires=kh.now() + 60_000)
    assert await relay(vn, kh, http, [(late, binding), (live, binding)]) == [
        (late.id, "rejected", "expired"), (live.id, "accepted", None)]
    assert stored(kh) == {live.id}


async def test_a_relayed_envelope_reusing_a_stored_id_is_id_conflict(vn_kh, http) -> None:
    """Another envelope under a stored message's id is refused ``id_conflict``, both when
    the first is stored already and when both come in one batch; never ``duplicate``,
    which would make the sender drop it as delivered. The same bytes again are
    ``duplicate``."""
    vn, kh = vn_kh
    a, k = await officers(vn, kh, http)
    binding, _ = binding_of(vn, a)
    now, readers = kh.now(), [k.creds.encryption]
    first = seal(a, readers, now, payload=b'{"text":"first"}')
    other = seal(a, readers, now, message_id=first.id, payload=b'{"text":"other"}')
    assert await relay(vn, kh, http, [(first, binding)]) == [(first.id, "accepted", None)]
    assert await relay(vn, kh, http, [(other, binding)]) == [
        (first.id, "rejected", "id_conflict")]
    assert await relay(vn, kh, http, [(first, binding)]) == [(first.id, "duplicate", None)]
    # Both new in one batch: the store finds the conflict as it commits.
    twin = seal(a, readers, now, payload=b'{"text":"twin a"}')
    twin_b = seal(a, readers, now, message_id=twin.id, payload=b'{"text":"twin b"}')
    assert await relay(vn, kh, http, [(twin, binding), (twin_b, binding)]) == [
        (twin.id, "accepted", None), (twin.id, "rejected", "id_conflict")]
    assert sorted(kh.rows("SELECT id, digest FROM messages")) == sorted(
        [(first.id, first.digest), (twin.id, twin.digest)])


async def test_relayed_envelopes_for_no_desk_or_reader_here_are_refused(vn_kh, http) -> None:
    """The recipient desk must be on this gateway, exist, and have one of its current
    officers among the envelope's recipients."""
    vn, kh = vn_kh
    a, k = await officers(vn, kh, http)
    binding, _ = binding_of(vn, a)
    now, readers = kh.now(), [k.creds.encryption]
    elsewhere = seal(a, readers, now, to="anti-trafficking@la-mps")
    no_desk = seal(a, readers, now, to="no-such-desk@kh-cnp")
    stranger = seal(a, [OfficerEncryptionKey.generate()], now)
    fine = seal(a, readers, now)
    assert await relay(vn, kh, http, [(elsewhere, binding), (no_desk, binding),
                                      (stranger, binding), (fine, binding)]) == [
        (elsewhere.id, "rejected", "not_for_this_gateway"),
        (no_desk.id, "rejected", "unknown_desk"),
        (stranger.id, "rejected", "no_current_recipient"),
        (fine.id, "accepted", None)]
    assert stored(kh) == {fine.id}


# --- 6. read acknowledgements from officers not of the recipient desk --------------------


async def acknowledge(officer: GatewayClient, message_id: str, digest: str,
                      read_ms: int) -> dict[str, Any]:
    """The officer's signed read acknowledgement, posted to its own gateway."""
    signature = officer.creds.signing.sign(read_text(message_id, digest, read_ms))
    _, body, _ = await officer.request("POST", f"/v1/messages/{message_id}/read", json={
        "read": read_ms, "signature": base64.b64encode(signature).decode()})
    result: dict[str, Any] = json.loads(body)
    return result


async def test_a_read_ack_by_the_sending_desk_is_not_a_member(tmp_path, http) -> None:
    """On the officers' channel only an officer of the recipient desk acknowledges
    reading: the sender, who may fetch the message, is refused even with a good
    signature."""
    vn = make(tmp_path, "vn-mps")
    await vn.start()
    try:
        a = await vn.officer(http, "border-liaison")
        t = await vn.officer(http, "trafficking")
        mid = (await a.send("hotline", "trafficking@vn-mps",
                            {"type": "hotline", "text": "x"}))["id"]
        digest = (await a.status(mid))["digest"]
        with pytest.raises(ApiError) as refused:
            await acknowledge(a, mid, digest, vn.now())
        assert (refused.value.status, refused.value.code) == (403, "not_a_member")
        assert vn.rows("SELECT COUNT(*) FROM reads") == [(0,)]
        assert (await acknowledge(t, mid, digest, vn.now()))["status"] == "recorded"
        assert vn.rows("SELECT officer_id FROM reads") == [(t.creds.officer_id,)]
    finally:
        await vn.stop()


async def post_reads(kh: Gw, vn: Gw, http: aiohttp.ClientSession,
                     items: list[tuple[bytes, bytes]]) -> list[tuple[str, str | None]]:
    """Read acknowledgements (ack, binding) posted to VN as KH's signed request: each
    one's (outcome, reason)."""
    body = json.dumps({"v": 1, "reads": [
        {"ack": base64.b64encode(ack).decode(), "binding": base64.b64encode(b).decode()}
        for ack, b in items]}).encode()
    headers = sign_hop(kh.key, "kh-cnp", "vn-mps", "POST", FEDERATION_READS_PATH, body,
                       vn.now())
    async with http.post(vn.url + FEDERATION_READS_PATH, data=body,
                         headers={**headers, "Content-Type": READS_MEDIA_TYPE}) as r:
        assert r.status == 200, await r.text()
        return [(x["outcome"], x["reason"]) for x in (await r.json())["results"]]


def signed_ack(officer: GatewayClient, message_id: str, digest: str, read_ms: int) -> bytes:
    text = read_text(message_id, digest, read_ms)
    return text + officer.creds.signing.sign(text)


async def relayed_to_kh(vn: Gw, kh: Gw, a: GatewayClient) -> tuple[str, str]:
    """A message from ``a`` to KH's anti-trafficking desk, once KH stored it: its id and
    digest."""
    mid = (await a.send("hotline", "anti-trafficking@kh-cnp",
                        {"type": "hotline", "text": "x"}))["id"]
    await until(lambda: kh.rows("SELECT 1 FROM messages WHERE id = ?", mid), "the relay")
    return mid, vn.rows("SELECT digest FROM messages WHERE id = ?", mid)[0][0]


async def test_a_partner_read_ack_by_another_desk_is_not_a_member(vn_kh, http) -> None:
    """A read acknowledgement relayed back from KH counts only if its officer's binding
    names the desk the message went to: another KH desk's officer is refused."""
    vn, kh = vn_kh
    a, k = await officers(vn, kh, http)
    other = await kh.officer(http, "border-liaison")  # of kh-cnp, not the recipient desk
    mid, digest = await relayed_to_kh(vn, kh, a)
    now = vn.now()
    assert await post_reads(kh, vn, http, [
        (signed_ack(other, mid, digest, now), binding_of(kh, other)[0]),
        (signed_ack(k, mid, digest, now), binding_of(kh, k)[0])]) == [
        ("rejected", "not_a_member"), ("recorded", None)]
    assert vn.rows("SELECT officer_id FROM reads WHERE message_id = ?", mid) == [
        (f"{k.creds.officer_id}@kh-cnp",)]


# --- other refusal codes -----------------------------------------------------------------


async def test_a_partner_read_ack_dated_outside_its_binding_is_outside_binding(
        vn_kh, http) -> None:
    """A relayed read acknowledgement must be dated within its officer's binding."""
    vn, kh = vn_kh
    a, k = await officers(vn, kh, http)
    mid, digest = await relayed_to_kh(vn, kh, a)
    binding, since = binding_of(kh, k)
    before = int(time.time() * 1000)
    assert await post_reads(kh, vn, http, [
        (signed_ack(k, mid, digest, since - 1), binding),
        (signed_ack(k, mid, digest, since), binding)]) == [
        ("rejected", "outside_binding"), ("recorded", None)]
    # Recorded when it arrived (vn's clock), the signed read time kept beside it.
    ((read_ms, ack),) = vn.rows("SELECT read_ms, ack FROM reads WHERE message_id = ?", mid)
    assert read_claim(ack) == since and before <= read_ms <= int(time.time() * 1000)


async def test_a_full_disk_answers_store_error_and_stores_nothing(tmp_path, http) -> None:
    """A write the disk refuses (SQLite's own page limit: SQLITE_FULL) is ``503
    store_error``, with nothing stored; once there is room again, sending works."""
    vn = make(tmp_path, "vn-mps")
    await vn.start()
    try:
        assert vn.app is not None
        a = await vn.officer(http, "border-liaison")
        await vn.officer(http, "trafficking")
        store = vn.app[STORE]
        async with store.transaction() as writer:
            ((pages,),) = await writer.execute_fetchall("PRAGMA page_count")
            await writer.execute(f"PRAGMA max_page_count = {pages}")
        before = vn.rows("SELECT (SELECT COUNT(*) FROM messages), (SELECT COUNT(*) FROM"
                         " ledger), (SELECT COUNT(*) FROM inbox)")
        big = {"type": "hotline", "text": "x" * 30_000}  # pages of its own
        with pytest.raises(ApiError) as refused:
            await a.send("hotline", "trafficking@vn-mps", big)
        assert (refused.value.status, refused.value.code) == (503, "store_error")
        assert vn.rows("SELECT (SELECT COUNT(*) FROM messages), (SELECT COUNT(*) FROM"
                       " ledger), (SELECT COUNT(*) FROM inbox)") == before
        async with store.transaction() as writer:
            await writer.execute("PRAGMA max_page_count = 1073741823")
        assert (await a.send("hotline", "trafficking@vn-mps", big))["status"] == "accepted"
    finally:
        await vn.stop()


async def test_an_unreadable_ledger_entry_answers_ledger_error(tmp_path, http) -> None:
    """A message's status lists its ledger entries; one damaged on disk under the running
    gateway is ``500 ledger_error``, not a status without it."""
    vn = make(tmp_path, "vn-mps")
    await vn.start()
    try:
        a = await vn.officer(http, "border-liaison")
        await vn.officer(http, "trafficking")
        mid = (await a.send("hotline", "trafficking@vn-mps",
                            {"type": "hotline", "text": "x"}))["id"]
        assert [e["type"] for e in (await a.status(mid))["events"]] == ["accepted",
                                                                          "delivered"]
        with sqlite3.connect(vn.database) as db:  # what the append-only trigger prevents
            db.execute("DROP TRIGGER ledger_no_update")
            damaged = db.execute(
                "UPDATE ledger SET entry = x'00' WHERE seq = (SELECT MAX(ledger.seq) FROM"
                " ledger JOIN messages ON ledger.msg = messages.mseq WHERE messages.id = ?)",
                (mid,))
            assert damaged.rowcount == 1
        with pytest.raises(ApiError) as refused:
            await a.status(mid)
        assert (refused.value.status, refused.value.code) == (500, "ledger_error")
    finally:
        await vn.stop()


# --- what else docs/SECURITY.md claims ---------------------------------------------------


class DirectoryForger(Proxy):
    """KH's desk directory signed anew, under KH's name, by a key that is not KH's."""

    def __init__(self, target: str) -> None:
        super().__init__(target, FEDERATION_DIRECTORY_PATH)
        self.stranger = GatewaySigningKey.generate()

    def rewrite(self, data: bytes) -> bytes:
        text, _ = split_note(data, max_size=4 * 1024 * 1024)
        forged = sign_note(text, [NoteSigner("kh-cnp", self.stranger)])
        self.forged.append(forged.decode())
        return forged


async def test_a_partner_directory_not_signed_by_its_key_is_refused(tmp_path, http) -> None:
    """A partner's desk directory (the officers' keys senders seal for) counts only if
    the partner's key signed it: one signed under its name by another key is refused,
    kept nowhere, and nobody can send there until a genuine one comes."""
    vn, kh = make(tmp_path, "vn-mps"), make(tmp_path, "kh-cnp")
    proxy = DirectoryForger(kh.url)
    async with behind(proxy, vn, kh, http):
        a = await vn.officer(http, "border-liaison")
        await kh.officer(http, "anti-trafficking")
        await until(lambda: len(proxy.forged) >= 3 or vn.rows(
            "SELECT 1 FROM partner_directories"), "VN to fetch KH's directory")
        with pytest.raises(ApiError) as refused:
            await a.directory(refresh=True, gateway="kh-cnp")
        assert (refused.value.status, refused.value.code) == (503, "partner_directory_unknown")
        assert vn.rows("SELECT COUNT(*) FROM partner_directories") == [(0,)]
        proxy.forge = False
        await partner_known(a, "kh-cnp")
        assert vn.rows("SELECT partner FROM partner_directories") == [("kh-cnp",)]


async def test_the_ledger_names_the_officer_behind_each_event(tmp_path, http) -> None:
    """What an officer did is in the ledger under its own signing key id: the sender's
    on the accept, the reader's on the read, the replier's on the reply."""
    vn = make(tmp_path, "vn-mps")
    await vn.start()
    try:
        a = await vn.officer(http, "border-liaison")
        t = await vn.officer(http, "trafficking")
        mid = (await a.send("hotline", "trafficking@vn-mps",
                            {"type": "hotline", "text": "x"}))["id"]
        answer = await t.reply(await t.read(mid), {"type": "reply", "text": "ok"})
        await until(lambda: vn.rows("SELECT first_reply_ms FROM messages WHERE id = ?",
                                    mid) != [(None,)], "the reply")
        events = (await a.status(mid))["events"]
        assert [(e["type"], e.get("actor"), e.get("ref")) for e in events] == [
            ("accepted", a.creds.signing.public.key_id, None),
            ("delivered", None, None),  # the gateway's doing, in the accept's commit
            ("read", t.creds.signing.public.key_id, None),
            ("replied", t.creds.signing.public.key_id, answer["id"])]
        assert a.creds.signing.public.key_id != t.creds.signing.public.key_id
    finally:
        await vn.stop()

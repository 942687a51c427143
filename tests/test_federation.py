"""Federation: real gateways on 127.0.0.1 relaying to each other (vn-mps, kh-cnp, la-mps).

Each gateway is the real application on a real socket with its own SQLite file; partners
are pinned by URL and key fingerprint in configuration. Faults are injected only in the
network: a partner stopped, an answer dropped by a proxy between two gateways.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import hashlib
import json
import random
import re
import struct
import time
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import structlog
from aiohttp import web
from structlog.testing import capture_logs

from gateway.appkeys import CLOCK, LEDGER, PARTNERS, RECEIVER
from gateway.client.api import ApiError, GatewayClient
from gateway.crypto.envelope import EnvelopeHeader, new_message_id, seal_envelope
from gateway.crypto.keys import (
    GatewaySigningKey,
    OfficerSigningKey,
)
from gateway.crypto.note import NoteVerifier
from gateway.errors import ConfigError, PeerError
from gateway.federation.hop import sign_hop
from gateway.federation.partners import FEDERATION_MESSAGES_PATH, FEDERATION_READS_PATH
from gateway.federation.receipts import open_receipt
from gateway.federation.receiver import BATCH_MEDIA_TYPE, MAX_BATCH_ITEMS, READS_MEDIA_TYPE
from gateway.federation.sender import batch_body, within_bytes
from gateway.ledger.events import decode_entry
from gateway.protocol.checkpoint import open_checkpoint
from gateway.protocol.descriptor import DESCRIPTOR_PATH, Descriptor, sign_descriptor
from gateway.protocol.merkle import leaf_hash, verify_inclusion
from gateway.protocol.notices import open_notice
from gateway.protocol.officers import read_text
from gateway.store import OutboxItem
from tests.helpers import (
    PRIORITIES,
    Gw,
    free_socket,
    make,
    officers,
    partner_known,
    pin,
    started,
    stop_all,
    until,
    watching,
)


def events_of(status: dict[str, Any]) -> list[str]:
    return [e["type"] + (f":{e['outcome']}" if e.get("outcome") else "")
            for e in status["events"]]


# --- a flash hotline across a border, read and answered ------------------------------------


async def test_flash_hotline_vn_to_kh_is_read_and_answered(vn_kh, http) -> None:
    vn, kh = vn_kh
    a, k = await officers(vn, kh, http)
    events, watcher = await watching(a)

    text = "Nạn nhân được tìm thấy — ជនរងគ្រោះត្រូវបានរកឃើញ"
    sent = await a.send("hotline", "anti-trafficking@kh-cnp",
                        {"type": "hotline", "text": text}, priority="flash")
    assert sent["status"] == "accepted"
    mid = sent["id"]
    await until(lambda: any(k == "receipt" for k, _ in events), "VN's receipt event")
    receipt = next(d for k, d in events if k == "receipt")
    assert receipt["outcome"] == "accepted" and receipt["partner"] == "kh-cnp"

    inbox = await k.inbox("anti-trafficking")
    assert [m["id"] for m in inbox["messages"]] == [mid]
    opened = await k.read(mid)
    assert opened.payload["text"] == text
    assert opened.header.sender == "border-liaison@vn-mps"
    # KH's officer's signed read acknowledgement travels back to VN.
    await until(lambda: any(k == "read" for k, _ in events), "the read ack on VN's stream")
    read = next(d for k, d in events if k == "read")
    assert read["id"] == mid and read["officer"].endswith("@kh-cnp")
    vn_status = await a.status(mid)
    assert [r["officer"] for r in vn_status["reads"]] == [read["officer"]]
    assert vn_status["first_read"] == read["read"]
    assert kh.rows("SELECT COUNT(*) FROM read_outbox")[0][0] == 0
    answer = await k.send("reply", "border-liaison@vn-mps",
                          {"type": "reply", "text": "Đã nhận. Đội đang đến."},
                          priority="flash", in_reply_to=mid, thread=mid)
    assert answer["status"] == "accepted"
    await until(lambda: any(k == "reply" for k, _ in events), "the reply on VN's stream")
    replies = await a.inbox("border-liaison")
    assert [m["id"] for m in replies["messages"]] == [answer["id"]]
    assert (await a.read(answer["id"])).payload["text"] == "Đã nhận. Đội đang đến."

    vn_side = events_of(await a.status(mid))
    assert vn_side[:4] == ["accepted", "relayed", "receipt:accepted", "read"]
    assert "replied" in vn_side
    kh_side = events_of(await k.status(mid))
    assert kh_side[:2] == ["accepted", "delivered"] and "read" in kh_side
    assert "replied" in kh_side
    # The reply went back the same way: KH holds VN's receipt for it.
    assert events_of(await k.status(answer["id"]))[:3] == [
        "accepted", "relayed", "receipt:accepted"]
    # Each ledger proves its side: every event of the alert is included in a checkpoint
    # signed by that gateway's key.
    for gw, side in ((vn, vn_side), (kh, kh_side)):
        assert gw.app is not None
        await gw.app[LEDGER].make_checkpoint()
        proof = await gw.app[LEDGER].prove_message(mid)
        origin = proof["checkpoint"]["origin"]
        checkpoint = open_checkpoint(proof["checkpoint"]["note"].encode(), origin,
                                     [NoteVerifier(origin, gw.key.public)])
        assert [decode_entry(e["entry"].encode())["type"] for e in proof["events"]] == [
            s.split(":")[0] for s in side]
        for e in proof["events"]:
            verify_inclusion(leaf_hash(e["entry"].encode()), e["seq"], checkpoint.size,
                             [base64.b64decode(h) for h in e["inclusion_proof"]],
                             checkpoint.root)
    watcher.cancel()
    await stop_all(vn, kh)  # so that everything is in the database files
    # No plaintext in either database outside the ciphertexts.
    for gw in (vn, kh):
        assert text.encode() not in gw.database.read_bytes()


# --- an outage: the backlog drains in priority order, nothing lost or duplicated ----------


async def test_backlog_drains_in_priority_order_after_an_outage(vn_kh, http) -> None:
    vn, kh = vn_kh
    a, _ = await officers(vn, kh, http)
    await kh.stop()
    acknowledged: list[tuple[str, str]] = []  # (priority, id) in the order VN accepted

    async def send(i: int) -> None:
        priority = PRIORITIES[(i * 7) % 4]
        answer = await a.send("hotline", "anti-trafficking@kh-cnp",
                              {"type": "hotline", "text": f"#{i}"}, priority=priority)
        assert answer["status"] == "accepted"
        acknowledged.append((priority, answer["id"]))
    for i in range(1000):  # one at a time: VN's acceptance order is the FIFO order
        await send(i)
    assert vn.rows("SELECT COUNT(*) FROM outbox")[0][0] == 1000
    await kh.start()
    await until(lambda: vn.rows("SELECT COUNT(*) FROM outbox")[0][0] == 0,
                "VN's outbox to drain", 60)
    arrived = [r[0] for r in kh.rows(
        "SELECT message_id FROM inbox WHERE desk = 'anti-trafficking@kh-cnp' ORDER BY seq")]
    expected = [mid for _, mid in sorted(acknowledged,
                                         key=lambda pm: PRIORITIES.index(pm[0]))]
    assert len(arrived) == len(set(arrived)) == 1000  # none duplicated
    assert set(arrived) == {mid for _, mid in acknowledged}  # none lost
    assert arrived == expected  # flash, immediate, priority, routine; FIFO within
    outcomes = vn.rows("SELECT outcome, COUNT(*) FROM receipts GROUP BY outcome")
    assert outcomes == [("accepted", 1000)]


# --- the answer is lost after the receiver committed ---------------------------------------


class Proxy:
    """Forwards every request to a gateway and passes its answer back; subclasses step in
    before a batch of messages is forwarded, or after it was answered."""

    def __init__(self, target: str) -> None:
        self.target, self.forwarded = target, 0
        self.sock = free_socket()
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    async def before_batch(self) -> None:
        """Called before a batch of messages is forwarded."""

    def after_batch(self, request: web.Request) -> None:
        """Called once a batch of messages was answered, before the answer is passed on."""

    def answer(self, status: int, data: bytes) -> bytes:
        """The answer to a batch of messages as passed on (by default, as it came)."""
        return data

    async def start(self, http: aiohttp.ClientSession) -> None:
        async def forward(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            batch = request.path == FEDERATION_MESSAGES_PATH
            if batch:
                await self.before_batch()
            headers = {k: v for k, v in request.headers.items()
                       if k.lower() not in ("host", "content-length")}
            async with http.request(request.method, self.target + request.path_qs,
                                    data=body or None, headers=headers) as answer:
                data = await answer.read()
            if batch:
                self.after_batch(request)
                data = self.answer(answer.status, data)
            self.forwarded += 1
            return web.Response(status=answer.status, body=data,
                                content_type=answer.content_type)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", forward)
        self.runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self.runner.setup()
        await web.SockSite(self.runner, self.sock).start()


class DroppingProxy(Proxy):
    """Drops the answers of the first ``drop`` batches."""

    def __init__(self, target: str, drop: int) -> None:
        super().__init__(target)
        self.drop = drop

    def after_batch(self, request: web.Request) -> None:
        if self.drop > 0:
            self.drop -= 1
            assert request.transport is not None
            request.transport.close()  # the receiver committed; its answer is lost
            raise asyncio.CancelledError


P = TypeVar("P", bound=Proxy)


@contextlib.asynccontextmanager
async def behind_proxy(tmp_path: Path, http: aiohttp.ClientSession,
                       proxy_of: Callable[[str], P],
                       **vn_federation: Any) -> AsyncIterator[tuple[Gw, Gw, P]]:
    """vn-mps and kh-cnp running, VN reaching KH through ``proxy_of(KH's URL)``; all
    stopped afterwards. ``vn_federation``: VN's [federation] settings changed."""
    vn, kh = make(tmp_path, "vn-mps"), make(tmp_path, "kh-cnp")
    vn.federation.update(vn_federation)
    proxy = proxy_of(kh.url)
    pin(vn, kh, url=proxy.url)
    await proxy.start(http)
    try:
        await started(vn, kh)
        yield vn, kh, proxy
    finally:
        await stop_all(vn, kh)
        assert proxy.runner is not None
        await proxy.runner.cleanup()


async def test_lost_answer_then_retry_leaves_one_copy(tmp_path, http) -> None:
    async with behind_proxy(tmp_path, http, lambda url: DroppingProxy(url, drop=0)) as (
            vn, kh, proxy):
        a, k = await officers(vn, kh, http)
        proxy.drop = 1
        sent = await a.send("hotline", "anti-trafficking@kh-cnp",
                            {"type": "hotline", "text": "once"}, priority="flash")
        await until(lambda: vn.rows("SELECT COUNT(*) FROM outbox")[0][0] == 0, "the retry")
        assert proxy.drop == 0
        inbox = await k.inbox("anti-trafficking")
        assert [m["id"] for m in inbox["messages"]] == [sent["id"]]
        assert kh.rows("SELECT COUNT(*) FROM messages WHERE id = ?", sent["id"]) == [(1,)]
        # The retry was answered "duplicate": the first attempt had been committed.
        assert events_of(await a.status(sent["id"]))[:3] == [
            "accepted", "relayed", "receipt:duplicate"]
        # The sender clears its retry state just after recording the receipts.
        await until(lambda: vn.rows("SELECT failures, next_attempt_ms FROM partner_state")
                    == [(0, 0)], "the retry state to be cleared")


class HoldingProxy(Proxy):
    """Holds each batch of messages until the test lets it go (while ``hold``)."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.hold = True
        self.held: asyncio.Queue[asyncio.Event] = asyncio.Queue()

    async def before_batch(self) -> None:
        if self.hold:
            go = asyncio.Event()
            self.held.put_nowait(go)
            await go.wait()


async def test_a_flash_queued_while_a_full_batch_is_in_flight_goes_next(tmp_path, http) -> None:
    """After a full batch the sender reads the next one while the first is in flight; a
    flash message queued meanwhile must still go before the routine ones read ahead."""
    async with behind_proxy(tmp_path, http, HoldingProxy, batch_size=2) as (vn, kh, proxy):
        a, _ = await officers(vn, kh, http)

        async def send(text: str, priority: str = "routine") -> str:
            answer = await a.send("hotline", "anti-trafficking@kh-cnp",
                                  {"type": "hotline", "text": text}, priority=priority)
            return str(answer["id"])
        r = [await send("r0")]
        first = await asyncio.wait_for(proxy.held.get(), 20)  # r0 alone, in flight
        r += [await send(f"r{i}") for i in range(1, 7)]
        first.set()
        second = await asyncio.wait_for(proxy.held.get(), 20)  # r1 and r2: a full batch
        await asyncio.sleep(0.3)  # the batch after it (r3, r4) has been read meanwhile
        flash = await send("flash", "flash")
        proxy.hold = False
        second.set()
        await until(lambda: vn.rows("SELECT COUNT(*) FROM outbox")[0][0] == 0,
                    "VN's outbox to drain")
        arrived = [row[0] for row in kh.rows(
            "SELECT message_id FROM inbox WHERE desk = 'anti-trafficking@kh-cnp' ORDER BY seq")]
        assert arrived == [*r[:3], flash, *r[3:]]


class TamperingProxy(Proxy):
    """Alters one receipt in the answers to the next ``tamper`` batches of at least
    ``size`` messages (the partner committed them; its signature no longer matches)."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.tamper, self.size = 0, 1
        self.tampered: list[str] = []

    def answer(self, status: int, data: bytes) -> bytes:
        doc = json.loads(data)
        if status != 200 or self.tamper <= 0 or len(doc["receipts"]) < self.size:
            return data
        self.tamper -= 1
        note = doc["receipts"][-1]
        assert '"outcome":"accepted"' in note
        doc["receipts"][-1] = note.replace('"outcome":"accepted"', '"outcome":"duplicate"')
        self.tampered.append(doc["receipts"][-1])
        return json.dumps(doc).encode()


async def sent_to_kh(a: GatewayClient, n: int, priority: str = "routine") -> list[str]:
    ids = []
    for i in range(n):
        answer = await a.send("hotline", "anti-trafficking@kh-cnp",
                              {"type": "hotline", "text": f"#{i}"}, priority=priority)
        ids.append(str(answer["id"]))
    return ids


async def test_refused_receipts_are_not_recorded_and_the_batch_is_sent_again(tmp_path,
                                                                           http) -> None:
    async with behind_proxy(tmp_path, http, TamperingProxy) as (vn, kh, proxy):
        a, k = await officers(vn, kh, http)
        proxy.tamper = 1
        (sent,) = await sent_to_kh(a, 1, "flash")
        await until(lambda: vn.rows("SELECT COUNT(*) FROM outbox")[0][0] == 0, "the resend")
        assert proxy.tamper == 0
        assert kh.rows("SELECT COUNT(*) FROM messages WHERE id = ?", sent) == [(1,)]
        assert [m["id"] for m in (await k.inbox("anti-trafficking"))["messages"]] == [sent]
        # The altered receipt was refused, not recorded; the resend was answered duplicate.
        assert vn.rows("SELECT outcome FROM receipts") == [("duplicate",)]
        assert vn.rows("SELECT COUNT(*) FROM receipts WHERE receipt = ?",
                       proxy.tampered[0].encode()) == [(0,)]
        assert events_of(await a.status(sent))[:3] == ["accepted", "relayed",
                                                       "receipt:duplicate"]
        await until(lambda: vn.rows("SELECT failures, next_attempt_ms FROM partner_state")
                    == [(0, 0)], "the retry state to be cleared")


async def test_receipts_refused_while_the_next_batch_was_in_flight(tmp_path, http) -> None:
    """Receipts are checked while the next batch goes; if they are refused, that is found
    when the next answer comes, and both batches are sent again (answered duplicate)."""
    async with behind_proxy(tmp_path, http, TamperingProxy, batch_size=2) as (vn, kh, proxy):
        a, _ = await officers(vn, kh, http)
        await kh.stop()  # seven queued: after the one-message probe, batches of two
        ids = await sent_to_kh(a, 7)
        proxy.tamper, proxy.size = 1, 2
        await kh.start()
        await until(lambda: vn.rows("SELECT COUNT(*) FROM outbox")[0][0] == 0, "the drain")
        assert proxy.tamper == 0
        arrived = [r[0] for r in kh.rows("SELECT message_id FROM inbox ORDER BY seq")]
        assert arrived == ids  # each once, in order
        outcomes = dict(vn.rows("SELECT message_id, outcome FROM receipts"))
        # The probe is recorded; the tampered batch and the one after it both went again.
        assert [outcomes[i] for i in ids] == ["accepted"] + ["duplicate"] * 4 + \
            ["accepted"] * 2
        assert vn.rows("SELECT COUNT(*) FROM receipts WHERE receipt = ?",
                       proxy.tampered[0].encode()) == [(0,)]


class DuplicatingProxy(Proxy):
    """Passes on the next ``duplicate`` answers to a batch with the key ``receipts`` twice:
    first a list of forged notes, then the partner's own (which a parser keeping the last
    value would take)."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.duplicate = 0

    def answer(self, status: int, data: bytes) -> bytes:
        if status != 200 or self.duplicate <= 0:
            return data
        self.duplicate -= 1
        assert data.startswith(b'{"receipts":')
        return b'{"receipts":["forged"],' + data[1:]


async def test_a_receipt_answer_with_a_duplicated_key_is_refused(tmp_path, http) -> None:
    """JSON from a partner is strict everywhere: an answer naming ``receipts`` twice is
    refused as a whole (nothing recorded, the batch sent again, then answered duplicate),
    not read as whichever copy the parser keeps."""
    async with behind_proxy(tmp_path, http, DuplicatingProxy) as (vn, kh, proxy):
        a, _ = await officers(vn, kh, http)
        proxy.duplicate = 1
        with capture_logs() as logs:
            (sent,) = await sent_to_kh(a, 1, "flash")
            await until(lambda: vn.rows("SELECT COUNT(*) FROM outbox")[0][0] == 0,
                        "the resend")
        assert proxy.duplicate == 0
        refused = [e for e in logs if e["event"] == "receipts_refused"]
        assert [e["error"] for e in refused] == ["a JSON object has a duplicate key"]
        assert kh.rows("SELECT COUNT(*) FROM messages WHERE id = ?", sent) == [(1,)]
        assert vn.rows("SELECT message_id, outcome FROM receipts") == [(sent, "duplicate")]


# --- hop requests that must be refused -----------------------------------------------------


async def test_bad_hop_requests_are_refused_and_store_nothing(vn_kh, http) -> None:
    vn, kh = vn_kh
    await kh.officer(http, "anti-trafficking")
    body = json.dumps({"v": 1, "messages": [{"envelope": "", "binding": None}]}).encode()
    url = kh.url + FEDERATION_MESSAGES_PATH
    assert kh.app is not None
    now = kh.app[CLOCK].now_ms()

    def before() -> Any:
        return kh.rows("SELECT (SELECT COUNT(*) FROM messages), (SELECT COUNT(*) FROM"
                       " ledger), (SELECT COUNT(*) FROM inbox)")
    state = before()

    async def post(headers: dict[str, str], data: bytes = body) -> tuple[int, str]:
        async with http.post(url, data=data, headers={
                **headers, "Content-Type": BATCH_MEDIA_TYPE}) as r:
            return r.status, (await r.json())["error"] if r.status != 200 else ""

    good = sign_hop(vn.key, "vn-mps", "kh-cnp", "POST", FEDERATION_MESSAGES_PATH, body, now)
    assert (await post(good))[0] == 200  # a malformed item: a rejected receipt, no more
    assert await post(good) == (401, "hop_replay")
    stranger = GatewaySigningKey.generate()
    assert await post(sign_hop(stranger, "vn-mps", "kh-cnp", "POST",
                               FEDERATION_MESSAGES_PATH, body, now)) == (403, "untrusted_key")
    assert await post(sign_hop(stranger, "xx-evil", "kh-cnp", "POST",
                               FEDERATION_MESSAGES_PATH, body, now)) == (403,
                                                                         "unknown_partner")
    assert await post(sign_hop(vn.key, "vn-mps", "kh-cnp", "POST", FEDERATION_MESSAGES_PATH,
                               body, now - 10 * 60_000)) == (401, "hop_stale")
    tampered = body.replace(b'"v": 1', b'"v": 2')
    fresh = sign_hop(vn.key, "vn-mps", "kh-cnp", "POST", FEDERATION_MESSAGES_PATH, body, now)
    assert await post(fresh, tampered) == (401, "hop_bad_signature")
    other = sign_hop(vn.key, "vn-mps", "la-mps", "POST", FEDERATION_MESSAGES_PATH, body, now)
    assert await post(other) == (401, "hop_bad_signature")  # signed for another gateway
    assert await post({}) == (401, "hop_unsigned")
    assert before() == state


async def relayable(vn: Gw, kh: Gw, a: GatewayClient,
                    n: int) -> tuple[list[str], dict[str, tuple[bytes, bytes]]]:
    """``n`` messages from officer ``a`` to KH, accepted by VN while KH was stopped; then
    VN is stopped (so that it relays none of them) and KH started again. Their ids, and
    each one's envelope and officer binding, as VN would relay them."""
    await kh.stop()
    ids = await sent_to_kh(a, n)
    rows = {mid: (envelope, binding) for mid, envelope, binding in vn.rows(
        "SELECT m.id, m.envelope, o.binding FROM messages m JOIN officers o"
        " ON o.sign_key_id = m.actor")}
    await vn.stop()
    await kh.start()
    return ids, rows


def batch_of(items: list[tuple[bytes, bytes | None]]) -> bytes:
    return json.dumps({"v": 1, "messages": [
        {"envelope": base64.b64encode(envelope).decode(),
         "binding": None if binding is None else base64.b64encode(binding).decode()}
        for envelope, binding in items]}).encode()


async def post_batch(vn: Gw, kh: Gw, http: aiohttp.ClientSession, body: bytes) -> list[str]:
    """``body`` posted to KH as VN's signed hop request: KH's receipts (status 200)."""
    assert kh.app is not None
    headers = sign_hop(vn.key, "vn-mps", "kh-cnp", "POST", FEDERATION_MESSAGES_PATH, body,
                       kh.app[CLOCK].now_ms())
    async with http.post(kh.url + FEDERATION_MESSAGES_PATH, data=body,
                         headers={**headers, "Content-Type": BATCH_MEDIA_TYPE}) as r:
        assert r.status == 200
        return [str(note) for note in (await r.json())["receipts"]]


async def test_a_relayed_envelope_with_a_forged_binding_is_rejected(vn_kh, http) -> None:
    vn, kh = vn_kh
    a, _ = await officers(vn, kh, http)
    (sent,), rows = await relayable(vn, kh, a, 1)
    envelope, binding = rows[sent]
    # The same envelope, with the binding flipped in one byte: rejected, not stored.
    bad = bytearray(binding)
    bad[len(bad) // 3] ^= 1
    (note,) = await post_batch(vn, kh, http, batch_of([(envelope, bytes(bad))]))
    assert '"outcome":"rejected","reason":"bad_binding"' in note
    assert kh.rows("SELECT COUNT(*) FROM messages WHERE id = ?", sent) == [(0,)]


def resigned(envelope: bytes, key: OfficerSigningKey,
             change: Callable[[bytes, bytes, bytes], tuple[bytes, bytes]]) -> bytes:
    """``envelope`` with its header and what follows the header (up to the signature)
    replaced by ``change(header, rest)``, the header length set again, signed by ``key``:
    bytes whose signature verifies, whatever they hold."""
    signed = envelope[:-64]
    (length,) = struct.unpack_from(">H", signed, 13)
    header, rest = change(signed[15 : 15 + length], signed[15 + length :])
    body = signed[:13] + struct.pack(">H", len(header)) + header + rest
    return body + key.sign(body)


async def test_a_signed_but_malformed_envelope_is_rejected_malformed_envelope(vn_kh,
                                                                             http) -> None:
    """An envelope whose signature verifies but whose inside is not a valid envelope is
    refused ``malformed_envelope`` (not ``bad_signature``: the officer did sign it)."""
    vn, kh = vn_kh
    a, _ = await officers(vn, kh, http)
    (sent,), rows = await relayable(vn, kh, a, 1)
    envelope, binding = rows[sent]
    (count,) = struct.unpack_from(">H", envelope, 15 + struct.unpack_from(">H", envelope, 13)[0])
    assert count == 1
    variants = [
        # a header field twice
        lambda h, r: (h[:-1] + b',"kind":"case"}', r),
        # a header field the format does not have
        lambda h, r: (h[:-1] + b',"case":"K-1"}', r),
        # two wrapped keys for the header's one recipient
        lambda h, r: (h, struct.pack(">H", 2) + r[2:82] + bytes(80) + r[82:]),
        # a byte between the ciphertext and the signature
        lambda h, r: (h, r + b"\x00"),
    ]
    items = [(resigned(envelope, a.creds.signing, v), binding) for v in variants]
    notes = await post_batch(vn, kh, http, batch_of([*items, (envelope, binding)]))
    receipts = [open_receipt(n.encode(), "kh-cnp", [kh.key.public]) for n in notes]
    assert [(r.message_id, r.outcome, r.reason) for r in receipts] == [
        ("", "rejected", "malformed_envelope")] * 4 + [(sent, "accepted", None)]
    assert [r.digest for r in receipts[:4]] == [hashlib.sha256(e).hexdigest()
                                                for e, _ in items]
    assert kh.rows("SELECT id FROM messages") == [(sent,)]


async def test_an_envelope_created_beyond_the_clock_skew_is_rejected_bad_time(vn_kh,
                                                                             http) -> None:
    """``created`` may lie ahead of the receiver's clock by the client skew the sender
    allowed (``clock_skew_seconds``) plus the gateways' (``hop_window_seconds``): 300 +
    60 s by default. Further ahead, within the binding or not, it is refused ``bad_time``
    (the officers' channel's code for the same fault)."""
    vn, kh = vn_kh
    a, k = await officers(vn, kh, http)
    _, rows = await relayable(vn, kh, a, 1)
    ((_, binding),) = rows.values()
    assert kh.app is not None
    now = kh.app[CLOCK].now_ms()

    def sealed(ahead_ms: int) -> bytes:
        mid = new_message_id()
        header = EnvelopeHeader(id=mid, kind="hotline", priority="flash",
                                sender="border-liaison@vn-mps",
                                recipient="anti-trafficking@kh-cnp", created=now + ahead_ms,
                                expires=now + 86_400_000, thread=mid)
        return seal_envelope(header, b'{"type":"hotline","text":"x"}', a.creds.signing,
                             [k.creds.encryption.public])
    envelopes = [sealed(ms) for ms in (350_000, 600_000, 3_600_000)]
    notes = await post_batch(vn, kh, http, batch_of([(e, binding) for e in envelopes]))
    receipts = [open_receipt(n.encode(), "kh-cnp", [kh.key.public]) for n in notes]
    assert [(r.outcome, r.reason) for r in receipts] == [
        ("accepted", None), ("rejected", "bad_time"), ("rejected", "bad_time")]
    assert kh.rows("SELECT COUNT(*) FROM messages") == [(1,)]


async def test_a_batch_checked_in_chunks_answers_every_item_in_order(vn_kh, http) -> None:
    """The receiver checks a batch's signatures a chunk at a time; refusals anywhere in it
    (a chunk's first or last item, a chunk of refusals only) keep their place."""
    vn, kh = vn_kh
    a, _ = await officers(vn, kh, http)
    ids, rows = await relayable(vn, kh, a, 138)
    bad_signature, malformed = {0, 63, 64, 127, 128, 139}, {65, 66}
    genuine = iter(ids)
    items, expected = [], []
    for i in range(140):
        if i in malformed:
            items.append({"envelope": "!!", "binding": None})
            expected.append(("", "rejected", "malformed_item"))
            continue
        mid = next(genuine)
        envelope, binding = rows[mid]
        if i in bad_signature:
            envelope = envelope[:-1] + bytes([envelope[-1] ^ 1])
            expected.append(("", "rejected", "bad_signature"))
        else:
            expected.append((mid, "accepted", None))
        items.append({"envelope": base64.b64encode(envelope).decode(),
                      "binding": base64.b64encode(binding).decode()})
    notes = await post_batch(vn, kh, http, json.dumps({"v": 1, "messages": items}).encode())
    receipts = [open_receipt(n.encode(), "kh-cnp", [kh.key.public]) for n in notes]
    assert [(r.message_id, r.outcome, r.reason) for r in receipts] == expected
    accepted = [mid for mid, outcome, _ in expected if outcome == "accepted"]
    assert [row[0] for row in kh.rows("SELECT message_id FROM inbox ORDER BY seq")] == accepted


async def test_a_batch_cancelled_while_its_chunks_are_checked_leaves_nothing_behind(
        vn_kh, http) -> None:
    """A receive cancelled between two chunks (a stopping gateway) closes the checks of
    the chunks it will not await: no coroutine is left never awaited, nothing stored."""
    vn, kh = vn_kh
    a, _ = await officers(vn, kh, http)
    ids, rows = await relayable(vn, kh, a, 130)
    assert kh.app is not None
    partner = kh.app[PARTNERS].get("vn-mps")
    assert partner is not None
    receive = asyncio.create_task(kh.app[RECEIVER].receive(
        partner, vn.key.public, batch_of([rows[mid] for mid in ids])))
    await asyncio.sleep(0)  # the first chunk is prepared and handed to the worker
    assert not receive.done()
    receive.cancel()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(asyncio.CancelledError) as raised:
            await receive
        del raised, receive  # (their traceback holds the cancelled frames)
        for _ in range(3):  # the loop lets go of the finished task at its next turns
            await asyncio.sleep(0)
            gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]
    assert kh.rows("SELECT COUNT(*) FROM messages") == [(0,)]


async def test_one_message_in_two_concurrent_batches_is_accepted_once(vn_kh, http) -> None:
    """Receipts are signed while the batch commits, as "accepted": one whose accept turned
    out a duplicate (the same id committed by a batch in flight beside it) is signed again
    with what the store said."""
    vn, kh = vn_kh
    a, _ = await officers(vn, kh, http)
    (sent,), rows = await relayable(vn, kh, a, 1)
    body = batch_of([rows[sent]])
    answers = await asyncio.gather(post_batch(vn, kh, http, body),
                                   post_batch(vn, kh, http, body))
    outcomes = sorted(open_receipt(note.encode(), "kh-cnp", [kh.key.public]).outcome
                      for (note,) in answers)
    assert outcomes == ["accepted", "duplicate"]
    assert kh.rows("SELECT COUNT(*) FROM messages WHERE id = ?", sent) == [(1,)]


async def test_read_acknowledgements_from_a_partner_are_checked(vn_kh, http) -> None:
    """VN records a KH officer's read ack only if KH vouches for the officer, the officer
    is of the recipient desk, the ack names a message VN sent there, and it verifies."""
    vn, kh = vn_kh
    a, k = await officers(vn, kh, http)
    await kh.stop()  # nothing relayed: the acks below are the only ones VN sees
    sent = await a.send("hotline", "anti-trafficking@kh-cnp", {"type": "hotline", "text": "x"})
    mid, digest = sent["id"], vn.rows("SELECT digest FROM messages WHERE id = ?", sent["id"])[0][0]
    (binding,) = kh.rows("SELECT binding FROM officers")[0]
    assert vn.app is not None
    now = vn.app[CLOCK].now_ms()

    def ack(message_id: str, signer: Any, at: int = now) -> bytes:
        text = read_text(message_id, digest, at)
        return text + signer.sign(text)

    stranger = OfficerSigningKey.generate()
    forged_binding = bytearray(binding)
    forged_binding[len(binding) // 3] ^= 1
    items = [
        (ack(mid, stranger), binding),  # not the bound officer's key
        (ack("m-" + "0" * 26, k.creds.signing), binding),  # VN never sent it
        (ack(mid, k.creds.signing), bytes(forged_binding)),  # binding not signed by KH
        (b"fpg read v1\n" + b"x" * 80, binding),  # not an acknowledgement
        (ack(mid, k.creds.signing), binding),  # genuine
        (ack(mid, k.creds.signing, now + 1), binding),  # the same officer again
    ]
    body = json.dumps({"v": 1, "reads": [
        {"ack": base64.b64encode(a_).decode(), "binding": base64.b64encode(b).decode()}
        for a_, b in items]}).encode()
    headers = sign_hop(kh.key, "kh-cnp", "vn-mps", "POST", FEDERATION_READS_PATH, body, now)
    async with http.post(vn.url + FEDERATION_READS_PATH, data=body,
                         headers={**headers, "Content-Type": READS_MEDIA_TYPE}) as r:
        assert r.status == 200, await r.text()
        results = (await r.json())["results"]
    assert [(r["outcome"], r["reason"]) for r in results] == [
        ("rejected", "bad_signature"), ("rejected", "unknown_message"),
        ("rejected", "bad_binding"), ("rejected", "malformed_item"),
        ("recorded", None), ("duplicate", None)]
    assert vn.rows("SELECT COUNT(*) FROM reads WHERE message_id = ?", mid) == [(1,)]
    assert [e["type"] for e in (await a.status(mid))["events"]] == ["accepted", "read"]


# --- expiry: nothing is dropped silently ---------------------------------------------------


async def test_a_message_expiring_in_the_outbox_gets_a_signed_non_delivery_notice(
        vn_kh, http) -> None:
    vn, kh = vn_kh
    a, _ = await officers(vn, kh, http)
    events, watcher = await watching(a)
    await kh.stop()
    short = await a.send("hotline", "anti-trafficking@kh-cnp", {"type": "hotline", "text": "1"},
                         lifetime_ms=1500)
    long = await a.send("hotline", "anti-trafficking@kh-cnp", {"type": "hotline", "text": "2"})
    await until(lambda: any(k == "expired" for k, _ in events), "the non-delivery notice", 15)
    expired = next(d for k, d in events if k == "expired")
    assert expired["id"] == short["id"] and expired["reason"] == "expired"
    status = await a.status(short["id"])
    assert [e["type"] for e in status["events"]] == ["accepted", "expired"]
    (note,) = status["notices"]
    notice = open_notice(note.encode(), "vn-mps", vn.key.public)
    assert (notice.message_id, notice.partner, notice.recipient, notice.sender) == (
        short["id"], "kh-cnp", "anti-trafficking@kh-cnp", "border-liaison@vn-mps")
    assert notice.digest == status["digest"] and notice.time_ms >= notice.expires_ms
    assert [r[0] for r in vn.rows("SELECT message_id FROM outbox")] == [long["id"]]
    await kh.start()  # the live one is still relayed; the expired one never is
    await until(lambda: vn.rows("SELECT COUNT(*) FROM outbox")[0][0] == 0, "the relay")
    assert [r[0] for r in kh.rows("SELECT message_id FROM inbox")] == [long["id"]]
    watcher.cancel()


# --- a dead partner delays nobody ----------------------------------------------------------


async def test_an_unreachable_partner_does_not_hold_up_the_others(tmp_path, http) -> None:
    vn, kh, la = (make(tmp_path, n) for n in ("vn-mps", "kh-cnp", "la-mps"))
    pin(vn, kh)
    pin(vn, la)
    await started(vn, kh, la)
    try:
        a = await vn.officer(http, "border-liaison")
        await kh.officer(http, "anti-trafficking")
        await la.officer(http, "anti-trafficking")
        await partner_known(a, "la-mps")
        await partner_known(a, "kh-cnp")
        await la.stop()
        for i in range(20):
            await a.send("hotline", "anti-trafficking@la-mps", {"type": "hotline",
                                                                "text": f"la {i}"})
        sent = await a.send("hotline", "anti-trafficking@kh-cnp",
                            {"type": "hotline", "text": "kh"}, priority="flash")
        await until(lambda: kh.rows("SELECT COUNT(*) FROM inbox WHERE message_id = ?",
                                    sent["id"]) == [(1,)], "KH's delivery while LA is down")
        assert vn.rows("SELECT COUNT(*) FROM outbox WHERE partner = 'la-mps'") == [(20,)]
        await until(lambda: (vn.rows("SELECT failures FROM partner_state WHERE partner ="
                                     " 'la-mps'") or [(0,)])[0][0] >= 2, "LA's retries")
        await la.start()  # LA answers again: its backlog goes at once
        await until(lambda: vn.rows("SELECT COUNT(*) FROM outbox") == [(0,)], "LA's catch-up")
    finally:
        await stop_all(vn, kh, la)



async def test_the_sender_names_its_partner_in_its_log_lines(vn_kh, http) -> None:
    """The partner id is bound once in each sender task's log context, not passed at each
    call: the lines of a failed relay still name it."""
    vn, kh = vn_kh
    a, _ = await officers(vn, kh, http)
    await kh.stop()
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        await a.send("hotline", "anti-trafficking@kh-cnp", {"type": "hotline", "text": "x"})
        await until(lambda: sum(e["event"] == "relay_failed" for e in logs) >= 2,
                    "two failed attempts")
    failed = [e for e in logs if e["event"] == "relay_failed"]
    assert {e.get("partner") for e in failed} == {"kh-cnp"}


# --- a partner that has never answered ------------------------------------------------------


async def test_a_partner_never_heard_from_gives_clear_errors_and_stores_nothing(tmp_path,
                                                                                http) -> None:
    vn, kh = make(tmp_path, "vn-mps"), make(tmp_path, "kh-cnp")
    pin(vn, kh)  # kh-cnp is pinned but never started
    await started(vn)
    try:
        a = await vn.officer(http, "border-liaison")
        headers = {"Authorization": f"Bearer {a._token}"}
        for query, status, code in (("kh-cnp", 503, "partner_directory_unknown"),
                                    ("xx-none", 404, "unknown_gateway")):
            async with http.get(f"{vn.url}/v1/directory?gateway={query}",
                                headers=headers) as r:
                assert (r.status, (await r.json())["error"]) == (status, code)
                assert (r.headers.get("Retry-After") is not None) == (status == 503)
        async with http.get(f"{vn.url}/.well-known/fpg/descriptor?gateway=kh-cnp") as r:
            assert (r.status, (await r.json())["error"]) == (503, "partner_unavailable")
        with pytest.raises(ApiError) as err:
            await a.send("hotline", "anti-trafficking@kh-cnp", {"type": "hotline", "text": "x"})
        assert err.value.status == 503 and err.value.code == "partner_directory_unknown"
        assert vn.rows("SELECT (SELECT COUNT(*) FROM messages), (SELECT COUNT(*) FROM outbox)"
                       ) == [(0, 0)]
    finally:
        await stop_all(vn)


async def test_a_descriptor_past_its_valid_until_is_refused(tmp_path, http) -> None:
    """A gateway signs a fresh descriptor (valid a day) for every request; one whose
    ``valid_until`` has passed is an old copy: refused like one that does not verify, and
    the partner is not updated from it."""
    kh_key = GatewaySigningKey.generate()
    now_ms = int(time.time() * 1000)
    served = {"valid_until": now_ms - 1}

    async def descriptor(_: web.Request) -> web.Response:
        issued = served["valid_until"] - 86_400_000
        note = sign_descriptor(Descriptor("kh-cnp", "http://127.0.0.1:1", kh_key.public,
                                          "fpg/kh-cnp", issued, served["valid_until"]), kh_key)
        return web.Response(body=note, content_type="text/plain")
    fake = web.Application()
    fake.router.add_get(DESCRIPTOR_PATH, descriptor)
    runner = web.AppRunner(fake, handle_signals=False, access_log=None)
    await runner.setup()
    sock = free_socket()
    await web.SockSite(runner, sock).start()
    vn = make(tmp_path, "vn-mps")
    vn.partners["kh-cnp"] = (f"http://127.0.0.1:{sock.getsockname()[1]}",
                             kh_key.public.fingerprint)
    await started(vn)
    try:
        # What a gateway serves: valid a day from now, the fingerprint in its text form.
        async with http.get(vn.url + DESCRIPTOR_PATH) as r:
            own = json.loads((await r.read()).split(b"\n")[1])
        assert own["valid_until"] - own["issued"] == 86_400_000
        assert abs(own["issued"] - now_ms) < 60_000
        (key,) = own["keys"]
        assert key["fingerprint"] == vn.key.public.fingerprint
        assert re.fullmatch(r"[A-Z2-7]{4}( [A-Z2-7]{4}){7}", key["fingerprint"])
        assert vn.app is not None
        partner = vn.app[PARTNERS].get("kh-cnp")
        assert partner is not None
        with capture_logs() as logs:
            with pytest.raises(PeerError, match="descriptor expired"):
                await vn.app[PARTNERS].refresh(partner)
        assert partner.descriptor is None
        # (its refresh loop may have tried again meanwhile: the same refusal)
        refused = {(e["event"], e["error"]) for e in logs if e.get("partner") == "kh-cnp"
                   and e["event"].startswith("partner_descriptor")}
        assert refused == {("partner_descriptor_refused", "expired")}
        served["valid_until"] = now_ms + 86_400_000  # fresh: accepted (then no directory)
        with pytest.raises(PeerError, match="directory request answered HTTP 404"):
            await vn.app[PARTNERS].refresh(partner)
        assert partner.descriptor is not None
        assert partner.descriptor.valid_until == served["valid_until"]
    finally:
        await stop_all(vn)
        await runner.cleanup()


def test_a_batch_body_is_the_compact_json_of_its_messages() -> None:
    items = [OutboxItem(f"m{i}", f"d{i}", b"\x00\xff" * i + b"env",
                        None if i % 2 else b"bind" * i, 0, 0)
             for i in range(5)]
    expected = json.dumps({"v": 1, "messages": [
        {"envelope": base64.b64encode(item.envelope).decode(),
         "binding": None if item.binding is None else base64.b64encode(item.binding).decode()}
        for item in items]}, separators=(",", ":")).encode()
    assert batch_body(items) == expected
    assert json.loads(batch_body([])) == {"v": 1, "messages": []}


def test_batch_size_cannot_exceed_what_every_receiver_accepts(tmp_path) -> None:
    """A sender's ``batch_size`` is capped at the protocol's limit, the count any receiver
    accepts (docs/PROTOCOL.md 10.4), so no configuration makes batches that are refused."""
    gw = make(tmp_path, "vn-mps")
    gw.federation["batch_size"] = MAX_BATCH_ITEMS
    assert gw.config().federation.batch_size == 5000
    gw.federation["batch_size"] = MAX_BATCH_ITEMS + 1
    with pytest.raises(ConfigError, match="batch_size"):
        gw.config()


def test_a_batch_is_cut_to_the_body_size_a_receiver_accepts() -> None:
    """``batch_bytes`` bounds the body as sent (base64), not the envelopes as stored: the
    batch is the longest head of the queue whose body fits, and never empty."""
    rng = random.Random(19)
    for _ in range(300):
        items = [OutboxItem(f"m{i}", "d", bytes(rng.randrange(3000)),
                            None if rng.random() < 0.3 else bytes(rng.randrange(900)), 0, 0)
                 for i in range(rng.randrange(1, 12))]
        whole = len(batch_body(items))
        assert within_bytes(items, whole) == items
        if len(items) > 1:
            assert within_bytes(items, whole - 1) == items[:-1]
        limit = rng.randrange(20, 20_000)
        cut = within_bytes(items, limit)
        assert cut == items[:len(cut)] and cut
        assert len(cut) == 1 or len(batch_body(cut)) <= limit
        assert cut == items or len(batch_body(items[:len(cut) + 1])) > limit


async def test_batches_fit_the_partners_batch_bytes_after_base64(tmp_path, http) -> None:
    """Thirty 5 KiB messages queued for a partner that accepts 64 KiB bodies: counted as
    stored, twelve fit in 64 KiB; in base64 their body would be refused 413. Each batch
    must fit as sent, so the backlog drains without a refused batch."""
    vn, kh = make(tmp_path, "vn-mps"), make(tmp_path, "kh-cnp")
    vn.federation["batch_bytes"] = kh.federation["batch_bytes"] = 64 * 1024
    pin(vn, kh)
    await started(vn, kh)
    try:
        a, _ = await officers(vn, kh, http)
        await kh.stop()
        ids = []
        for i in range(30):
            answer = await a.send("hotline", "anti-trafficking@kh-cnp",
                                  {"type": "hotline", "text": f"{i}" + "x" * 5000})
            ids.append(answer["id"])
        with capture_logs() as logs:
            await kh.start()
            await until(lambda: vn.rows("SELECT COUNT(*) FROM outbox") == [(0,)], "the drain")
        # An attempt begun before KH listened again may still fail to connect; what must
        # not happen is a batch KH answers, refuses or cuts short.
        assert [e for e in logs if e["event"] in ("relay_batch_refused", "relay_refused")
                or (e["event"] == "relay_failed" and "unreachable" not in e["error"])] == []
        assert [r[0] for r in kh.rows("SELECT message_id FROM inbox ORDER BY seq")] == ids
    finally:
        await stop_all(vn, kh)


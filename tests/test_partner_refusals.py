"""Partner limits known before sending; messages a partner refuses leave the queue.

KH accepts relay batches of at most 64 KiB (``batch_bytes``, its smallest) and says so in
its descriptor. VN's officer sends a message of about 70 KB sealed:

* while VN knows KH's limit, the send is refused at once (413 ``too_large_for_partner``,
  naming KH's limit);
* accepted by VN while KH still said 8 MiB, then KH comes back with 64 KiB: KH answers the
  batch holding it ``413 too_large``. VN splits the batch, the messages around the large
  one arrive, the large one leaves the outbox with a signed non-delivery notice (ledger
  event ``rejected``), and KH is never marked down.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import aiohttp
import pytest
from structlog.testing import capture_logs

from gateway.appkeys import METRICS, PARTNERS
from gateway.client.api import ApiError
from gateway.crypto.keys import GatewaySigningKey
from gateway.errors import MalformedError
from gateway.federation.sender import batch_body
from gateway.protocol.descriptor import (
    DESCRIPTOR,
    Descriptor,
    Limits,
    sign_descriptor,
    verify_descriptor,
)
from gateway.protocol.notices import open_notice
from gateway.store import OutboxItem
from tests.helpers import T0, make, officers, pin, started, stop_all, until

SMALL_BATCHES = 64 * 1024
BIG = {"type": "hotline", "text": "photo", "attachment": "x" * 70_000}


def _outbox(gw) -> int:
    return gw.rows("SELECT COUNT(*) FROM outbox")[0][0]


async def test_a_message_too_large_for_the_partner_is_refused_at_send(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    vn, kh = make(tmp_path, "vn-mps"), make(tmp_path, "kh-cnp")
    kh.federation["batch_bytes"] = SMALL_BATCHES
    pin(vn, kh)
    await started(vn, kh)
    try:
        assert vn.app is not None
        a, _ = await officers(vn, kh, http)
        limits = vn.app[PARTNERS].by_id["kh-cnp"].descriptor.limits  # type: ignore[union-attr]
        assert limits == Limits(envelope_bytes=8 * 1024 * 1024, batch_bytes=SMALL_BATCHES)
        (binding,), = vn.rows("SELECT binding FROM officers WHERE sign_key_id = ?",
                              a.creds.signing.public.key_id)
        largest = limits.largest_envelope(len(binding))
        with pytest.raises(ApiError) as refused:
            await a.send("hotline", "anti-trafficking@kh-cnp", BIG, priority="flash")
        assert refused.value.status == 413 and refused.value.code == "too_large_for_partner"
        assert f"kh-cnp accepts messages of at most {largest / 1024:.1f} KiB ({largest} bytes)" \
            in refused.value.message
        assert _outbox(vn) == 0 and vn.rows("SELECT COUNT(*) FROM messages") == [(0,)]
        # A message within the limit goes as ever.
        answer = await a.send("hotline", "anti-trafficking@kh-cnp",
                              {"type": "hotline", "text": "small"}, priority="flash")
        assert answer["status"] == "accepted"
        await until(lambda: _outbox(vn) == 0, "the small message to leave")
    finally:
        await stop_all(vn, kh)


async def test_a_refused_message_is_returned_and_the_others_flow(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    vn, kh = make(tmp_path, "vn-mps"), make(tmp_path, "kh-cnp")
    # No probe and no backoff end during the test: only the kick below sends.
    vn.federation.update(retry_first_seconds=30.0, retry_max_seconds=60.0,
                         health_seconds=60.0, directory_max_age_seconds=60.0)
    pin(vn, kh)
    await started(vn, kh)
    try:
        assert vn.app is not None
        a, k = await officers(vn, kh, http)
        partner = vn.app[PARTNERS].by_id["kh-cnp"]
        await kh.stop()
        sent = []
        for doc in ({"type": "hotline", "text": "before"}, BIG,
                    {"type": "hotline", "text": "after"}):
            answer = await a.send("hotline", "anti-trafficking@kh-cnp", doc, priority="flash")
            assert answer["status"] == "accepted"  # VN knows KH's old limit: 8 MiB
            sent.append(answer["id"])
        await until(lambda: vn.rows("SELECT failures FROM partner_state") == [(1,)],
                    "the attempt while KH is away")
        kh.federation["batch_bytes"] = SMALL_BATCHES  # its operator lowered the limit
        await kh.start()
        with capture_logs() as logs:
            partner.kick.set()  # VN still believes the old descriptor: one batch of three
            await until(lambda: _outbox(vn) == 0, "the outbox to empty")
        events = [e["event"] for e in logs]
        assert "relay_batch_refused" in events  # the batch of three, split
        assert "partner_down" not in events and partner.up is True
        assert vn.rows("SELECT failures FROM partner_state") == [(0,)]

        before, big, after = sent
        arrived = {r[0] for r in kh.rows("SELECT message_id FROM inbox")}
        assert arrived == {before, after}
        # The notice: signed by VN, for the sending desk, with KH's reason.
        (note,), = vn.rows("SELECT notice FROM notices WHERE message_id = ?", big)
        notice = open_notice(note, "vn-mps", vn.key.public)
        assert (notice.reason, notice.partner, notice.sender) == (
            "too_large", "kh-cnp", "border-liaison@vn-mps")
        status = await a.status(big)
        assert [e["type"] for e in status["events"]][-1] == "rejected"
        assert status["events"][-1]["reason"] == "too_large"
        assert status["notices"] == [note.decode()]
        metrics = vn.app[METRICS]
        assert metrics.value("fpg_partner_refused_messages_total", partner="kh-cnp",
                             reason="too_large") == 1
        assert metrics.value("fpg_relay_retries_total", partner="kh-cnp") == 1  # the outage
        # Later messages flow, in full batches.
        answer = await a.send("hotline", "anti-trafficking@kh-cnp",
                              {"type": "hotline", "text": "later"}, priority="routine")
        await until(lambda: _outbox(vn) == 0, "the later message")
        inbox = await k.inbox("anti-trafficking")
        assert {m["id"] for m in inbox["messages"]} == {before, after, answer["id"]}
        await asyncio.sleep(0)
    finally:
        await stop_all(vn, kh)


async def test_a_message_rejected_in_its_receipt_gets_a_notice(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """KH's receipt rejects a message (its id is taken there: ``id_conflict``): the message
    leaves VN's outbox with the receipt and a signed notice, and KH stays up."""
    vn, kh = make(tmp_path, "vn-mps"), make(tmp_path, "kh-cnp")
    pin(vn, kh)
    await started(vn, kh)
    try:
        assert vn.app is not None
        a, k = await officers(vn, kh, http)
        taken = await k.send("hotline", "anti-trafficking@kh-cnp",
                             {"type": "hotline", "text": "local"}, priority="routine")
        answer = await a.send("hotline", "anti-trafficking@kh-cnp",
                              {"type": "hotline", "text": "relayed"}, priority="flash",
                              message_id=taken["id"])
        assert answer["status"] == "accepted"
        await until(lambda: _outbox(vn) == 0, "the outbox to empty")
        assert vn.rows("SELECT outcome, reason FROM receipts") == [("rejected", "id_conflict")]
        (note,), = vn.rows("SELECT notice FROM notices WHERE message_id = ?", taken["id"])
        notice = open_notice(note, "vn-mps", vn.key.public)
        assert notice.reason == "id_conflict"
        status = await a.status(taken["id"])
        assert [e["type"] for e in status["events"]][-3:] == ["relayed", "receipt", "rejected"]
        assert vn.app[METRICS].value("fpg_partner_refused_messages_total", partner="kh-cnp",
                                     reason="id_conflict") == 1
        assert vn.app[PARTNERS].by_id["kh-cnp"].up is True
    finally:
        await stop_all(vn, kh)


def test_descriptor_limits_are_optional_and_checked() -> None:
    """An older descriptor (no ``limits``) reads as limits unknown, which refuse nothing;
    stated ones must be positive integers; the batch limit holds the envelope in base64."""
    key = GatewaySigningKey.generate()
    base = Descriptor("kh-cnp", "http://127.0.0.1:1", key.public, "fpg/kh-cnp", T0,
                      T0 + 1000)
    old = sign_descriptor(base, key)
    assert b"limits" not in old
    assert verify_descriptor(old, "kh-cnp", key.public).limits == Limits()
    assert Limits().fits(10**9, 10**6) and Limits().largest_envelope(100) is None
    stated = dataclasses.replace(base, limits=Limits(envelope_bytes=1000, batch_bytes=65536))
    assert verify_descriptor(sign_descriptor(stated, key), "kh-cnp",
                             key.public).limits == stated.limits
    for bad in ({"envelope_bytes": 0}, {"batch_bytes": "8"}, {"batch_bytes": True}, []):
        doc = {**stated.to_json(), "limits": bad}
        note = DESCRIPTOR.sign(DESCRIPTOR.text(doc), "kh-cnp", key)
        with pytest.raises(MalformedError):
            verify_descriptor(note, "kh-cnp", key.public)
    batch = Limits(batch_bytes=65536)
    largest = batch.largest_envelope(700)
    assert largest is not None and largest % 3 == 0
    assert batch.fits(largest, 700) and not batch.fits(largest + 1, 700)
    assert len(batch_body_of(largest, 700)) <= 65536 < len(batch_body_of(largest + 3, 700))
    assert Limits(envelope_bytes=1000, batch_bytes=65536).largest_envelope(700) == 1000


def batch_body_of(envelope: int, binding: int) -> bytes:
    item = OutboxItem("m", "d", b"\x00" * envelope, b"\x00" * binding, 0, 0)
    return batch_body([item])

"""Queue control through the admin socket (gateway.federation.queue): list, show and return
messages waiting for a partner, and a return racing the sender.

In-process gateways on 127.0.0.1 (tests.helpers.Gw) with their real admin socket; the
race tests hold one step still with an injected gate: VN's hop request to KH (a partner
that stalls), or the return's read of the outbox.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.appkeys import PARTNERS, STORE
from gateway.channels import admin
from gateway.cli.admin import admin_request
from gateway.cli.queue import format_message, format_queue
from gateway.client.cli import event_line, notice_text, watch
from gateway.errors import GatewayError
from gateway.federation.partners import FEDERATION_MESSAGES_PATH, Partner
from gateway.ledger.events import decode_entry
from gateway.protocol.notices import MAX_NOTE, NonDeliveryNotice, open_notice
from tests.helpers import Gw, officers, until

TEXT = "Queue test 5R: plaintext the operator never sees."
REASON = "partner link under maintenance; resend by fax"


async def refused(socket: Path, method: str, path: str, body: Any = None) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        await admin_request(socket, method, path, body)
    return caught.value


def ledger_of(gw: Gw, message_id: str) -> list[dict[str, Any]]:
    return [decode_entry(row[0]) for row in gw.rows(
        "SELECT entry FROM ledger ORDER BY seq") if decode_entry(row[0]).get("msg") == message_id]


def outbox_ids(gw: Gw) -> set[str]:
    return {row[0] for row in gw.rows("SELECT message_id FROM outbox")}


async def test_list_show_and_return_a_message_queued_for_a_partner_that_is_down(
        vn_kh, http: aiohttp.ClientSession, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    vn, kh = vn_kh
    assert vn.app is not None
    a, k = await officers(vn, kh, http)
    await kh.stop()
    first = (await a.send("hotline", "anti-trafficking@kh-cnp",
                          {"type": "hotline", "text": TEXT}, priority="flash"))["id"]
    second = (await a.send("hotline", "anti-trafficking@kh-cnp",
                           {"type": "hotline", "text": "other"}, priority="routine"))["id"]
    socket = tmp_path / "admin.sock"
    async with admin.serving(vn.app, socket):
        empty_partner = await refused(socket, "GET", "/queue?partner=xx-none")
        assert empty_partner.code == "unknown_partner"
        # The sender tried (KH is down; probed with the first message): the attempts and
        # the last error are on its row.
        await until(lambda: vn.rows("SELECT attempts FROM outbox WHERE message_id = ?",
                                    first) >= [(2,)], "two attempts counted")
        listing = await admin_request(socket, "GET", "/queue")
        assert [m["id"] for m in listing["messages"]] == [first, second]  # flash first
        m = listing["messages"][0]
        assert (m["partner"], m["sender"], m["recipient"], m["kind"], m["priority"]) == (
            "kh-cnp", "border-liaison@vn-mps", "anti-trafficking@kh-cnp", "hotline", "flash")
        assert m["size"] > 0 and m["attempts"] >= 1 and m["last_error"]
        by_partner = await admin_request(socket, "GET", "/queue?partner=kh-cnp")
        assert [x["id"] for x in by_partner["messages"]] == [first, second]
        text = format_queue(listing)
        assert text.splitlines()[0].split()[:3] == ["ID", "PARTNER", "DESK"]
        assert first in text and "(queue empty)" not in text
        shown = await admin_request(socket, "GET", f"/queue/{first}")
        assert shown["message"]["id"] == first and shown["message"]["in_flight"] is False
        assert "ciphertext, not shown" in format_message(shown)
        envelope = vn.rows("SELECT envelope FROM messages WHERE id = ?", first)[0][0]
        for doc in (listing, shown):
            dumped = json.dumps(doc)
            assert TEXT not in dumped and "envelope" not in dumped
            assert envelope.hex()[:64] not in dumped

        # Refusals change nothing.
        assert (await refused(socket, "GET", "/queue/not-an-id")).code == "bad_message_id"
        assert (await refused(socket, "GET", f"/queue/{'0' * 32}")).code == "not_queued"
        for bad in ("", "   ", "line one\nline two", "bell\x07", "x" * (MAX_NOTE + 1)):
            error = await refused(socket, "POST", f"/queue/{first}/return", {"reason": bad})
            assert error.code == "bad_reason", bad
        assert (await refused(socket, "POST", f"/queue/{first}/return",
                              {"why": REASON})).code == "bad_reason"
        assert (await refused(socket, "POST", f"/queue/{'0' * 32}/return",
                              {"reason": REASON})).code == "not_queued"
        assert outbox_ids(vn) == {first, second}
        assert vn.rows("SELECT COUNT(*) FROM notices") == [(0,)]
        before = max([0, *(n["cursor"] for n in
                           (await a.notices("border-liaison"))["notices"])])

        answer = await admin_request(socket, "POST", f"/queue/{first}/return",
                                     {"reason": REASON})
        assert (answer["id"], answer["partner"], answer["sender"]) == (
            first, "kh-cnp", "border-liaison@vn-mps")
        again = await refused(socket, "POST", f"/queue/{first}/return", {"reason": REASON})
        assert again.code == "not_queued"
        assert outbox_ids(vn) == {second}
        listing = await admin_request(socket, "GET", "/queue")
        assert [x["id"] for x in listing["messages"]] == [second]

    # The ledger: a ``rejected`` event with reason ``returned``, never the operator's text.
    events = ledger_of(vn, first)
    assert [e["type"] for e in events] == ["accepted", "rejected"]
    assert events[-1]["reason"] == "returned" and events[-1]["partner"] == "kh-cnp"
    ledger_bytes = b"".join(row[0] for row in vn.rows("SELECT entry FROM ledger"))
    assert REASON.encode() not in ledger_bytes
    # The signed notice carries it; the sending desk finds it among its notices.
    (note,), = vn.rows("SELECT notice FROM notices WHERE message_id = ?", first)
    signed = open_notice(note, "vn-mps", vn.key.public)
    assert (signed.reason, signed.note, signed.partner) == ("returned", REASON, "kh-cnp")
    listed = await a.notices("border-liaison", unread=True)
    (n,) = [x for x in listed["notices"] if x.get("id") == first]
    assert (n["event"], n["reason"], n["note"]) == ("rejected", "returned", REASON)
    line = await notice_text(a, n)
    assert "NOT DELIVERED" in line and "returned by the operator" in line and REASON in line
    status = await a.status(first)
    assert status["notices"] == [note.decode()]
    # `gateway-client watch` shows the ``rejected`` event (here replayed from the cursor).
    capsys.readouterr()
    assert await asyncio.wait_for(watch(a, None, 1, False, since=before), 10) == 0
    (shown_line,) = [x for x in capsys.readouterr().out.splitlines() if "NOT DELIVERED" in x]
    assert first in shown_line and "returned by the operator" in shown_line
    assert REASON in shown_line

    # KH comes back: the other message arrives, the returned one never does.
    await kh.start()
    vn.app[PARTNERS].by_id["kh-cnp"].kick.set()
    await until(lambda: not outbox_ids(vn), "the queue to drain")
    arrived = {m["id"] for m in (await k.inbox("anti-trafficking"))["messages"]}
    assert arrived == {second}


def test_notices_without_a_note_keep_their_bytes_and_a_bad_note_is_refused() -> None:
    from gateway.crypto.keys import GatewaySigningKey
    from gateway.errors import MalformedError

    key = GatewaySigningKey.generate()
    plain = NonDeliveryNotice("vn-mps", "kh-cnp", "a" * 32, "b" * 64, "x@vn-mps", "y@kh-cnp",
                              1, "expired", 2)
    assert '"note"' not in plain.text()
    assert open_notice(plain.sign(key), "vn-mps", key.public) == plain
    noted = NonDeliveryNotice("vn-mps", "kh-cnp", "a" * 32, "b" * 64, "x@vn-mps", "y@kh-cnp",
                              1, "returned", 2, "call us")
    assert open_notice(noted.sign(key), "vn-mps", key.public).note == "call us"
    # A gateway that signed a note with an escape sequence still does not reach a terminal.
    sneaky = NonDeliveryNotice("vn-mps", "kh-cnp", "a" * 32, "b" * 64, "x@vn-mps", "y@kh-cnp",
                               1, "returned", 2, "\x1b[2Jgone")
    with pytest.raises(MalformedError):
        open_notice(sneaky.sign(key), "vn-mps", key.public)


def test_watch_shows_rejected_and_returned_events() -> None:
    refused_line = event_line("rejected", {"desk": "border-liaison@vn-mps", "id": "m1",
                                           "partner": "kh-cnp", "reason": "too_large"})
    assert "NOT DELIVERED" in refused_line and "kh-cnp refused it (too_large)" in refused_line
    returned_line = event_line("rejected", {"desk": "border-liaison@vn-mps", "id": "m2",
                                            "partner": "kh-cnp", "reason": "returned",
                                            "note": REASON})
    assert "NOT DELIVERED" in returned_line and "returned by the operator" in returned_line
    assert REASON in returned_line


def gate_hop(partner_app_partners: Any, path: str) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold VN's hop requests to ``path`` until released: (entered, release)."""
    entered, release = asyncio.Event(), asyncio.Event()
    original = partner_app_partners.request

    async def request(partner: Partner, method: str, p: str, *args: Any,
                      **kw: Any) -> tuple[int, bytes]:
        if p == path:
            entered.set()
            await release.wait()
        result: tuple[int, bytes] = await original(partner, method, p, *args, **kw)
        return result
    partner_app_partners.request = request
    return entered, release


async def test_a_return_while_the_partner_holds_the_batch_is_refused_and_delivery_wins(
        vn_kh, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    vn, kh = vn_kh
    assert vn.app is not None
    a, k = await officers(vn, kh, http)
    entered, release = gate_hop(vn.app[PARTNERS], FEDERATION_MESSAGES_PATH)
    mid = (await a.send("hotline", "anti-trafficking@kh-cnp",
                        {"type": "hotline", "text": "stalled"}, priority="flash"))["id"]
    socket = tmp_path / "admin.sock"
    async with admin.serving(vn.app, socket):
        await asyncio.wait_for(entered.wait(), 10)  # the batch is posted; KH stalls
        shown = await admin_request(socket, "GET", f"/queue/{mid}")
        assert shown["message"]["in_flight"] is True
        error = await refused(socket, "POST", f"/queue/{mid}/return", {"reason": REASON})
        assert error.code == "in_flight"
        assert outbox_ids(vn) == {mid} and vn.rows("SELECT COUNT(*) FROM notices") == [(0,)]
        release.set()
        await until(lambda: not outbox_ids(vn), "the delivery to be recorded")
        late = await refused(socket, "POST", f"/queue/{mid}/return", {"reason": REASON})
        assert late.code == "not_queued"
    # Exactly one outcome: delivered, and no notice, no ``rejected`` event.
    assert {m["id"] for m in (await k.inbox("anti-trafficking"))["messages"]} == {mid}
    assert vn.rows("SELECT COUNT(*) FROM notices") == [(0,)]
    assert "rejected" not in [e["type"] for e in ledger_of(vn, mid)]


def gate_store(store: Any, name: str) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold calls of ``store.name`` until released: (entered, release)."""
    entered, release = asyncio.Event(), asyncio.Event()
    original: Callable[..., Awaitable[Any]] = getattr(store, name)

    async def gated(*args: Any, **kw: Any) -> Any:
        entered.set()
        await release.wait()
        return await original(*args, **kw)
    setattr(store, name, gated)
    return entered, release


async def test_a_return_that_claimed_first_keeps_the_sender_from_posting(
        vn_kh, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    vn, kh = vn_kh
    assert vn.app is not None
    a, k = await officers(vn, kh, http)
    await kh.stop()
    mid = (await a.send("hotline", "anti-trafficking@kh-cnp",
                        {"type": "hotline", "text": "returned"}, priority="flash"))["id"]
    other = (await a.send("hotline", "anti-trafficking@kh-cnp",
                          {"type": "hotline", "text": "other"}, priority="routine"))["id"]
    await until(lambda: vn.rows("SELECT attempts FROM outbox WHERE message_id = ?", mid)
                >= [(1,)], "an attempt")
    store = vn.app[STORE]
    reads: list[int] = []
    read_batch = store.outbox_batch

    async def counted(*args: Any) -> Any:
        found = await read_batch(*args)
        reads.append(len(found))
        return found
    store.outbox_batch = counted  # type: ignore[method-assign]
    entered, release = gate_store(store, "queued_items")
    socket = tmp_path / "admin.sock"
    async with admin.serving(vn.app, socket):
        returning = asyncio.create_task(
            admin_request(socket, "POST", f"/queue/{mid}/return", {"reason": REASON}))
        await asyncio.wait_for(entered.wait(), 10)  # claimed; its outbox read waits
        # KH is back and the sender reads its outbox with the message still in it: it
        # must leave it out of what it posts.
        await kh.start()
        before = len(reads)
        vn.app[PARTNERS].by_id["kh-cnp"].kick.set()
        await until(lambda: len(reads) > before, "the sender to read its outbox")
        await asyncio.sleep(0.5)  # (time to post, if it were going to)
        assert kh.rows("SELECT COUNT(*) FROM messages") == [(0,)]
        release.set()
        answer = await asyncio.wait_for(returning, 10)
        assert answer["id"] == mid
        await until(lambda: not outbox_ids(vn), "the other message to leave")
    # Exactly one outcome: returned, never delivered; the one behind it flows.
    assert {m["id"] for m in (await k.inbox("anti-trafficking"))["messages"]} == {other}
    assert [e["type"] for e in ledger_of(vn, mid)] == ["accepted", "rejected"]
    assert kh.rows("SELECT COUNT(*) FROM messages WHERE id = ?", mid) == [(0,)]

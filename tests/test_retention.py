"""Retention (gateway/retention.py): ciphertext older than store.retention_days goes;
what proves the message was sent, delivered and read stays, and the ledger verifies."""

from __future__ import annotations

import sqlite3

import aiohttp
import pytest

from gateway.app import create_app
from gateway.appkeys import CLOCK, STORE
from gateway.client.api import ApiError
from gateway.clock import ManualClock
from gateway.config import parse_config
from gateway.crypto.keyfile import KeyBundle
from gateway.crypto.keys import ROLE_GATEWAY_SIGNING
from gateway.crypto.note import NoteSigner, NoteVerifier
from gateway.ledger.ledger import Ledger
from gateway.retention import DAY_MS, Retention
from gateway.store.sqlite import SqliteStore
from tests.helpers import (
    GATEWAY_KEY,
    T0,
    Officer,
    db_path,
    enrolled_officer,
    incoming,
    make_envelope,
)

ORIGIN = "fpg/vn-mps"


async def test_old_ciphertext_goes_and_the_ledger_still_verifies(tmp_path) -> None:
    store = await SqliteStore.open(db_path(tmp_path))
    clock = ManualClock(T0)
    try:
        a, b = Officer(), Officer()
        old, queued, recent = (make_envelope(a, [b]) for _ in range(3))
        await store.accept(incoming(old))
        await store.accept(incoming(queued, relay_to="kh-cnp"))  # waits for the partner
        await store.accept(incoming(recent, now=T0 + 29 * DAY_MS))
        clock.advance(31 * 86_400)
        assert await Retention(store, clock, 30).purge() == 1
        assert await Retention(store, clock, 30).purge() == 0
        kept = {m.header.id: await store.get_message(m.header.id)
                for m in (old, queued, recent)}
        gone = kept[old.header.id]
        assert gone is not None and gone.envelope == b"" and gone.digest == old.digest
        assert [kept[m.header.id].envelope for m in (queued, recent)] == [queued.raw,
                                                                          recent.raw]
        ledger = Ledger(store, ORIGIN, [NoteVerifier(ORIGIN, GATEWAY_KEY.public)],
                        NoteSigner(ORIGIN, GATEWAY_KEY), clock)
        await ledger.make_checkpoint()
        assert await ledger.verify() == store.ledger_size() > 0
    finally:
        await store.close()


async def test_a_purged_message_answers_gone_and_keeps_its_status(tmp_path,
                                                                 aiohttp_server) -> None:
    config = parse_config(
        {"gateway": {"id": "vn-mps", "public_url": "http://127.0.0.1:1",
                     "data_dir": str(tmp_path)},
         "keys": {"file": "unused.key"}, "log": {"level": "error"},
         "store": {"retention_days": 30}}, tmp_path / "gw.toml")
    app = create_app(config, KeyBundle("vn-mps", {ROLE_GATEWAY_SIGNING: GATEWAY_KEY}))
    server = await aiohttp_server(app)
    for desk in ("trafficking", "border-liaison"):
        await app[STORE].add_desk(desk, None, app[CLOCK].now_ms())
    async with aiohttp.ClientSession() as http:
        a = await enrolled_officer(app, server, http, "trafficking")
        b = await enrolled_officer(app, server, http, "border-liaison")
        mid = (await a.send("hotline", "border-liaison", {"type": "hotline",
                                                          "text": "evidence"}))["id"]
        await b.read(mid)
        assert await app[STORE].purge_envelopes(app[CLOCK].now_ms() + 1, 100) == 1
        with pytest.raises(ApiError) as gone:
            await b.open(mid)
        assert (gone.value.status, gone.value.code) == (410, "purged")
        status = await a.status(mid)
        assert status["digest"] and [r["officer"] for r in status["reads"]] != []
    with sqlite3.connect(tmp_path / "gateway.sqlite3") as db:
        assert db.execute("SELECT length(envelope) FROM messages").fetchall() == [(0,)]

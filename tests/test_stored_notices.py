"""Stored desk notices in the store: the upgrade of a version 11 database, breach and
non-delivery notices written in the transaction of their cause, unread counts per officer.

Real SQLite files; the gateway-level behaviour (inbox, reading by cursor, stream replay)
is in tests/test_notices_e2e.py.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from gateway.store import Breach, NewNotice, NonDelivery
from gateway.store.schema import MIGRATIONS
from gateway.store.sqlite import SqliteStore
from gateway.store.sqlite.engine import _split_sql
from tests.helpers import T0, Officer, db_path, incoming, make_envelope


def version_11(path: Path) -> None:
    """A database exactly as a gateway of schema version 11 left it, with two membership
    notices (one ledgered)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for version, script in MIGRATIONS:
            if version > 11:
                break
            for statement in _split_sql(script):
                if statement.strip():
                    db.execute(statement)
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        db.execute("INSERT INTO desks (name, supervisor, created_ms) VALUES ('d', NULL, 0)")
        db.executemany("INSERT INTO desk_notices (desk, kind, officer_id, by, at_ms,"
                       " ledger_seq) VALUES (?,?,?,?,?,?)",
                       [("d", "joined", "off-1", "operator", T0, 0),
                        ("d", "pending", "off-2", None, T0 + 1, None)])


async def test_a_version_11_database_keeps_its_notices_and_counts_none_unread(
        tmp_path) -> None:
    path = db_path(tmp_path)
    version_11(path)
    store = await SqliteStore.open(path)
    try:
        old = await store.desk_notices("d", 0, 10)
        assert [(n.seq, n.kind, n.officer, n.by) for n in old] == [
            (1, "joined", "off-1", "operator"), (2, "pending", "off-2", None)]
        assert await store.membership_entries("d") == {"off-1": 0}
        # Notices shown before the upgrade (clients kept their own cursor) are not news.
        assert await store.unread_notices("d", "off-3", 0) == 0
        async with store.transaction() as tx:  # a notice about no officer fits the table
            await tx.execute("INSERT INTO desk_notices (desk, kind, at_ms, message_id,"
                             " detail) VALUES ('d', 'breach', ?, 'm', '{}')", (T0 + 2,))
        new = await store.desk_notices("d", 2, 10)
        assert [(n.seq, n.kind, n.officer) for n in new] == [(3, "breach", None)]
        assert await store.unread_notices("d", "off-3", 0) == 1
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT max(version) FROM schema_version").fetchone()[0] == (
            MIGRATIONS[-1][0])
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE"
                                             " tbl_name = 'desk_notices' AND type = 'index'")}
        assert {"desk_notices_by_desk", "desk_notices_unledgered"} <= indexes


async def test_breach_notices_are_stored_with_the_breach_once(tmp_path) -> None:
    store = await SqliteStore.open(db_path(tmp_path))
    try:
        a, b = Officer(), Officer()
        envelope = make_envelope(a, [b])
        await store.accept(incoming(envelope))
        mid = envelope.header.id
        notices = (NewNotice("border-liaison@vn-mps", "breach", mid, T0, {"id": mid}),
                   NewNotice("supervisors@vn-mps", "escalation", mid, T0, {"id": mid},
                             b"signed note"))
        breach = Breach(mid, "read", "border-liaison@vn-mps", "flash", T0, T0,
                        "supervisors@vn-mps", b"signed note", notices)
        assert await store.record_breaches([breach]) == [breach]
        assert await store.record_breaches([breach]) == []  # told once, stored once
        stored = await store.desk_notices(None, 0, 10)
        assert [(n.desk, n.kind, n.message_id, n.note) for n in stored] == [
            ("border-liaison", "breach", mid, None),
            ("supervisors", "escalation", mid, b"signed note")]
        assert stored[1].to_json("vn-mps")["notice"] == "c2lnbmVkIG5vdGU="
    finally:
        await store.close()


async def test_a_non_delivery_notice_is_stored_for_the_sending_desk_in_its_commit(
        tmp_path) -> None:
    store = await SqliteStore.open(db_path(tmp_path))
    poked: list[int] = []
    store.on_notices.append(lambda: poked.append(1))
    try:
        a, b = Officer(), Officer()
        envelope = make_envelope(a, [b], to="anti-trafficking@kh-cnp")
        await store.accept(incoming(envelope, relay_to="kh-cnp"))
        assert poked == []
        mid = envelope.header.id
        notice = NonDelivery(mid, envelope.header.sender, "expired", b"signed", T0 + 9, "key")
        assert await store.record_expiry("kh-cnp", [notice]) == 1
        assert poked == [1]  # the feed is told after the commit
        [stored] = await store.desk_notices(None, 0, 10)
        assert (stored.desk, stored.kind, stored.message_id, stored.note, stored.at_ms) == (
            envelope.header.sender.partition("@")[0], "expired", mid, b"signed", T0 + 9)
        assert json.loads(stored.detail or "") == {
            "id": mid, "partner": "kh-cnp", "reason": "expired", "time": T0 + 9}
    finally:
        await store.close()


async def test_unread_notices_are_counted_per_officer_and_marked_read(tmp_path) -> None:
    store = await SqliteStore.open(db_path(tmp_path))
    try:
        async with store.transaction() as tx:
            for at in (T0, T0 + 1, T0 + 2):
                await tx.execute("INSERT INTO desk_notices (desk, kind, at_ms, message_id,"
                                 " detail) VALUES ('d', 'breach', ?, 'm', '{}')", (at,))
            await tx.execute("INSERT INTO desk_notices (desk, kind, at_ms, message_id,"
                             " detail) VALUES ('e', 'breach', ?, 'm', '{}')", (T0,))
        assert await store.unread_notices("d", "off-1", 0) == 3
        assert await store.unread_notices("d", "off-1", T0 + 1) == 2  # joined since
        assert await store.mark_notices_read("d", "off-1", [1, 1, 4, 99], T0 + 5) == 1
        assert await store.mark_notices_read("d", "off-1", [1], T0 + 6) == 0  # already
        assert await store.unread_notices("d", "off-1", 0) == 2
        assert await store.unread_notices("d", "off-2", 0) == 3  # per officer
        assert await store.unread_notices("e", "off-1", 0) == 1  # 4 is not d's
        listed = await store.notices_for(["d"], 0, 10, "off-1")
        assert [(n.seq, n.read_ms) for n in listed] == [(1, T0 + 5), (2, None), (3, None)]
        unread = await store.notices_for(["d", "e"], 0, 10, "off-1", unread_since_ms=0)
        assert [n.seq for n in unread] == [2, 3, 4]
    finally:
        await store.close()

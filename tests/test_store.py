"""The SQLite store: accept, dedup, group commit, append-only triggers, recovery."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sqlite3

import pytest

from gateway.errors import StoreError
from gateway.ledger.events import READ, LedgerEvent, decode_entry
from gateway.protocol.merkle import (
    leaf_hash,
    root_from_leaves,
    root_from_nodes,
    subtree_ranges_for_size,
)
from gateway.store import ACCEPTED, CONFLICT, DUPLICATE, PartnerState
from gateway.store.schema import MIGRATIONS
from gateway.store.sqlite import SqliteStore
from gateway.store.sqlite.desks import EnrollmentError
from tests.helpers import T0, Officer, db_path, incoming, make_envelope


@pytest.fixture
async def store(tmp_path):
    s = await SqliteStore.open(db_path(tmp_path))
    yield s
    await s.close()


@pytest.fixture(scope="module")
def people() -> tuple[Officer, list[Officer]]:
    return Officer(), [Officer(), Officer()]


def raw(tmp_path) -> sqlite3.Connection:
    return sqlite3.connect(db_path(tmp_path))


async def test_accept_delivers_to_inbox_with_two_ledger_events(store, tmp_path, people) -> None:
    sender, readers = people
    env = make_envelope(sender, readers)
    outcome = await store.accept(incoming(env))
    assert outcome.status == ACCEPTED and outcome.seqs == (0, 1)
    stored = await store.get_message(env.header.id)
    assert stored is not None and stored.envelope == env.raw and stored.digest == env.digest
    with raw(tmp_path) as db:
        assert db.execute("SELECT desk, message_id FROM inbox").fetchall() == [
            ("border-liaison@vn-mps", env.header.id)]
        entries = [decode_entry(r[0]) for r in db.execute("SELECT entry FROM ledger ORDER BY seq")]
    assert [e["type"] for e in entries] == ["accepted", "delivered"]
    assert entries[0]["digest"] == env.digest and entries[0]["msg"] == env.header.id
    assert await store.events_of_message(env.header.id) == [0, 1]


async def test_ledger_entries_hold_no_plaintext(store, tmp_path, people) -> None:
    sender, readers = people
    env = make_envelope(sender, readers, payload="Nguyễn Văn A, case HN-2026-001".encode())
    await store.accept(incoming(env))
    with raw(tmp_path) as db:
        blob = b"".join(r[0] for r in db.execute("SELECT entry FROM ledger"))
    assert "Nguyễn".encode() not in blob and b"HN-2026" not in blob


async def test_duplicate_and_conflict(store, people) -> None:
    sender, readers = people
    env = make_envelope(sender, readers)
    assert (await store.accept(incoming(env))).status == ACCEPTED
    size = store.ledger_size()
    assert (await store.accept(incoming(env))).status == DUPLICATE
    other = make_envelope(sender, readers, message_id=env.header.id, payload=b"different")
    assert (await store.accept(incoming(other))).status == CONFLICT
    assert store.ledger_size() == size


async def test_relay_goes_to_the_partner_outbox_by_rank(store, tmp_path, people) -> None:
    sender, readers = people
    for priority in ("routine", "flash"):
        env = make_envelope(sender, readers, priority=priority, to="anti-trafficking@kh-cnp")
        outcome = await store.accept(incoming(env, relay_to="kh-cnp"))
        assert outcome.status == ACCEPTED and len(outcome.seqs) == 1
    with raw(tmp_path) as db:
        rows = db.execute("SELECT partner, rank FROM outbox ORDER BY rank, seq").fetchall()
    assert rows == [("kh-cnp", 0), ("kh-cnp", 3)]


async def test_concurrent_accepts_share_commits(store, people) -> None:
    sender, readers = people
    envs = [make_envelope(sender, readers) for _ in range(300)]
    outcomes = await asyncio.gather(*(store.accept(incoming(e)) for e in envs))
    assert all(o.status == ACCEPTED for o in outcomes)
    assert store.committed_ops == 300 and store.commits < 100
    assert store.ledger_size() == 600
    assert sorted(s for o in outcomes for s in o.seqs) == list(range(600))


async def test_operations_arriving_during_a_write_go_in_the_next_commit(store, people) -> None:
    """While a batch is being written, every operation that arrives joins the next
    commit, however late in that write it arrives: three accepts, the second and third
    arriving one after the other while the first is held at the writer, take two commits
    (an earlier committer planned the second alone and left the third for a third)."""
    sender, readers = people
    first, second, third = (incoming(make_envelope(sender, readers)) for _ in range(3))
    before = store.commits
    async with store.transaction():  # holds the writer, as a slow fsync would
        tasks = [asyncio.ensure_future(store.accept(first))]
        await asyncio.sleep(0.02)
        tasks.append(asyncio.ensure_future(store.accept(second)))
        await asyncio.sleep(0.02)
        tasks.append(asyncio.ensure_future(store.accept(third)))
        await asyncio.sleep(0.02)
        assert not any(t.done() for t in tasks)
    outcomes = await asyncio.gather(*tasks)
    assert [o.status for o in outcomes] == [ACCEPTED] * 3
    assert store.commits - before == 2
    assert outcomes[0].seqs == (0, 1) and outcomes[2].seqs == (4, 5)


async def test_recent_ids_are_not_walked_by_the_garbage_collector(store, people) -> None:
    """The in-memory cache of committed ids holds up to 65,536 entries for the life of
    the process; objects the collector tracks would lengthen every full collection,
    which stops all threads (gateway.interpreter)."""
    sender, readers = people
    envs = [make_envelope(sender, readers) for _ in range(20)]
    await asyncio.gather(*(store.accept(incoming(e)) for e in envs))
    gc.collect()
    cached = [store._recent[e.header.id] for e in envs]
    assert not any(gc.is_tracked(value) for value in cached)
    assert store.recent_digest(envs[0].header.id) == cached[0][0]


async def test_same_id_twice_in_one_batch(store, people) -> None:
    sender, readers = people
    env = make_envelope(sender, readers)
    outcomes = await asyncio.gather(*(store.accept(incoming(env)) for _ in range(5)))
    assert sorted(o.status for o in outcomes) == [ACCEPTED] + [DUPLICATE] * 4


async def test_ledger_is_append_only_in_the_database(store, tmp_path, people) -> None:
    sender, readers = people
    await store.accept(incoming(make_envelope(sender, readers)))
    with raw(tmp_path) as db:
        db.execute("INSERT INTO checkpoints VALUES (1, x'00', x'00', 0)")
        for sql in ("UPDATE ledger SET entry = x'00'", "UPDATE ledger SET msg = NULL",
                    "DELETE FROM ledger", "UPDATE checkpoints SET size = 2",
                    "DELETE FROM checkpoints"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                db.execute(sql)


async def test_reopen_restores_the_tree(tmp_path, people) -> None:
    sender, readers = people
    path = db_path(tmp_path)
    store = await SqliteStore.open(path)
    for _ in range(13):
        await store.accept(incoming(make_envelope(sender, readers)))
    await store.close()
    store = await SqliteStore.open(path)
    try:
        assert store.ledger_size() == 26
        await store.append_events([LedgerEvent(READ, "a" * 32, T0, actor="0" * 16)])
        with raw(tmp_path) as db:
            leaves = [r[0] for r in db.execute("SELECT leaf_hash FROM ledger ORDER BY seq")]
            assert leaves == [leaf_hash(r[0]) for r in
                              db.execute("SELECT entry FROM ledger ORDER BY seq")]
        nodes = await store.ledger_nodes(subtree_ranges_for_size(27))
        assert root_from_nodes(27, nodes) == root_from_leaves(leaves)
    finally:
        await store.close()


async def test_failed_commit_saves_nothing_and_the_store_recovers(store, tmp_path, people) -> None:
    sender, readers = people
    await store.accept(incoming(make_envelope(sender, readers)))
    with raw(tmp_path) as db:  # an injected fault: inserts into one desk's inbox fail
        db.execute("CREATE TRIGGER boom BEFORE INSERT ON inbox WHEN NEW.desk = 'boom@vn-mps'"
                   " BEGIN SELECT RAISE(ABORT, 'injected fault'); END")
    good = make_envelope(sender, readers)
    bad = make_envelope(sender, readers, to="boom@vn-mps")
    results = await asyncio.gather(store.accept(incoming(good)), store.accept(incoming(bad)),
                                   return_exceptions=True)
    assert any(isinstance(r, StoreError) for r in results)
    size_after_failure = store.ledger_size()
    with raw(tmp_path) as db:
        assert db.execute("SELECT count(*) FROM ledger").fetchone()[0] == size_after_failure
        assert db.execute("SELECT count(*) FROM messages WHERE id = ?",
                          (bad.header.id,)).fetchone()[0] == 0
        db.execute("DROP TRIGGER boom")
    retry = await store.accept(incoming(bad))
    assert retry.status == ACCEPTED and retry.seqs[0] == size_after_failure


async def test_schema_version_is_recorded_and_newer_refused(tmp_path) -> None:
    store = await SqliteStore.open(db_path(tmp_path))
    await store.close()
    with raw(tmp_path) as db:
        assert db.execute("SELECT max(version) FROM schema_version").fetchone()[0] == (
            MIGRATIONS[-1][0])
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.execute("INSERT INTO schema_version VALUES (99)")
    with pytest.raises(StoreError, match="newer than this gateway"):
        await SqliteStore.open(db_path(tmp_path))


async def test_a_version_8_database_loses_the_unused_thread_index_and_keeps_its_messages(
        tmp_path) -> None:
    a, b = Officer(), Officer()
    envelope = make_envelope(a, [b])
    store = await SqliteStore.open(db_path(tmp_path))
    await store.accept(incoming(envelope))
    await store.close()
    with raw(tmp_path) as db:  # as a gateway of schema version 8 left it
        db.execute("CREATE INDEX messages_by_thread ON messages (thread)")
        for table in ("admissions", "desk_notices", "history_shares",  # of version 10
                      "partner_proofs",  # of version 11
                      "notice_reads",  # of version 12
                      "cases"):  # of version 13
            db.execute(f"DROP TABLE {table}")
        db.execute("DROP INDEX messages_sent_by")  # of version 13
        db.execute("DELETE FROM meta WHERE key = 'notices_unread_after'")
        db.execute("ALTER TABLE partner_directories DROP COLUMN descriptor")
        for column in ("handling", "case_state", "due"):  # of version 13
            db.execute(f"ALTER TABLE messages DROP COLUMN {column}")
        for column in ("attempts", "last_error"):  # of version 14
            db.execute(f"ALTER TABLE outbox DROP COLUMN {column}")
        db.execute("DELETE FROM schema_version WHERE version >= 9")
    store = await SqliteStore.open(db_path(tmp_path))
    try:
        stored = await store.get_message(envelope.header.id)
        assert stored is not None and stored.digest == envelope.digest
    finally:
        await store.close()
    with raw(tmp_path) as db:
        assert db.execute("SELECT count(*) FROM sqlite_master"
                          " WHERE name = 'messages_by_thread'").fetchone()[0] == 0
        assert db.execute("SELECT max(version) FROM schema_version").fetchone()[0] == (
            MIGRATIONS[-1][0])


async def test_closed_store_refuses_writes(tmp_path) -> None:
    store = await SqliteStore.open(db_path(tmp_path))
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.append_events([LedgerEvent(READ, "a" * 32, T0)])


async def test_transaction_commits_or_rolls_back(store, tmp_path, people) -> None:
    async with store.transaction() as tx:
        await tx.execute("CREATE TABLE notes (k TEXT PRIMARY KEY, v TEXT)")
        await tx.execute("INSERT INTO notes VALUES ('a', '1')")
    with pytest.raises(RuntimeError, match="changed my mind"):
        async with store.transaction() as tx:
            await tx.execute("INSERT INTO notes VALUES ('b', '2')")
            raise RuntimeError("changed my mind")
    with pytest.raises(sqlite3.IntegrityError):
        async with store.transaction() as tx:
            await tx.execute("INSERT INTO notes VALUES ('c', '3')")
            await tx.execute("INSERT INTO notes VALUES ('a', 'duplicate key')")
    with raw(tmp_path) as db:
        assert db.execute("SELECT k, v FROM notes").fetchall() == [("a", "1")]
    # Accepts keep working around transactions, and never interleave with them.
    sender, readers = people

    async def slow_transaction() -> None:
        async with store.transaction() as tx:
            await tx.execute("INSERT INTO notes VALUES ('d', '4')")
            await asyncio.sleep(0.05)

    results = await asyncio.gather(
        slow_transaction(), *(store.accept(incoming(make_envelope(sender, readers)))
                              for _ in range(20)))
    assert all(r.status == ACCEPTED for r in results[1:])


async def test_commits_still_work_after_a_wal_checkpoint(store, people) -> None:
    """Regression: PRAGMA wal_checkpoint returns a row; left unfetched on the writer
    connection it kept a statement open and the next group commit failed with
    "cannot commit transaction - SQL statements in progress"."""
    sender, readers = people
    first = make_envelope(sender, readers)
    assert (await store.accept(incoming(first))).status == ACCEPTED
    await store.checkpoint_wal()
    envs = [make_envelope(sender, readers) for _ in range(20)]
    outcomes = await asyncio.gather(*(store.accept(incoming(e)) for e in envs))
    assert {o.status for o in outcomes} == {ACCEPTED}
    assert await store.append_events([LedgerEvent(READ, first.header.id, T0)])


async def test_a_write_cancelled_as_it_begins_leaves_no_transaction_open(store, people) -> None:
    """Regression: a background loop cancelled at shutdown while its small write was
    starting (BEGIN sent, not yet answered) left the transaction open, and every later
    commit failed with "cannot start a transaction within a transaction"."""
    sender, readers = people
    for steps in range(6):  # cancel at different points of the write
        task = asyncio.create_task(store.set_partner_state(PartnerState("kh-cnp", 1, 5)))
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        outcome = await store.accept(incoming(make_envelope(sender, readers)))
        assert outcome.status == ACCEPTED


async def test_a_guessed_enrollment_code_is_refused_without_the_write_lock(store) -> None:
    """Under a flood of guesses, each guess holding the write lock made the committer of
    every officer's message wait behind them (bench/abuse.py): a code that does not
    exist, is used or has expired is refused while another transaction holds the lock."""
    def never(*_: object) -> object:
        raise AssertionError("no officer is made for a guessed code")

    await store.add_desk("border-liaison", None, T0)
    await store.add_enrollment_code(b"\x01" * 32, ["border-liaison"], T0, T0 + 60_000)
    holding, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with store.transaction():
            holding.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    await holding.wait()
    try:
        for guess, now in ((b"\x02" * 32, T0), (b"\x01" * 32, T0 + 60_000)):  # unknown; expired
            with pytest.raises(EnrollmentError):
                await asyncio.wait_for(store.redeem_enrollment_code(guess, now, never, never),
                                       5.0)
    finally:
        release.set()
        await holder


async def test_an_officers_sent_messages_and_how_far_each_got(tmp_path) -> None:
    a, b, c = Officer(), Officer(), Officer()
    kh = "anti-trafficking@kh-cnp"
    local = make_envelope(a, [b])
    queued, refused, expired, taken = (make_envelope(a, [b], to=kh) for _ in range(4))
    others = make_envelope(c, [b])  # the same desk, another officer
    store = await SqliteStore.open(db_path(tmp_path))
    try:
        await store.accept(incoming(local))
        for envelope in (queued, refused, expired, taken):
            await store.accept(incoming(envelope, relay_to="kh-cnp"))
        await store.accept(incoming(others))
        with raw(tmp_path) as db:  # what the relay and the expiry sweep record
            for envelope, outcome in ((refused, "rejected"), (taken, "accepted")):
                db.execute("INSERT INTO receipts VALUES (?, 'kh-cnp', ?, NULL, x'00', ?)",
                           (envelope.header.id, outcome, T0 + 5))
            db.execute("INSERT INTO notices VALUES (?, ?, 'expired', x'00', ?)",
                       (expired.header.id, local.header.sender, T0 + 9))
        sent = await store.sent(a.signing.public.key_id, 0, 10)
        assert [(s.message_id, s.status, s.to_json()["reason"]) for s in sent] == [
            (local.header.id, "delivered", None), (queued.header.id, "pending", None),
            (refused.header.id, "non-delivered", "rejected"),
            (expired.header.id, "non-delivered", "expired"),
            (taken.header.id, "delivered", None)]
        assert sent[-1].delivered_ms == T0 + 5 and sent[1].delivered_ms is None
        page = await store.sent(a.signing.public.key_id, sent[0].cursor, 2)
        assert [s.message_id for s in page] == [queued.header.id, refused.header.id]
        assert [s.message_id for s in await store.sent(c.signing.public.key_id, 0, 10)] == [
            others.header.id]
    finally:
        await store.close()

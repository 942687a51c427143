"""Database faults: a full disk and I/O errors at every point of a commit.

The store's writer connection fails at its N-th statement, for N = 1, 2, ... until a
round of mixed writes passes without reaching N: each statement of a group commit (its
BEGIN, every INSERT, UPDATE and DELETE, its COMMIT), of a small transaction and of a
checkpoint fails once in turn. Three ways of failing: a disk that stays full until
space returns (every later statement fails too), a one-off I/O error, and the real
SQLITE_FULL of SQLite's own page limit (``PRAGMA max_page_count``) at a rising
headroom. A last test fills a real, small tmpfs filesystem (it needs root and mount
permission and is skipped only when mounting is not permitted).

After every round: nothing acknowledged that is not stored (an accept answered
``accepted`` or ``duplicate``, a read recorded, a receipt or expiry recorded, a partner
state saved), nothing stored that was refused, no partial rows (a message without its
ledger event or its inbox, outbox, receipt or notice row; ledger events about messages
that are not there), ``PRAGMA integrity_check`` ok, the ledger verifies in full, and
once space returns the refused writes go through and new ones too, also after reopening.

(tests/test_store.py has one failed commit caused by a trigger; tests/test_crash.py
kills the process. These add the disk's own failures at every statement.)
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import os
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.clock import ManualClock
from gateway.crypto.envelope import Envelope
from gateway.crypto.note import NoteSigner, NoteVerifier
from gateway.errors import StoreError
from gateway.ledger.events import decode_entry
from gateway.ledger.ledger import Ledger
from gateway.store import (
    ACCEPTED,
    DUPLICATE,
    READ_DUPLICATE,
    READ_RECORDED,
    NonDelivery,
    PartnerState,
    ReadAck,
    RelayResult,
)
from gateway.store.sqlite import SqliteStore
from tests.helpers import GATEWAY_KEY, T0, Officer, db_path, incoming, make_envelope

ORIGIN = "fpg/faults"
PARTNER = "kh-cnp"
KEY_ID = GATEWAY_KEY.public.key_id
DISK_FULL = "database or disk is full"
IO_ERROR = "disk I/O error"
MAX_N = 80  # bound on the statement index a fault is injected at


# --- the fault --------------------------------------------------------------------------


class FaultyConnection:
    """The store writer's sqlite3 connection, failing its ``fail_at``-th statement.

    With ``sticky`` the disk stays full: every statement after that one fails too, until
    ``heal()``. With ``rolled_back`` the failing statement first rolls the transaction
    back, as SQLite itself does for some full-disk and I/O errors; otherwise the
    transaction stays open and undoing it is the store's job. ROLLBACK itself never
    fails (it needs no space). Runs on the connection's own thread, like the original.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._real = conn
        self.statements = 0
        self.fail_at: int | None = None
        self.sticky = False
        self.rolled_back = False
        self.error = DISK_FULL
        self.fired = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def arm(self, at: int, error: str, *, sticky: bool, rolled_back: bool) -> None:
        self.statements, self.fail_at, self.fired = 0, at, 0
        self.error, self.sticky, self.rolled_back = error, sticky, rolled_back

    def heal(self) -> None:
        self.fail_at = None

    def _check(self, sql: str) -> None:
        if sql.lstrip().upper().startswith("ROLLBACK"):
            return
        self.statements += 1
        at = self.fail_at
        if at is None or self.statements < at or (self.statements > at and not self.sticky):
            return
        self.fired += 1
        if self.rolled_back and self._real.in_transaction:
            self._real.execute("ROLLBACK")
        raise sqlite3.OperationalError(self.error)

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        self._check(sql)
        return self._real.execute(sql, params)

    def executemany(self, sql: str, params: Any) -> sqlite3.Cursor:
        self._check(sql)
        return self._real.executemany(sql, params)


def faulty(store: SqliteStore, which: str = "writer") -> FaultyConnection:
    """Put a FaultyConnection under one of the store's connections: ``writer`` (group
    commits and transactions), ``reader`` (lookups while planning a batch, and every
    read) or ``wal`` (log checkpoints). aiosqlite keeps the sqlite3 connection in
    ``_connection``; the store hands ``_conn`` to its batch writer."""
    conn: Any = getattr(store, f"_{which}")
    wrapped = FaultyConnection(conn._connection)
    conn._connection = wrapped
    return wrapped


# --- what was acknowledged, and what must therefore be on disk -----------------------------


@dataclass
class Expected:
    """Every write's fate as its caller heard it; what the database must then hold."""

    route: dict[str, str] = field(default_factory=dict)  # message id -> inbox / outbox
    acked: set[str] = field(default_factory=set)  # answered accepted or duplicate
    refused: dict[str, Envelope] = field(default_factory=dict)  # every attempt raised
    envelopes: dict[str, Envelope] = field(default_factory=dict)
    reads: set[tuple[str, str]] = field(default_factory=set)
    unread: set[tuple[str, str]] = field(default_factory=set)
    relayed: set[str] = field(default_factory=set)  # receipt recorded
    expired: set[str] = field(default_factory=set)  # non-delivery recorded
    partner_state: tuple[int, int] = (0, 0)  # (failures, next attempt), as last saved
    errors: list[BaseException] = field(default_factory=list)  # the StoreErrors seen

    def queued(self) -> list[str]:
        """Acknowledged outbox messages that still wait for their partner."""
        return [m for m, r in self.route.items()
                if r == "outbox" and m in self.acked and m not in self.relayed | self.expired]

    def inboxed(self) -> list[str]:
        return [m for m, r in self.route.items() if r == "inbox" and m in self.acked]


def failed(result: Any, expected: Expected) -> bool:
    """Whether a write raised; only the store's own error is allowed."""
    if isinstance(result, BaseException):
        assert isinstance(result, StoreError), f"a write failed with {result!r}"
        assert "nothing was saved" in result.message or (
            result.message.startswith("database read failed")), result.message
        expected.errors.append(result)
        return True
    return False


class Traffic:
    """Mixed writes as a gateway makes them: local and relayed accepts (one of them
    submitted twice, the second time while the first may still be in flight), read
    acknowledgements, relay receipts, an expiry, a partner-state save and a checkpoint."""

    def __init__(self, store: SqliteStore, ledger: Ledger) -> None:
        self.store, self.ledger = store, ledger
        self.sender, self.readers = Officer(), [Officer(), Officer()]
        self.expected = Expected()
        self.n = 0

    def envelope(self, route: str, size: int = 64) -> Envelope:
        self.n += 1
        priority = ("flash", "immediate", "priority", "routine")[self.n % 4]
        to = "border-liaison@vn-mps" if route == "inbox" else f"anti-trafficking@{PARTNER}"
        env = make_envelope(self.sender, self.readers, priority=priority, to=to,
                            payload=b'{"text":"' + b"x" * size + b'"}')
        self.expected.route[env.header.id] = route
        self.expected.envelopes[env.header.id] = env
        return env

    def accept(self, env: Envelope) -> Awaitable[Any]:
        if self.expected.route[env.header.id] == "inbox":
            return self.store.accept(incoming(env))
        return self.store.accept(incoming(env, relay_to=PARTNER))

    def _accepted(self, env: Envelope, results: list[Any]) -> None:
        mid, e = env.header.id, self.expected
        outcomes = [r for r in results if not failed(r, e)]
        for r in outcomes:
            assert r.status in (ACCEPTED, DUPLICATE) and r.message_id == mid
        if outcomes:
            accepted = [r.status for r in outcomes].count(ACCEPTED)
            assert accepted <= (0 if mid in e.acked else 1), f"{mid} stored twice"
            e.acked.add(mid)
            e.refused.pop(mid, None)
        elif mid not in e.acked:
            e.refused[mid] = env

    async def wave(self, size: int = 64, accepts: int = 4) -> None:
        """One round of writes; records what each caller was told."""
        e, store, n = self.expected, self.store, self.n
        first = [self.envelope(("inbox", "outbox")[i % 2], size) for i in range(accepts)]
        pending: list[tuple[str, Any, Awaitable[Any]]] = [
            ("accept", env, self.accept(env)) for env in first]
        for mid in self.expected.inboxed()[-2:]:  # read by a new officer each time
            ack = ReadAck(mid, f"officer-{n}@vn-mps", "0" * 16, T0 + n, b"ack")
            pending.append(("read", (mid, ack.officer_id), store.record_read(ack)))
        queued = e.queued()
        if queued:
            mid = queued[0]
            pending.append(("relay", mid, store.record_relay(PARTNER, [RelayResult(
                mid, "accepted", None, b"receipt " + mid.encode(), T0 + n, T0 + n + 1,
                KEY_ID)])))
        if len(queued) > 1:
            mid = queued[1]
            pending.append(("expiry", mid, store.record_expiry(PARTNER, [NonDelivery(
                mid, "trafficking@vn-mps", "expired", b"notice " + mid.encode(), T0 + n,
                KEY_ID)])))
        state = PartnerState(PARTNER, n, T0 + n)
        pending.append(("state", (state.failures, state.next_attempt_ms),
                        store.set_partner_state(state)))
        pending.append(("checkpoint", None, self.ledger.make_checkpoint()))
        await asyncio.sleep(0.002)  # the first batch is being written: plan on top of it
        second = [self.envelope(("outbox", "inbox")[i % 2], size) for i in range(accepts)]
        pending += [("accept", env, self.accept(env)) for env in second]
        pending.append(("accept", first[0], self.accept(first[0])))  # resent meanwhile
        results = await asyncio.gather(*(p for _, _, p in pending), return_exceptions=True)
        by_envelope: dict[str, list[Any]] = {}
        for (what, subject, _), result in zip(pending, results, strict=True):
            if what == "accept":
                by_envelope.setdefault(subject.header.id, []).append(result)
            elif failed(result, e):
                if what == "read":
                    e.unread.add(subject)
            elif what == "read":
                assert result in (READ_RECORDED, READ_DUPLICATE)
                e.reads.add(subject)
                e.unread.discard(subject)
            elif what == "relay":
                assert result == 1
                e.relayed.add(subject)
            elif what == "expiry":
                assert result == 1
                e.expired.add(subject)
            elif what == "state":
                e.partner_state = subject
        for mid, outcomes in by_envelope.items():
            self._accepted(e.envelopes[mid], outcomes)

    async def resend_refused(self) -> None:
        """What callers do after an error: send again. Now it must all be stored."""
        e = self.expected
        envs = list(e.refused.values())
        outcomes = await asyncio.gather(*(self.accept(env) for env in envs))
        assert [o.status for o in outcomes] == [ACCEPTED] * len(envs), \
            "a write refused during the fault was not stored when sent again"
        e.acked |= {env.header.id for env in envs}
        e.refused.clear()
        for mid, officer in sorted(e.unread):
            ack = ReadAck(mid, officer, "0" * 16, T0, b"ack")
            assert await self.store.record_read(ack) == READ_RECORDED
            e.reads.add((mid, officer))
        e.unread.clear()


def make_ledger(store: SqliteStore) -> Ledger:
    return Ledger(store, ORIGIN, [NoteVerifier(ORIGIN, GATEWAY_KEY.public)],
                  NoteSigner(ORIGIN, GATEWAY_KEY), ManualClock())


@contextlib.contextmanager
def database(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        yield conn
    finally:
        conn.close()


async def check(store: SqliteStore, expected: Expected) -> None:
    """Everything acknowledged is stored whole, nothing refused is, and the file and the
    ledger are sound."""
    with database(store.path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        messages = {r[0] for r in db.execute("SELECT id FROM messages")}
        inbox = Counter(r[0] for r in db.execute("SELECT message_id FROM inbox"))
        outbox = Counter(r[0] for r in db.execute("SELECT message_id FROM outbox"))
        receipts = Counter(r[0] for r in db.execute("SELECT message_id FROM receipts"))
        notices = Counter(r[0] for r in db.execute("SELECT message_id FROM notices"))
        reads = {(r[0], r[1]) for r in db.execute("SELECT message_id, officer_id FROM reads")}
        entries = [decode_entry(r[0]) for r in db.execute("SELECT entry FROM ledger")]
        state = db.execute("SELECT failures, next_attempt_ms FROM partner_state").fetchall()
    events = Counter((e["type"], e["msg"]) for e in entries)
    e = expected
    # Nothing acknowledged that is not stored; nothing stored that was refused.
    assert e.acked <= messages, f"{len(e.acked - messages)} acknowledged messages lost"
    assert messages <= e.acked, f"{len(messages - e.acked)} refused messages were stored"
    assert not set(e.refused) & messages
    # No partial rows: each stored message has its events and exactly one place.
    assert {m for _, m in events} <= messages, "ledger events about messages not stored"
    for mid in messages:
        assert events["accepted", mid] == 1, mid
        if e.route[mid] == "inbox":
            assert (inbox[mid], events["delivered", mid], outbox[mid]) == (1, 1, 0), mid
        else:
            placed = (outbox[mid], receipts[mid], notices[mid])
            assert placed in ((1, 0, 0), (0, 1, 0), (0, 0, 1)), (mid, placed)
            assert events["relayed", mid] == events["receipt", mid] == receipts[mid], mid
            assert events["expired", mid] == notices[mid], mid
            assert (receipts[mid] == 1) == (mid in e.relayed), mid
            assert (notices[mid] == 1) == (mid in e.expired), mid
    assert e.reads <= reads and not reads & e.unread
    for mid in messages:
        assert events["read", mid] == sum(1 for m, _ in reads if m == mid), mid
    assert state == ([e.partner_state] if e.partner_state != (0, 0) else [])
    # Memory never ran ahead of the disk, and the ledger verifies in full.
    assert store.ledger_size() == len(entries)
    assert await make_ledger(store).verify() == len(entries)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = await SqliteStore.open(db_path(tmp_path))
    try:
        yield s
    finally:
        await s.close()


async def closed(store: SqliteStore) -> None:
    """Close the store; it must not raise, and every connection thread must end (one left
    running keeps the gateway's process from exiting)."""
    connections: list[Any] = [store._writer, store._reader, store._wal]
    await asyncio.wait_for(store.close(), 30)
    for conn in connections:
        conn._thread.join(10)
        assert conn._connection is None and not conn._thread.is_alive()


async def reopened(store: SqliteStore, traffic: Traffic) -> None:
    """Close (the log cannot be checkpointed: the disk is full again) and open the
    database again; check it all; new writes still go through. Closes it at the end."""
    faulty(store, "wal").arm(1, DISK_FULL, sticky=True, rolled_back=False)
    await closed(store)
    store = await SqliteStore.open(store.path)
    try:
        traffic.store, traffic.ledger = store, make_ledger(store)
        await check(store, traffic.expected)
        await traffic.wave()
        assert not traffic.expected.refused
        await check(store, traffic.expected)
    finally:
        await closed(store)


# --- the cases ----------------------------------------------------------------------------

FAULTS = {  # connection, error, sticky, rolled back by SQLite, statements a round reaches
    # a full disk that stays full, the transaction left open for the store to undo
    "disk_full_until_space_returns": ("writer", DISK_FULL, True, False, 12),
    # one I/O error, after which SQLite has rolled the transaction back itself
    "one_io_error_rolled_back": ("writer", IO_ERROR, False, True, 12),
    # one I/O error, transaction left open
    "one_io_error_left_open": ("writer", IO_ERROR, False, False, 12),
    # one I/O error reading: the lookups that plan a batch, a checkpoint's hashes
    "one_read_io_error": ("reader", IO_ERROR, False, False, 3),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
async def test_a_fault_at_every_statement_loses_and_leaves_nothing(store: SqliteStore,
                                                                   fault: str) -> None:
    which, error, sticky, rolled_back, statements = FAULTS[fault]
    traffic = Traffic(store, make_ledger(store))
    await traffic.wave()
    await traffic.wave()  # messages to read, relay and expire
    conn = faulty(store, which)
    reached = 0
    for at in range(1, MAX_N + 1):
        conn.arm(at, error, sticky=sticky, rolled_back=rolled_back)
        await asyncio.wait_for(traffic.wave(), 30)  # a write that never answers fails here
        fired = conn.fired
        conn.heal()  # space returns
        await check(store, traffic.expected)
        await traffic.resend_refused()
        await traffic.wave()  # and new writes go through
        assert not traffic.expected.refused, "the store did not recover once space returned"
        await check(store, traffic.expected)
        if not fired:
            break
        reached = at
    else:
        raise AssertionError(f"a round of writes took more than {MAX_N} statements")
    assert reached >= statements  # e.g. each statement of a group commit, BEGIN to COMMIT
    assert len(traffic.expected.errors) >= reached  # every fault reached a caller
    await reopened(store, traffic)


async def test_sqlite_own_disk_full_at_rising_headroom(store: SqliteStore) -> None:
    """A real SQLITE_FULL from SQLite's pager: the database may not grow past
    ``max_page_count``, set a few pages above its size, rising, while envelopes of
    8 KiB are written; then the limit is lifted."""
    traffic = Traffic(store, make_ledger(store))
    await traffic.wave()
    await traffic.wave()
    full = 0
    for headroom in range(0, 24, 2):
        (pages,), = await store._writer.execute_fetchall("PRAGMA page_count")
        await store._writer.execute(f"PRAGMA max_page_count = {pages + headroom}")
        refused = len(traffic.expected.errors)
        for _ in range(3):  # the disk stays full for a while
            await traffic.wave(size=8192)
        full += len(traffic.expected.errors) > refused
        await store._writer.execute("PRAGMA max_page_count = 1073741823")
        await check(store, traffic.expected)
        await traffic.resend_refused()
        await traffic.wave(size=8192)
        assert not traffic.expected.refused
        await check(store, traffic.expected)
    assert full >= 6  # the limit was hit in most rounds
    await reopened(store, traffic)


# --- a real, small filesystem ---------------------------------------------------------------

MS_REMOUNT, MNT_DETACH = 32, 2


def _libc() -> Any:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _mount(target: Path, size: int, *, remount: bool = False) -> int:
    """mount(2) a tmpfs of ``size`` bytes on ``target``; 0 or the errno."""
    rc = _libc().mount(b"tmpfs", str(target).encode(), b"tmpfs",
                       MS_REMOUNT if remount else 0, f"size={size},mode=0700".encode())
    return 0 if rc == 0 else ctypes.get_errno()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted at a fresh directory, unmounted after the test."""
    target = tmp_path / "small"
    target.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root (not permitted here)")
    err = _mount(target, 1 << 20)
    if err in (errno.EPERM, errno.EACCES):
        pytest.skip(f"mounting a small filesystem is not permitted here ({os.strerror(err)})")
    assert err == 0, f"mount failed: {os.strerror(err)}"
    try:
        yield target
    finally:
        assert _libc().umount2(str(target).encode(), MNT_DETACH) == 0


async def test_a_real_full_filesystem_then_space_returns(small_disk: Path) -> None:
    store = await SqliteStore.open(small_disk / "gateway.sqlite3")
    traffic = Traffic(store, make_ledger(store))
    try:
        waves = 0
        while not traffic.expected.errors:  # fill the disk with 16 KiB envelopes
            waves += 1
            assert waves < 200, "1 MiB did not fill up"
            await traffic.wave(size=16_384)
        for _ in range(5):  # it stays full: writes keep failing, nothing breaks
            await traffic.wave(size=16_384)
        assert any(DISK_FULL in str(x) for x in traffic.expected.errors)
        await check(store, traffic.expected)
        await closed(store)  # a gateway stopped while its disk is full
        store = await SqliteStore.open(small_disk / "gateway.sqlite3")  # and started again
        traffic.store, traffic.ledger = store, make_ledger(store)
        await check(store, traffic.expected)
        await traffic.wave(size=16_384)
        await check(store, traffic.expected)
        assert _mount(small_disk, 16 << 20, remount=True) == 0  # space returns
        await traffic.resend_refused()
        await traffic.wave(size=16_384)
        assert not traffic.expected.refused
        await check(store, traffic.expected)
        await reopened(store, traffic)
    finally:
        await store.close()

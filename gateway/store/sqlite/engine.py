"""The SQLite store's group-commit engine: its connections, the committer that writes
operations in shared transactions, ordinary transactions, and the Merkle tree's right
edge.

Design
------
* **One writer connection**, owned by one committer task. Every write is an *operation*
  put on a list; the committer plans what is waiting and commits it in **one
  transaction with one fsync** (WAL, ``synchronous=FULL``), up to ``max_batch``
  operations. Each caller's future is resolved only after the commit that holds its
  operation, so an acknowledgement always means "on disk". While one commit is being
  written and synced, the operations that arrive are planned on top of it (on the event
  loop) and form the next batch, written as soon as that commit ends, which is what makes
  durable accepts fast under load: the fsync is shared by everyone who arrived meanwhile.
* **One reader connection** (WAL lets it read while the writer writes) serves proofs,
  message reads and verification, so readers never queue behind commits.
* **Ledger hashes are computed by the committer.** It keeps the Merkle tree's compact
  range (the hashes of the complete subtrees on the right edge) in memory, assigns each
  event its position, encodes the entry, and stores with each leaf the hashes of the
  subtrees that leaf completes. If a commit fails the in-memory range is left as it
  was, so memory never runs ahead of the disk.
* **Append-only is enforced by the database**: triggers abort UPDATE and DELETE on
  ledger rows, their message index and checkpoints.
* **Migrations** are numbered SQL scripts applied in order at open, each in its own
  transaction, recorded in ``schema_version``.

The queries live beside this module, one per consumer (``messages``, ``outbox``,
``partners``, ``ledger``, ``levels``, ``desks``), as subclasses of :class:`StoreEngine`
that :class:`gateway.store.sqlite.SqliteStore` combines. A query that writes messages or
ledger events hands the committer an operation (an ``_Op``) whose ``plan`` decides its
rows; the others read on the reader connection or write in a ``transaction()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import sqlite3
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any, NamedTuple, Self

import aiosqlite
import structlog

from gateway.errors import StoreError
from gateway.ledger.events import LedgerEvent
from gateway.protocol.merkle import HASH_SIZE, CompactRange, NodeId, subtree_ranges_for_size
from gateway.store import CaseRow, LedgerRow, NewNotice, Notification, ReadAck
from gateway.store.schema import MIGRATIONS

log = structlog.get_logger("gateway.store")

_INSERT_LEDGER = "INSERT INTO ledger (seq, msg, entry, leaf_hash, nodes) VALUES (?,?,?,?,?)"
_MAX_PARAMS = 30_000  # parameters per statement, under SQLite's 32,766
_PLAN_STEP = 64  # operations planned at a time: an idle writer starts on the first step


@functools.lru_cache(maxsize=256)
def _multi_row(sql: str, rows: int) -> str:
    """``INSERT ... VALUES (?,..)`` turned into one INSERT of ``rows`` rows: SQLite then
    inserts them in one step instead of one statement per row."""
    head, _, group = sql.rpartition(" VALUES ")
    return f"{head} VALUES {','.join([group] * rows)}"


def _statements(sql: str, rows: list[tuple[Any, ...]]) -> Iterable[tuple[str, Any, bool]]:
    """``(sql, parameters, many)`` for ``rows``: multi-row INSERTs where possible."""
    if not sql.startswith("INSERT") or not rows:
        yield sql, rows, True
        return
    per = max(1, _MAX_PARAMS // len(rows[0]))
    for i in range(0, len(rows), per):
        chunk = rows[i : i + per]
        yield _multi_row(sql, len(chunk)), [x for row in chunk for x in row], False


def _write_batch(conn: sqlite3.Connection, writes: list[tuple[str, Any, bool]]) -> None:
    """One transaction, run whole on the writer connection's thread (one hand-off from
    the event loop per batch, instead of one per statement)."""
    conn.execute("BEGIN IMMEDIATE")
    _write_open(conn, writes)


def _write_open(conn: sqlite3.Connection, writes: list[tuple[str, Any, bool]]) -> None:
    """Run ``writes`` in the transaction open on ``conn`` and commit; roll back on error."""
    try:
        for sql, params, many in writes:
            if many:
                conn.executemany(sql, params)
            else:
                conn.execute(sql, params)
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:  # the transaction may already be gone
        pass


def _data_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def _commit_if_current(conn: sqlite3.Connection, writes: list[tuple[str, Any, bool]],
                       version: int) -> tuple[int, _Tip | None]:
    """Take the write lock; if no other connection has committed since ``version``, run
    ``writes`` and commit: ``(version, None)``. Otherwise keep the transaction open and
    return the new version with the tip as it now is, for the batch to be planned again
    on it while this connection holds the lock."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        now = _data_version(conn)
        if now != version:
            return now, _tip_in(conn)
    except BaseException:
        _rollback(conn)
        raise
    _write_open(conn, writes)
    return now, None


def _tip_in(conn: sqlite3.Connection) -> _Tip:
    """The committed tip, read on ``conn`` (inside its transaction, so it cannot move)."""
    last = conn.execute("SELECT max(seq) FROM ledger").fetchone()[0]
    return _Tip(_frontier_in(conn, 0 if last is None else int(last) + 1), _next_mseq(conn))


def _next_mseq(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT coalesce(max(mseq), 0) + 1 FROM messages").fetchone()[0])


def _frontier_in(conn: sqlite3.Connection, size: int) -> CompactRange:
    """The compact range of the first ``size`` entries, from the stored complete-subtree
    hashes; StoreError if a row or a hash is missing."""
    nodes = subtree_ranges_for_size(size)
    if not nodes:
        return CompactRange()
    seqs = [_node_row(n) for n in nodes]
    marks = ",".join("?" * len(seqs))
    query = f"SELECT seq, entry, leaf_hash, nodes FROM ledger WHERE seq IN ({marks})"  # noqa: S608
    rows = {r[0]: LedgerRow(*r) for r in conn.execute(query, seqs)}
    return CompactRange(size, [_node_hash_in(rows, n) for n in nodes])


_IN_CHUNK = 500  # ids per "IN (...)" query, well below SQLite's variable limit
_RECENT_IDS = 65_536  # committed message ids kept in memory with their digest and number

# Statements run in phase order so that rows referenced by foreign keys come first.
PHASE_MESSAGES, PHASE_DEPENDENTS = 0, 1
INSERT_NOTICE = ("INSERT INTO desk_notices (desk, kind, at_ms, message_id, detail, note)"
                 " VALUES (?,?,?,?,?,?)")


class _Known(NamedTuple):
    """What planning needs to know of a stored message."""

    digest: str
    mseq: int
    sender: str  # desk address of the sending desk


@dataclass
class _Tip:
    """The committed state a batch builds on: the tree's right edge, the next message number."""

    frontier: CompactRange
    next_mseq: int

    def copy(self) -> _Tip:
        return _Tip(CompactRange(self.frontier.size, self.frontier.hashes), self.next_mseq)


@dataclass
class _Plan:
    """What one batch will write, built by the operations before anything touches disk."""

    tip: _Tip
    known: dict[str, _Known]  # message id -> (digest, mseq), stored or planned
    statements: dict[int, dict[str, list[tuple[Any, ...]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    ledger_rows: list[tuple[int, int | None, bytes, bytes, bytes]] = field(default_factory=list)
    new_messages: dict[str, _Known] = field(default_factory=dict)
    reads: set[tuple[str, str]] = field(default_factory=set)  # (message, officer) acknowledged
    # requests (case threads) as they stand, looked up or planned; None: not a case
    cases: dict[str, CaseRow | None] = field(default_factory=dict)
    notifications: list[Notification] = field(default_factory=list)
    events: list[LedgerEvent] = field(default_factory=list)  # appended, in ledger order
    wrote_notices: bool = False  # desk notices stored (on_notices is called after)
    # The state after this batch, copied when planning ends: ``tip`` itself moves on
    # while the next batch is planned on top of this one.
    end: _Tip | None = None

    def add(self, phase: int, sql: str, params: tuple[Any, ...]) -> None:
        self.statements[phase][sql].append(params)

    def run(self, batch: list[_Op]) -> None:
        for op in batch:
            op.plan(self)
        self.end = self.tip.copy()

    def take_writes(self) -> list[tuple[str, Any, bool]]:
        """The statements planned since the last call, in foreign-key order, as
        ``(sql, parameters, many)``; rows to insert go as multi-row INSERTs."""
        writes = [
            statement
            for phase in sorted(self.statements)
            for sql, params in self.statements[phase].items()
            for statement in _statements(sql, params)
        ]
        writes.extend(_statements(_INSERT_LEDGER, self.ledger_rows))
        self.statements.clear()
        self.ledger_rows = []
        return writes

    def add_message(self, message_id: str, digest: str, sender: str) -> int:
        mseq = self.tip.next_mseq
        self.tip.next_mseq += 1
        self.known[message_id] = self.new_messages[message_id] = _Known(digest, mseq, sender)
        return mseq

    def notify(self, desk: str, what: str, **data: Any) -> None:
        self.notifications.append(Notification(desk, what, data))

    def add_notice(self, notice: NewNotice) -> None:
        """Store a desk notice in this commit; the stored-notice feed tells it after."""
        self.add(PHASE_DEPENDENTS, INSERT_NOTICE, notice.row())
        self.wrote_notices = True

    def add_event(self, event: LedgerEvent) -> int:
        """Give ``event`` its position, encode it and extend the Merkle tree."""
        frontier = self.tip.frontier
        seq = frontier.size
        entry = event.encode(seq)
        self.events.append(event)
        leaf = sha256(b"\x00" + entry).digest()  # merkle.leaf_hash, inlined: hot path
        known = self.known.get(event.message_id)
        self.ledger_rows.append(
            (seq, known[1] if known else None, entry, leaf, frontier.append_nodes(leaf))
        )
        return seq


CASE_COLUMNS = ("thread, requester, executor, partner, opened_ms, due, due_ms, state,"
                " state_ms, last_move, reminded_ms, escalated_ms, ignored_moves")


class _Op:
    """A write waiting for the committer. ``plan`` decides its rows and its result."""

    __slots__ = ("future", "result")

    # Set by the operation that records a read acknowledgement: planning then looks up,
    # once for the whole step, whether that officer has already acknowledged the message.
    ack: ReadAck | None = None
    # Set by an accept that moves a request: planning looks up where the request stands.
    case_thread: str | None = None

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.future: asyncio.Future[Any] = loop.create_future()
        self.result: Any = None

    def ids(self) -> Iterable[str]:
        """Message ids whose stored digest and number the plan needs."""
        return ()

    def plan(self, plan: _Plan) -> None:
        raise NotImplementedError


async def _connect(path: Path, *, role: str) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    await conn.execute("PRAGMA busy_timeout = 10000")
    await conn.execute("PRAGMA foreign_keys = ON")
    if role == "writer":
        # Statements that return rows are always fetched to the end: an unfinished one
        # keeps the connection busy and its next COMMIT fails.
        mode = next(iter(await conn.execute_fetchall("PRAGMA journal_mode = WAL")), None)
        if mode is None or str(mode[0]).lower() != "wal":
            raise StoreError(f"{path}: cannot switch the database to WAL mode")
        await conn.execute("PRAGMA synchronous = FULL")
        # Copying the log into the database is the WAL checkpointer's job, on its own
        # connection: done by a commit, it would stall that commit's callers.
        await conn.execute("PRAGMA wal_autocheckpoint = 0")
    elif role == "reader":
        await conn.execute("PRAGMA query_only = ON")
    return conn


WAL_CHECKPOINT_SECONDS = 1.0


class StoreEngine:
    """One SQLite file's connections and committer, under the queries that
    :class:`gateway.store.sqlite.SqliteStore` adds."""

    def __init__(self, path: Path, writer: aiosqlite.Connection, reader: aiosqlite.Connection,
                 frontier: CompactRange | None, next_mseq: int, data_version: int,
                 max_batch: int) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        # None when the stored tree cannot be read back: the store then refuses writes
        # (`gateway ledger verify` says what is wrong) but still serves reads.
        self._damaged = frontier is None
        self._committed = _Tip(frontier or CompactRange(), next_mseq)
        # The writer connection's PRAGMA data_version when it last saw the tip: it changes
        # when any other connection to the file commits (another process, say).
        self._data_version = data_version
        self._max_batch = max_batch
        self._loop = asyncio.get_running_loop()
        self._pending: list[_Op] = []
        # Most events are about messages accepted moments ago: remembering the newest
        # ids spares the committer a database lookup per event.
        # Kept as plain tuples: CPython's collector stops tracking a tuple of strings and
        # ints, but walks every NamedTuple at each full collection (65,536 of them took
        # tens of ms, with every thread stopped; see gateway.interpreter).
        self._recent: dict[str, tuple[str, int, str]] = {}
        self._wake = asyncio.Event()
        # Held by whoever has a transaction open on the writer connection: a committed
        # batch, or a caller of transaction().
        self._write_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._wal: aiosqlite.Connection = reader  # replaced in open()
        self._wal_task: asyncio.Task[None] | None = None
        self._closed = False
        self.commits = 0  # batches committed, for benchmarks and status
        self.committed_ops = 0
        self.on_commit: list[Callable[[int], None]] = []  # called with the new ledger size
        self.on_notify: list[Callable[[Notification], None]] = []  # after the commit
        self.on_notices: list[Callable[[], None]] = []  # after a commit that stored notices
        # called after each commit with the ledger events it appended (metrics)
        self.on_events: list[Callable[[list[LedgerEvent]], None]] = []

    # --- lifecycle ---------------------------------------------------------------------

    @classmethod
    async def open(cls, path: Path, *, max_batch: int = 4096) -> Self:
        """Open (creating if needed) and migrate the database, and start the committer."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            writer = await _connect(path, role="writer")
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open database ({exc})") from None
        opened: list[aiosqlite.Connection] = [writer]
        try:
            await _migrate(writer, path)
            reader = await _connect(path, role="reader")
            opened.append(reader)
            wal = await _connect(path, role="wal")
            opened.append(wal)
            frontier, next_mseq, version = await writer._execute(  # type: ignore[no-untyped-call]
                _state_at_open, writer._conn)
        except BaseException:
            for conn in opened:
                await conn.close()
            raise
        store = cls(path, writer, reader, frontier, next_mseq, version, max_batch)
        loop = asyncio.get_running_loop()
        store._task = loop.create_task(store._committer(), name=f"store-committer:{path.name}")
        store._wal = wal
        store._wal_task = loop.create_task(store._checkpoint_wal_loop(),
                                           name=f"store-wal:{path.name}")
        return store

    async def _checkpoint_wal_loop(self) -> None:
        """Keep the write-ahead log short without ever stalling a commit: PASSIVE
        checkpoints copy what no reader still needs, and give way to writers."""
        while True:
            await asyncio.sleep(WAL_CHECKPOINT_SECONDS)
            try:
                await self._wal.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:  # e.g. a full disk: the log just stays longer
                log.warning("wal_checkpoint_failed", error=str(exc))

    async def close(self) -> None:
        """Commit what is queued, then stop the committer and close both connections."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        try:
            if self._task is not None:
                await self._task
        finally:
            # Whatever happened, every connection is closed: each has a thread of its own,
            # and one left running keeps the process from exiting.
            if self._wal_task is not None:
                self._wal_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._wal_task
                try:
                    await self._wal.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:  # a full disk: the log is kept, and read at open
                    log.warning("wal_checkpoint_failed", error=str(exc))
                await self._wal.close()
            await self._reader.close()
            await self._writer.close()

    # --- writes ------------------------------------------------------------------------

    def _submit(self, op: _Op) -> asyncio.Future[Any]:
        # Writes return the operation's future itself rather than a coroutine that awaits
        # it: one frame less per write, which shows at tens of thousands a second.
        if self._closed:
            raise StoreError("the store is closed")
        if self._damaged:
            raise StoreError(
                f"{self.path}: the ledger is damaged; writes are refused"
                " (run `gateway ledger verify`)"
            )
        self._pending.append(op)
        self._wake.set()
        return op.future


    async def _committer(self) -> None:
        """The one writer, pipelined: operations are planned as they arrive, on top of the
        batch being written, and what is planned is written as soon as that batch has
        committed.

        Planning (dedup, entry encoding, Merkle hashing) runs on the event loop in steps of
        at most ``_PLAN_STEP`` operations; writing and fsync run in the connection's
        thread. An operation that arrives while a batch is written is planned then, so
        it goes to disk with the very next commit, not the one after. An idle writer
        starts on the first step and the rest is planned while it writes. If a commit
        failed, the batch planned on it is planned again from the committed state before
        anything of it is written.
        """
        in_flight: asyncio.Task[bool] | None = None
        written: _Plan | None = None  # the plan of the batch in flight
        batch: list[_Op] = []  # planned on top of it, not yet written
        plan: _Plan | None = None
        base = self._committed.copy()  # the state ``plan`` starts from
        while True:
            if in_flight is not None and in_flight.done():
                as_planned = in_flight.result()
                in_flight = written = None
                if not as_planned:
                    base = self._committed.copy()
                    batch, plan = await self._plan_again(batch, base)
            if batch and in_flight is None:
                assert plan is not None and plan.end is not None
                written, in_flight = plan, self._loop.create_task(self._write(batch, plan))
                in_flight.add_done_callback(self._written)
                base = plan.end.copy()
                batch, plan = [], None
            elif self._pending and len(batch) < self._max_batch:
                take = min(len(self._pending), _PLAN_STEP, self._max_batch - len(batch))
                ops = self._pending[:take]
                del self._pending[:take]
                if plan is None:
                    plan = _Plan(base.copy(), {})
                try:
                    await self._extend(plan, ops, written)
                except Exception as exc:  # the loop boundary: fail these, keep serving
                    # A lookup failed (a read I/O error) or an operation could not be
                    # planned: nothing of them is written. The plan may hold half of
                    # them, so what was planned before is planned again without them.
                    self._fail(ops, exc, "plan_failed")
                    batch, plan = await self._plan_again(batch, base, written)
                else:
                    batch.extend(ops)
            elif self._closed and not self._pending and not batch:
                break
            else:
                self._wake.clear()
                await self._wake.wait()
        if in_flight is not None:
            await in_flight

    def _written(self, _: asyncio.Task[bool]) -> None:
        self._wake.set()

    async def _plan_again(self, batch: list[_Op], base: _Tip,
                          written: _Plan | None = None) -> tuple[list[_Op], _Plan | None]:
        """``batch`` planned afresh on ``base``; if that fails, its callers are answered
        with the error and nothing is left to write."""
        if not batch:
            return [], None
        try:
            return batch, await self._make_plan(batch, base.copy(), written)
        except Exception as exc:  # the loop boundary, as above
            self._fail(batch, exc, "plan_failed")
            return [], None

    async def _write(self, batch: list[_Op], plan: _Plan) -> bool:
        """Commit one planned batch; answer its callers. False if the batch was not
        committed as planned (see ``_write_locked``)."""
        async with self._write_lock:
            return await self._write_locked(batch, plan)

    async def _write_locked(self, batch: list[_Op], plan: _Plan) -> bool:
        """Commit ``plan``; True if it was committed as planned. False if nothing was
        saved, or if another connection (another gateway process on the same file) had
        committed first and the batch was planned again on the tip it left: either way
        the next batch, planned on this one, must be planned again too."""
        w = self._writer
        as_planned = True
        try:
            # aiosqlite runs a function on its connection's thread with _execute; the
            # sqlite3 connection object is only ever used there. (Private API, kept to
            # these calls: aiosqlite has no public way to run a whole transaction at once.)
            version, tip = await w._execute(  # type: ignore[no-untyped-call]
                _commit_if_current, w._conn, plan.take_writes(), self._data_version)
            if tip is not None:
                # The transaction is open and holds SQLite's write lock, so the tip read
                # in it stays true while the batch is planned again; lookups on the
                # reader see everything committed, as nobody else can commit now.
                self._data_version, as_planned = version, False
                try:
                    plan = await self._make_plan(batch, tip, None)
                except BaseException:
                    await w._execute(_rollback, w._conn)  # type: ignore[no-untyped-call]
                    raise
                await w._execute(_write_open, w._conn, plan.take_writes())  # type: ignore[no-untyped-call]
        except Exception as exc:  # the loop boundary: fail this batch, keep serving
            self._fail(batch, exc, "commit_failed")
            return False
        assert plan.end is not None
        self._committed = plan.end
        frontier = plan.end.frontier
        self._remember(plan.new_messages)
        self.commits += 1
        self.committed_ops += len(batch)
        for op in batch:
            if not op.future.done():
                op.future.set_result(op.result)
        for callback in self.on_commit:
            callback(frontier.size)
        for notification in plan.notifications:
            for listener in self.on_notify:
                listener(notification)
        if plan.wrote_notices:
            for poke in self.on_notices:
                poke()
        if plan.events:
            for observer in self.on_events:
                observer(plan.events)
        return as_planned

    @staticmethod
    def _fail(batch: list[_Op], exc: Exception, event: str) -> None:
        """Answer every operation of a batch that saved nothing with a StoreError."""
        if isinstance(exc, sqlite3.Error | StoreError):
            log.error(event, ops=len(batch), error=str(exc))
            what = exc.message if isinstance(exc, StoreError) else f"database write failed ({exc})"
            error = StoreError(f"{what}; nothing was saved")
        else:
            log.exception(event, ops=len(batch))
            error = StoreError("the store could not commit; nothing was saved")
        for op in batch:
            if not op.future.done():
                op.future.set_exception(error)

    async def _make_plan(self, batch: list[_Op], tip: _Tip, written: _Plan | None) -> _Plan:
        """Plan ``batch`` on ``tip``, with ``written`` still being written."""
        plan = _Plan(tip, {})
        await self._extend(plan, batch, written)
        return plan

    async def _extend(self, plan: _Plan, ops: list[_Op], written: _Plan | None) -> None:
        """Plan ``ops`` after what ``plan`` holds. ``written`` is the batch still being
        written: the reader connection cannot see its rows yet, so its messages and
        reads count too."""
        known = plan.known
        unseen = written.new_messages if written is not None else {}
        missing: set[str] = set()
        for op in ops:
            for i in op.ids():
                if i in known:
                    continue
                value = unseen.get(i) or self._recalled(i)
                if value is not None:
                    known[i] = value
                else:
                    missing.add(i)
        if missing:
            found = await self._known(missing)
            known.update(found)
            self._remember(found)
        threads = {t for op in ops if (t := op.case_thread) is not None} - plan.cases.keys()
        if threads:
            if written is not None:
                plan.cases.update((t, written.cases[t]) for t in threads & written.cases.keys())
                threads -= written.cases.keys()
            plan.cases.update(await self._case_rows(threads))
        pairs = {(a.message_id, a.officer_id) for op in ops
                 if (a := op.ack) is not None} - plan.reads
        if pairs:
            plan.reads |= await self._read_already(pairs)
            if written is not None:
                plan.reads |= written.reads & pairs
        plan.run(ops)

    def _remember(self, messages: dict[str, _Known]) -> None:
        recent = self._recent
        recent.update((key, (value.digest, value.mseq, value.sender))
                      for key, value in messages.items())
        if len(recent) > _RECENT_IDS:
            for key in list(itertools.islice(recent, len(recent) - _RECENT_IDS * 3 // 4)):
                del recent[key]

    async def _known(self, ids: set[str]) -> dict[str, _Known]:
        """Digest and number of the stored messages among ``ids`` (committed state)."""
        known: dict[str, _Known] = {}
        id_list = list(ids)
        for i in range(0, len(id_list), _IN_CHUNK):
            chunk = id_list[i : i + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = await self._read(
                f"SELECT id, digest, mseq, sender FROM messages WHERE id IN ({marks})",  # noqa: S608
                chunk,
            )
            known.update({row[0]: _Known(*row[1:]) for row in rows})
        return known

    async def _case_rows(self, threads: set[str]) -> dict[str, CaseRow | None]:
        """Where each request among ``threads`` stands (committed state); None for a
        thread that is not a request."""
        found: dict[str, CaseRow | None] = dict.fromkeys(threads)
        for thread in threads:
            rows = await self._read(f"SELECT {CASE_COLUMNS} FROM cases WHERE thread = ?",  # noqa: S608
                                    (thread,))
            if rows:
                found[thread] = CaseRow(*rows[0])
        return found

    async def _read_already(self, pairs: set[tuple[str, str]]) -> set[tuple[str, str]]:
        """The (message, officer) pairs among ``pairs`` that already have a read ack."""
        found: set[tuple[str, str]] = set()
        for message_id, officer_id in pairs:
            if await self._read("SELECT 1 FROM reads WHERE message_id = ? AND officer_id = ?",
                                (message_id, officer_id)):
                found.add((message_id, officer_id))
        return found

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction for state that is not a message or a ledger event
        (configuration-like rows such as desks and enrollment codes).

        Commits (with fsync) when the block ends, rolls back if it raises. It waits for,
        and holds off, the committer, so the two never interleave on the connection.
        A database failure (a full disk, an I/O error: anything but a constraint, which
        callers catch to mean "exists") is raised as StoreError, as the committer's are.
        """
        if self._closed:
            raise StoreError("the store is closed")
        async with self._write_lock:
            w = self._writer
            try:
                # Inside the try: a task cancelled while BEGIN is on its way (a background
                # loop stopped at shutdown) must still roll back, or the transaction stays
                # open and every later commit fails. aiosqlite runs requests in order, so
                # the ROLLBACK always follows the BEGIN, even if this task is cancelled.
                await w.execute("BEGIN IMMEDIATE")
                yield w
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):  # none if BEGIN itself failed
                    await w.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error) and not isinstance(exc, sqlite3.IntegrityError):
                    log.error("transaction_failed", error=str(exc))
                    raise StoreError(f"database write failed ({exc}); nothing was saved") \
                        from None
                raise
            try:
                await w.execute("COMMIT")
            except sqlite3.Error as exc:
                # SQLite may have rolled back already (some full-disk and I/O errors do).
                with contextlib.suppress(sqlite3.Error):
                    await w.execute("ROLLBACK")
                log.error("transaction_failed", error=str(exc))
                raise StoreError(f"database write failed ({exc}); nothing was saved") from None

    async def checkpoint_wal(self) -> None:
        """Move the write-ahead log into the database file (for copies and benchmarks)."""
        await self._writer.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")

    # --- reads -------------------------------------------------------------------------

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run a query and fetch every row in one call on the reader's thread.

        One call, not execute-then-fetch: two reads interleaved on the connection would keep
        a statement open across both, and with it an old snapshot of the database.
        A failing database (an I/O error, a damaged file) is raised as StoreError.
        """
        try:
            return list(await self._reader.execute_fetchall(sql, params))
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"database read failed ({exc})") from None

    def _recalled(self, message_id: str) -> _Known | None:
        """What planning needs of a message committed lately, from memory."""
        value = self._recent.get(message_id)
        return _Known._make(value) if value is not None else None


def _node_row(node: NodeId) -> int:
    """The ledger row that stores complete subtree ``(level, index)``: its last leaf."""
    level, index = node
    return ((index + 1) << level) - 1


def _node_hash_in(rows: dict[int, LedgerRow], node: NodeId) -> bytes:
    level, _ = node
    row = rows.get(_node_row(node))
    if row is None:
        raise StoreError(f"ledger row {_node_row(node)} is missing")
    if level == 0:
        return row.leaf_hash
    value = row.nodes[(level - 1) * HASH_SIZE : level * HASH_SIZE]
    if len(value) != HASH_SIZE:
        raise StoreError(f"ledger row {row.seq} lacks the hash of node {node}")
    return value


async def _migrate(conn: aiosqlite.Connection, path: Path) -> None:
    await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    async with conn.execute("SELECT max(version) FROM schema_version") as cur:
        row = await cur.fetchone()
    current = (row[0] if row else None) or 0
    latest = MIGRATIONS[-1][0]
    if current > latest:
        raise StoreError(
            f"{path}: database schema version {current} is newer than this gateway ({latest})"
        )
    for version, script in MIGRATIONS:
        if version <= current:
            continue
        statements = [s.strip() for s in _split_sql(script) if s.strip()]
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements:
                await conn.execute(statement)
            await conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        log.info("schema_migrated", version=version, database=str(path))


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements; trigger bodies keep their inner semicolons."""
    statements: list[str] = []
    current: list[str] = []
    for line in script.splitlines():
        current.append(line)
        joined = "\n".join(current)
        if sqlite3.complete_statement(joined):
            statements.append(joined)
            current = []
    if "".join(current).strip():
        raise StoreError("incomplete SQL statement in a migration")
    return statements


def _state_at_open(conn: sqlite3.Connection) -> tuple[CompactRange | None, int, int]:
    """The stored tree's compact range, the next message number and the connection's
    ``PRAGMA data_version``, read on the writer's thread when the store opens.

    The range is None if rows are missing or the hashes cannot be read: appending to a
    damaged tree would bury the damage under new entries.
    """
    count, last = conn.execute("SELECT count(*), max(seq) FROM ledger").fetchone()
    size = 0 if last is None else int(last) + 1
    frontier: CompactRange | None = None
    if count != size:
        log.warning("ledger_rows_missing", rows=count, size=size)
    else:
        try:
            frontier = _frontier_in(conn, size)
        except StoreError:
            log.warning("ledger_frontier_unreadable", size=size)
    return frontier, _next_mseq(conn), _data_version(conn)

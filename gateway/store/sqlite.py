"""The embedded SQLite store, with group commit.

Design
------
* **One writer connection**, owned by one committer task. Every write is an *operation*
  put on a queue; the committer takes everything that is waiting (up to ``max_batch``),
  plans it, and commits it in **one transaction with one fsync** (WAL,
  ``synchronous=FULL``). Each caller's future is resolved only after the commit that
  holds its operation, so an acknowledgement always means "on disk". While one commit
  is being synced the next batch gathers, which is what makes durable accepts fast under
  load: the fsync is shared by everyone who arrived meanwhile.
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
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from gateway.errors import StoreError
from gateway.events import ACCEPTED as EV_ACCEPTED
from gateway.events import DELIVERED, LedgerEvent
from gateway.merkle import HASH_SIZE, CompactRange, NodeId, leaf_hash, subtree_ranges_for_size
from gateway.store import (
    ACCEPTED,
    CONFLICT,
    DUPLICATE,
    PRIORITY_RANK,
    AcceptOutcome,
    IncomingMessage,
    LedgerRow,
    StoredCheckpoint,
    StoredMessage,
)

log = structlog.get_logger("gateway.store")

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE messages (
            id          TEXT PRIMARY KEY,
            digest      TEXT NOT NULL,
            envelope    BLOB NOT NULL,
            kind        TEXT NOT NULL,
            priority    TEXT NOT NULL,
            sender      TEXT NOT NULL,
            recipient   TEXT NOT NULL,
            thread      TEXT NOT NULL,
            in_reply_to TEXT,
            created_ms  INTEGER NOT NULL,
            expires_ms  INTEGER NOT NULL,
            accepted_ms INTEGER NOT NULL,
            origin      TEXT NOT NULL,
            actor       TEXT NOT NULL
        ) WITHOUT ROWID;

        CREATE TABLE inbox (
            seq          INTEGER PRIMARY KEY AUTOINCREMENT,
            desk         TEXT NOT NULL,
            message_id   TEXT NOT NULL REFERENCES messages(id),
            delivered_ms INTEGER NOT NULL,
            UNIQUE (desk, message_id)
        );
        CREATE INDEX inbox_by_desk ON inbox (desk, seq);

        CREATE TABLE outbox (
            seq        INTEGER PRIMARY KEY AUTOINCREMENT,
            partner    TEXT NOT NULL,
            rank       INTEGER NOT NULL,
            message_id TEXT NOT NULL REFERENCES messages(id),
            queued_ms  INTEGER NOT NULL,
            UNIQUE (partner, message_id)
        );
        CREATE INDEX outbox_order ON outbox (partner, rank, seq);

        CREATE TABLE ledger (
            seq       INTEGER PRIMARY KEY,
            entry     BLOB NOT NULL,
            leaf_hash BLOB NOT NULL,
            nodes     BLOB NOT NULL
        );
        CREATE TABLE ledger_by_message (
            message_id TEXT NOT NULL,
            seq        INTEGER NOT NULL,
            PRIMARY KEY (message_id, seq)
        ) WITHOUT ROWID;
        CREATE TABLE checkpoints (
            size    INTEGER PRIMARY KEY,
            root    BLOB NOT NULL,
            note    BLOB NOT NULL,
            made_ms INTEGER NOT NULL
        );

        CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
            BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
        CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
            BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
        CREATE TRIGGER ledger_index_no_update BEFORE UPDATE ON ledger_by_message
            BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
        CREATE TRIGGER ledger_index_no_delete BEFORE DELETE ON ledger_by_message
            BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
        CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
            BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
        CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
            BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
        """,
    ),
]

_INSERT_MESSAGE = (
    "INSERT INTO messages (id, digest, envelope, kind, priority, sender, recipient, thread,"
    " in_reply_to, created_ms, expires_ms, accepted_ms, origin, actor)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_INSERT_INBOX = "INSERT INTO inbox (desk, message_id, delivered_ms) VALUES (?,?,?)"
_INSERT_OUTBOX = "INSERT INTO outbox (partner, rank, message_id, queued_ms) VALUES (?,?,?,?)"
_INSERT_LEDGER = "INSERT INTO ledger (seq, entry, leaf_hash, nodes) VALUES (?,?,?,?)"
_INSERT_LEDGER_INDEX = "INSERT INTO ledger_by_message (message_id, seq) VALUES (?,?)"
_IN_CHUNK = 500  # ids per "IN (...)" query, well below SQLite's variable limit

# Statements run in phase order so that rows referenced by foreign keys come first.
PHASE_MESSAGES, PHASE_DEPENDENTS = 0, 1


@dataclass
class _Plan:
    """What one batch will write, built by the operations before anything touches disk."""

    next_seq: int
    known: dict[str, str]  # message id -> digest, on disk or earlier in this batch
    statements: dict[int, dict[str, list[tuple[Any, ...]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    events: list[LedgerEvent] = field(default_factory=list)

    def add(self, phase: int, sql: str, params: tuple[Any, ...]) -> None:
        self.statements[phase][sql].append(params)

    def add_event(self, event: LedgerEvent) -> int:
        self.events.append(event)
        seq = self.next_seq
        self.next_seq += 1
        return seq


class _Op:
    """A write waiting for the committer. ``plan`` decides its rows and its result."""

    __slots__ = ("future", "result")

    def __init__(self) -> None:
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.result: Any = None

    def ids(self) -> Iterable[str]:
        return ()

    def plan(self, plan: _Plan) -> None:
        raise NotImplementedError


class _AcceptOp(_Op):
    __slots__ = ("message",)

    def __init__(self, message: IncomingMessage) -> None:
        super().__init__()
        self.message = message

    def ids(self) -> Iterable[str]:
        return (self.message.envelope.header.id,)

    def plan(self, plan: _Plan) -> None:
        m = self.message
        env, h = m.envelope, m.envelope.header
        digest = env.digest
        known = plan.known.get(h.id)
        if known is not None:
            self.result = AcceptOutcome(DUPLICATE if known == digest else CONFLICT, h.id)
            return
        plan.known[h.id] = digest
        plan.add(PHASE_MESSAGES, _INSERT_MESSAGE, (
            h.id, digest, env.raw, h.kind, h.priority, h.sender, h.recipient, h.thread,
            h.in_reply_to, h.created, h.expires, m.received_ms, m.origin, m.actor,
        ))
        seqs = [plan.add_event(LedgerEvent(
            EV_ACCEPTED, h.id, m.received_ms, digest=digest, sender=h.sender,
            recipient=h.recipient, kind=h.kind, priority=h.priority, actor=m.actor,
            partner=None if m.origin == "local" else m.origin,
        ))]
        if m.deliver_to is not None:
            plan.add(PHASE_DEPENDENTS, _INSERT_INBOX, (m.deliver_to, h.id, m.received_ms))
            seqs.append(plan.add_event(LedgerEvent(
                DELIVERED, h.id, m.received_ms, recipient=m.deliver_to, kind=h.kind,
                priority=h.priority,
            )))
        else:
            plan.add(PHASE_DEPENDENTS, _INSERT_OUTBOX,
                     (m.relay_to, PRIORITY_RANK[h.priority], h.id, m.received_ms))
        self.result = AcceptOutcome(ACCEPTED, h.id, tuple(seqs))


class _EventsOp(_Op):
    __slots__ = ("events",)

    def __init__(self, events: Sequence[LedgerEvent]) -> None:
        super().__init__()
        self.events = events

    def plan(self, plan: _Plan) -> None:
        self.result = tuple(plan.add_event(e) for e in self.events)


class _CheckpointOp(_Op):
    __slots__ = ("checkpoint",)

    def __init__(self, checkpoint: StoredCheckpoint) -> None:
        super().__init__()
        self.checkpoint = checkpoint

    def plan(self, plan: _Plan) -> None:
        c = self.checkpoint
        plan.add(PHASE_DEPENDENTS,
                 "INSERT OR IGNORE INTO checkpoints (size, root, note, made_ms) VALUES (?,?,?,?)",
                 (c.size, c.root, c.note, c.made_ms))


async def _connect(path: Path, *, writer: bool) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    await conn.execute("PRAGMA busy_timeout = 10000")
    await conn.execute("PRAGMA foreign_keys = ON")
    if writer:
        mode = await (await conn.execute("PRAGMA journal_mode = WAL")).fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise StoreError(f"{path}: cannot switch the database to WAL mode")
        await conn.execute("PRAGMA synchronous = FULL")
    else:
        await conn.execute("PRAGMA query_only = ON")
    return conn


class SqliteStore:
    """The :class:`gateway.store.Store` on one SQLite file."""

    def __init__(self, path: Path, writer: aiosqlite.Connection, reader: aiosqlite.Connection,
                 frontier: CompactRange | None, max_batch: int) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        # None when the stored tree cannot be read back: the store then refuses writes
        # (`gateway ledger verify` says what is wrong) but still serves reads.
        self._damaged = frontier is None
        self._frontier = frontier or CompactRange()
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Op | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.commits = 0  # batches committed, for benchmarks and status
        self.committed_ops = 0
        self.on_commit: list[Any] = []  # callables(new_ledger_size) run after each commit

    # --- lifecycle ---------------------------------------------------------------------

    @classmethod
    async def open(cls, path: Path, *, max_batch: int = 4096) -> SqliteStore:
        """Open (creating if needed) and migrate the database, and start the committer."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            writer = await _connect(path, writer=True)
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open database ({exc})") from None
        try:
            await _migrate(writer, path)
            reader = await _connect(path, writer=False)
            frontier = await _load_frontier(writer)
        except BaseException:
            await writer.close()
            raise
        store = cls(path, writer, reader, frontier, max_batch)
        store._task = asyncio.get_running_loop().create_task(
            store._committer(), name=f"store-committer:{path.name}"
        )
        return store

    async def close(self) -> None:
        """Commit what is queued, then stop the committer and close both connections."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            await self._queue.put(None)
            await self._task
        await self._reader.close()
        await self._writer.close()

    # --- writes ------------------------------------------------------------------------

    async def _submit(self, op: _Op) -> Any:
        if self._closed:
            raise StoreError("the store is closed")
        if self._damaged:
            raise StoreError(
                f"{self.path}: the ledger is damaged; writes are refused"
                " (run `gateway ledger verify`)"
            )
        await self._queue.put(op)
        return await op.future

    async def accept(self, message: IncomingMessage) -> AcceptOutcome:
        result: AcceptOutcome = await self._submit(_AcceptOp(message))
        return result

    async def append_events(self, events: Sequence[LedgerEvent]) -> tuple[int, ...]:
        result: tuple[int, ...] = await self._submit(_EventsOp(events))
        return result

    async def add_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        if checkpoint.size > self._frontier.size:
            raise StoreError("a checkpoint cannot be ahead of the ledger")
        await self._submit(_CheckpointOp(checkpoint))

    async def _committer(self) -> None:
        """The one writer: take what waits, commit it as one transaction, answer everyone."""
        while True:
            first = await self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self._max_batch and not self._queue.empty():
                op = self._queue.get_nowait()
                if op is None:
                    stop = True
                    break
                batch.append(op)
            try:
                await self._commit(batch)
            except Exception as exc:  # the loop boundary: fail this batch, keep serving
                log.exception("commit_failed", ops=len(batch))
                error = exc if isinstance(exc, StoreError) else StoreError(
                    "the store could not commit; nothing of this request was saved"
                )
                for op in batch:
                    if not op.future.done():
                        op.future.set_exception(error)
            if stop:
                return

    async def _commit(self, batch: list[_Op]) -> None:
        ids = [i for op in batch for i in op.ids()]
        plan = _Plan(next_seq=self._frontier.size, known=await self._known_digests(ids))
        for op in batch:
            op.plan(plan)
        frontier = CompactRange(self._frontier.size, self._frontier.hashes)
        ledger_rows: list[tuple[int, bytes, bytes, bytes]] = []
        index_rows: list[tuple[str, int]] = []
        seq = frontier.size
        for event in plan.events:
            entry = event.encode(seq)
            leaf = leaf_hash(entry)
            completed = frontier.append(leaf)
            ledger_rows.append((seq, entry, leaf, b"".join(h for _, _, h in completed[1:])))
            index_rows.append((event.message_id, seq))
            seq += 1
        w = self._writer
        try:
            await w.execute("BEGIN IMMEDIATE")
            try:
                for phase in sorted(plan.statements):
                    for sql, params in plan.statements[phase].items():
                        await w.executemany(sql, params)
                if ledger_rows:
                    await w.executemany(_INSERT_LEDGER, ledger_rows)
                    await w.executemany(_INSERT_LEDGER_INDEX, index_rows)
                await w.execute("COMMIT")
            except BaseException:
                try:
                    await w.execute("ROLLBACK")
                except sqlite3.Error:  # the transaction may already be gone
                    pass
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"database write failed ({exc}); nothing was saved") from None
        self._frontier = frontier
        self.commits += 1
        self.committed_ops += len(batch)
        for op in batch:
            if not op.future.done():
                op.future.set_result(op.result)
        for callback in self.on_commit:
            callback(frontier.size)

    async def _known_digests(self, ids: list[str]) -> dict[str, str]:
        known: dict[str, str] = {}
        for i in range(0, len(ids), _IN_CHUNK):
            chunk = ids[i : i + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            async with self._writer.execute(
                f"SELECT id, digest FROM messages WHERE id IN ({marks})", chunk  # noqa: S608
            ) as cur:
                known.update({row[0]: row[1] for row in await cur.fetchall()})
        return known

    # --- reads -------------------------------------------------------------------------

    async def get_message(self, message_id: str) -> StoredMessage | None:
        async with self._reader.execute(
            "SELECT id, digest, envelope, kind, priority, sender, recipient, accepted_ms, origin"
            " FROM messages WHERE id = ?", (message_id,)
        ) as cur:
            row = await cur.fetchone()
        return StoredMessage(*row) if row is not None else None

    def ledger_size(self) -> int:
        return self._frontier.size

    async def ledger_rows_at(self, seqs: Iterable[int]) -> dict[int, LedgerRow]:
        wanted = sorted(set(seqs))
        rows: dict[int, LedgerRow] = {}
        for i in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[i : i + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            async with self._reader.execute(
                f"SELECT seq, entry, leaf_hash, nodes FROM ledger WHERE seq IN ({marks})",  # noqa: S608
                chunk,
            ) as cur:
                for row in await cur.fetchall():
                    rows[row[0]] = LedgerRow(*row)
        return rows

    async def ledger_nodes(self, ids: Iterable[NodeId]) -> dict[NodeId, bytes]:
        ids = list(ids)
        rows = await self.ledger_rows_at(_node_row(node) for node in ids)
        return {node: _node_hash_in(rows, node) for node in ids}

    async def ledger_rows(self, start: int = 0, batch: int = 4096) -> AsyncIterator[LedgerRow]:
        last = start - 1
        while True:
            async with self._reader.execute(
                "SELECT seq, entry, leaf_hash, nodes FROM ledger WHERE seq > ? ORDER BY seq"
                " LIMIT ?", (last, batch)
            ) as cur:
                rows = [LedgerRow(*row) for row in await cur.fetchall()]
            if not rows:
                return
            for row in rows:
                yield row
            last = rows[-1].seq

    async def ledger_row_count(self) -> int:
        async with self._reader.execute("SELECT count(*) FROM ledger") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def events_of_message(self, message_id: str) -> list[int]:
        async with self._reader.execute(
            "SELECT seq FROM ledger_by_message WHERE message_id = ? ORDER BY seq", (message_id,)
        ) as cur:
            return [row[0] for row in await cur.fetchall()]

    async def checkpoints(self) -> list[StoredCheckpoint]:
        async with self._reader.execute(
            "SELECT size, root, note, made_ms FROM checkpoints ORDER BY size"
        ) as cur:
            return [StoredCheckpoint(*row) for row in await cur.fetchall()]

    async def latest_checkpoint(self) -> StoredCheckpoint | None:
        async with self._reader.execute(
            "SELECT size, root, note, made_ms FROM checkpoints ORDER BY size DESC LIMIT 1"
        ) as cur:
            row = await cur.fetchone()
        return StoredCheckpoint(*row) if row is not None else None


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


async def _load_frontier(conn: aiosqlite.Connection) -> CompactRange | None:
    """Rebuild the in-memory compact range from the stored complete-subtree hashes.

    None if rows are missing or the hashes cannot be read: appending to a damaged tree
    would bury the damage under new entries.
    """
    async with conn.execute("SELECT count(*), max(seq) FROM ledger") as cur:
        counts = await cur.fetchone()
    count, last = (counts[0], counts[1]) if counts else (0, None)
    size = 0 if last is None else last + 1
    if size == 0:
        return CompactRange()
    if count != size:
        log.error("ledger_rows_missing", rows=count, size=size)
        return None
    nodes = subtree_ranges_for_size(size)
    rows: dict[int, LedgerRow] = {}
    seqs = [_node_row(n) for n in nodes]
    marks = ",".join("?" * len(seqs))
    query = f"SELECT seq, entry, leaf_hash, nodes FROM ledger WHERE seq IN ({marks})"  # noqa: S608
    async with conn.execute(query, seqs) as cur:
        for r in await cur.fetchall():
            rows[r[0]] = LedgerRow(*r)
    try:
        return CompactRange(size, [_node_hash_in(rows, n) for n in nodes])
    except StoreError:
        log.error("ledger_frontier_unreadable", size=size)
        return None

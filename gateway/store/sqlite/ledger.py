"""The ledger's rows, tree hashes and checkpoints: appended through the group commit
(events get their position and hashes there), read for proofs and verification.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence

from gateway.errors import StoreError
from gateway.ledger.events import LedgerEvent
from gateway.protocol.merkle import NodeId
from gateway.store import LedgerRow, StoredCheckpoint
from gateway.store.sqlite.engine import (
    _IN_CHUNK,
    PHASE_DEPENDENTS,
    StoreEngine,
    _node_hash_in,
    _node_row,
    _Op,
    _Plan,
)


class _EventsOp(_Op):
    __slots__ = ("events",)

    def __init__(self, loop: asyncio.AbstractEventLoop, events: Sequence[LedgerEvent]) -> None:
        super().__init__(loop)
        self.events = events

    def ids(self) -> Iterable[str]:
        return [e.message_id for e in self.events]

    def plan(self, plan: _Plan) -> None:
        add = plan.add_event
        self.result = tuple([add(e) for e in self.events])


class _CheckpointOp(_Op):
    __slots__ = ("checkpoint",)

    def __init__(self, loop: asyncio.AbstractEventLoop, checkpoint: StoredCheckpoint) -> None:
        super().__init__(loop)
        self.checkpoint = checkpoint

    def plan(self, plan: _Plan) -> None:
        c = self.checkpoint
        plan.add(PHASE_DEPENDENTS,
                 "INSERT OR IGNORE INTO checkpoints (size, root, note, made_ms) VALUES (?,?,?,?)",
                 (c.size, c.root, c.note, c.made_ms))


class LedgerQueries(StoreEngine):
    """Ledger appends, rows, subtree hashes and checkpoints."""

    def append_events(self, events: Sequence[LedgerEvent]) -> Awaitable[tuple[int, ...]]:
        return self._submit(_EventsOp(self._loop, events))

    async def add_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        if checkpoint.size > self._committed.frontier.size:
            raise StoreError("a checkpoint cannot be ahead of the ledger")
        await self._submit(_CheckpointOp(self._loop, checkpoint))

    def ledger_size(self) -> int:
        return self._committed.frontier.size

    async def ledger_rows_at(self, seqs: Iterable[int]) -> dict[int, LedgerRow]:
        wanted = sorted(set(seqs))
        rows: dict[int, LedgerRow] = {}
        for i in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[i : i + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in await self._read(
                f"SELECT seq, entry, leaf_hash, nodes FROM ledger WHERE seq IN ({marks})",  # noqa: S608
                chunk,
            ):
                rows[row[0]] = LedgerRow(*row)
        return rows

    async def ledger_nodes(self, ids: Iterable[NodeId]) -> dict[NodeId, bytes]:
        ids = list(ids)
        rows = await self.ledger_rows_at(_node_row(node) for node in ids)
        return {node: _node_hash_in(rows, node) for node in ids}

    async def ledger_rows(self, start: int = 0, batch: int = 4096) -> AsyncIterator[LedgerRow]:
        last = start - 1
        while True:
            rows = [LedgerRow(*row) for row in await self._read(
                "SELECT seq, entry, leaf_hash, nodes FROM ledger WHERE seq > ? ORDER BY seq"
                " LIMIT ?", (last, batch)
            )]
            if not rows:
                return
            for row in rows:
                yield row
            last = rows[-1].seq

    async def ledger_row_count(self) -> int:
        rows = await self._read("SELECT count(*) FROM ledger")
        return int(rows[0][0])

    async def events_of_message(self, message_id: str) -> list[int]:
        rows = await self._read(
            "SELECT ledger.seq FROM messages JOIN ledger ON ledger.msg = messages.mseq"
            " WHERE messages.id = ? ORDER BY ledger.seq", (message_id,)
        )
        return [row[0] for row in rows]

    async def checkpoints(self) -> list[StoredCheckpoint]:
        rows = await self._read("SELECT size, root, note, made_ms FROM checkpoints ORDER BY size")
        return [StoredCheckpoint(*row) for row in rows]

    async def latest_checkpoint(self) -> StoredCheckpoint | None:
        rows = await self._read(
            "SELECT size, root, note, made_ms FROM checkpoints ORDER BY size DESC LIMIT 1"
        )
        return StoredCheckpoint(*rows[0]) if rows else None

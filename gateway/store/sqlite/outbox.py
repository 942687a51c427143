"""The partners' outboxes: what the federation sender takes, relays and records, and
the queue figures metrics show.

Recording receipts and expiries goes through the group commit (they write ledger events);
forgetting forwarded read acknowledgements is an ordinary transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Sequence

from gateway.ledger.events import RECEIPT, RELAYED, LedgerEvent
from gateway.store import (
    ExpiredItem,
    NewNotice,
    NonDelivery,
    OutboxItem,
    QueuedMessage,
    QueuedRead,
    QueueStats,
    RelayResult,
)
from gateway.store.sqlite.engine import PHASE_DEPENDENTS, StoreEngine, _Op, _Plan

_INSERT_NOTICE = (
    "INSERT OR IGNORE INTO notices (message_id, desk, reason, notice, made_ms) VALUES (?,?,?,?,?)"
)
_DELETE_OUTBOX = "DELETE FROM outbox WHERE partner = ? AND message_id = ?"
_INSERT_RECEIPT = (
    "INSERT OR IGNORE INTO receipts (message_id, partner, outcome, reason, receipt, received_ms)"
    " VALUES (?,?,?,?,?,?)"
)

_QUEUED = (
    "SELECT m.id, q.partner, m.sender, m.recipient, m.kind, m.priority, length(m.envelope),"
    " m.digest, m.accepted_ms, q.queued_ms, q.expires_ms, q.attempts, q.last_error"
    " FROM outbox q JOIN messages m ON m.id = q.message_id "
)


def _plan_notices(plan: _Plan, partner: str, notices: Sequence[NonDelivery]) -> int:
    """Plan what a non-delivery notice writes (outbox row gone, notice kept, ledger event,
    the sending desk's notice stored) for each of ``notices`` whose message is stored."""
    recorded = 0
    for n in notices:
        original = plan.known.get(n.message_id)
        if original is None:
            continue
        recorded += 1
        plan.add(PHASE_DEPENDENTS, _DELETE_OUTBOX, (partner, n.message_id))
        plan.add(PHASE_DEPENDENTS, _INSERT_NOTICE, (
            n.message_id, n.sender, n.reason, n.notice, n.time_ms))
        plan.add_event(LedgerEvent(n.event, n.message_id, n.time_ms, digest=original.digest,
                                   partner=partner, actor=n.actor, reason=n.reason))
        detail = {"id": n.message_id, "partner": partner, "reason": n.reason,
                  "time": n.time_ms}
        if n.note is not None:
            detail["note"] = n.note
        plan.add_notice(NewNotice(n.sender, n.event, n.message_id, n.time_ms, detail,
                                  n.notice))
    return recorded


class _RelayOp(_Op):
    __slots__ = ("notices", "partner", "results")

    def __init__(self, loop: asyncio.AbstractEventLoop, partner: str,
                 results: Sequence[RelayResult], notices: Sequence[NonDelivery]) -> None:
        super().__init__(loop)
        self.partner = partner
        self.results = results
        self.notices = notices

    def ids(self) -> Iterable[str]:
        return [r.message_id for r in self.results]

    def plan(self, plan: _Plan) -> None:
        recorded = 0
        for r in self.results:
            original = plan.known.get(r.message_id)
            if original is None:
                continue
            recorded += 1
            plan.add(PHASE_DEPENDENTS, _DELETE_OUTBOX, (self.partner, r.message_id))
            plan.add(PHASE_DEPENDENTS, _INSERT_RECEIPT, (
                r.message_id, self.partner, r.outcome, r.reason, r.note, r.received_ms))
            plan.add_event(LedgerEvent(RELAYED, r.message_id, r.sent_ms, partner=self.partner))
            plan.add_event(LedgerEvent(RECEIPT, r.message_id, r.received_ms,
                                       partner=self.partner, actor=r.actor, outcome=r.outcome,
                                       reason=r.reason))
            plan.notify(original.sender, "receipt", id=r.message_id, partner=self.partner,
                        outcome=r.outcome, reason=r.reason, time=r.received_ms)
        _plan_notices(plan, self.partner, self.notices)
        self.result = recorded


class _ExpiryOp(_Op):
    __slots__ = ("notices", "partner")

    def __init__(self, loop: asyncio.AbstractEventLoop, partner: str,
                 notices: Sequence[NonDelivery]) -> None:
        super().__init__(loop)
        self.partner = partner
        self.notices = notices

    def ids(self) -> Iterable[str]:
        return [n.message_id for n in self.notices]

    def plan(self, plan: _Plan) -> None:
        self.result = _plan_notices(plan, self.partner, self.notices)


class OutboxQueries(StoreEngine):
    """Outbox batches, their receipts and expiries, and queue depths."""

    def record_relay(self, partner: str, results: Sequence[RelayResult],
                     notices: Sequence[NonDelivery] = ()) -> Awaitable[int]:
        return self._submit(_RelayOp(self._loop, partner, results, notices))

    def record_expiry(self, partner: str, notices: Sequence[NonDelivery]) -> Awaitable[int]:
        return self._submit(_ExpiryOp(self._loop, partner, notices))

    async def outbox_batch(self, partner: str, limit: int, max_bytes: int) -> list[OutboxItem]:
        rows = await self._read(
            "SELECT m.id, m.digest, m.envelope, o.binding, q.rank, q.queued_ms"
            " FROM outbox q JOIN messages m ON m.id = q.message_id"
            " LEFT JOIN officers o ON o.sign_key_id = m.actor"
            " WHERE q.partner = ? ORDER BY q.rank, q.seq LIMIT ?", (partner, limit)
        )
        items: list[OutboxItem] = []
        size = 0
        for row in rows:
            size += len(row[2]) + len(row[3] or b"")
            if items and size > max_bytes:
                break
            items.append(OutboxItem(*row))
        return items

    async def read_outbox_batch(self, partner: str, limit: int) -> list[QueuedRead]:
        rows = await self._read(
            "SELECT seq, message_id, ack, binding FROM read_outbox WHERE partner = ?"
            " ORDER BY seq LIMIT ?", (partner, limit))
        return [QueuedRead(*row) for row in rows]

    async def forget_reads(self, partner: str, seqs: Sequence[int]) -> None:
        async with self.transaction() as w:
            await w.executemany("DELETE FROM read_outbox WHERE partner = ? AND seq = ?",
                                [(partner, seq) for seq in seqs])

    async def next_expiry(self, partner: str) -> int | None:
        rows = await self._read(
            "SELECT MIN(expires_ms) FROM outbox WHERE partner = ?", (partner,))
        return rows[0][0] if rows else None

    async def expired_outbox(self, partner: str, now_ms: int, limit: int) -> list[ExpiredItem]:
        rows = await self._read(
            "SELECT m.id, m.digest, m.sender, m.recipient, q.expires_ms FROM outbox q"
            " JOIN messages m ON m.id = q.message_id WHERE q.partner = ? AND q.expires_ms <= ?"
            " ORDER BY q.expires_ms LIMIT ?", (partner, now_ms, limit))
        return [ExpiredItem(*row) for row in rows]

    async def queued_items(self, partner: str, message_ids: Sequence[str]) -> list[ExpiredItem]:
        items: list[ExpiredItem] = []
        for message_id in message_ids:  # (few: the messages a partner refused)
            rows = await self._read(
                "SELECT m.id, m.digest, m.sender, m.recipient, q.expires_ms FROM outbox q"
                " JOIN messages m ON m.id = q.message_id WHERE q.partner = ?"
                " AND q.message_id = ?", (partner, message_id))
            items += [ExpiredItem(*row) for row in rows]
        return items

    async def note_attempts(self, partner: str, message_ids: Sequence[str], error: str) -> None:
        async with self.transaction() as w:
            await w.executemany(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?"
                " WHERE partner = ? AND message_id = ?",
                [(error, partner, message_id) for message_id in message_ids])

    async def queued_messages(self, partner: str | None, limit: int) -> list[QueuedMessage]:
        where, params = ("WHERE q.partner = ?", (partner, limit)) if partner is not None \
            else ("", (limit,))
        rows = await self._read(_QUEUED + where + " ORDER BY q.partner, q.rank, q.seq LIMIT ?",
                                params)
        return [QueuedMessage(*row) for row in rows]

    async def queued_message(self, message_id: str) -> QueuedMessage | None:
        rows = await self._read(_QUEUED + "WHERE q.message_id = ? LIMIT 1", (message_id,))
        return QueuedMessage(*rows[0]) if rows else None

    async def notices_of(self, message_id: str) -> list[bytes]:
        rows = await self._read(
            "SELECT notice FROM notices WHERE message_id = ? ORDER BY made_ms", (message_id,))
        return [row[0] for row in rows]

    async def queue_stats(self) -> dict[str, QueueStats]:
        rows = await self._read(
            "SELECT partner, COUNT(*), MIN(queued_ms) FROM outbox GROUP BY partner")
        return {row[0]: QueueStats(*row) for row in rows}

    async def read_queue_depths(self) -> dict[str, int]:
        rows = await self._read("SELECT partner, COUNT(*) FROM read_outbox GROUP BY partner")
        return {row[0]: row[1] for row in rows}

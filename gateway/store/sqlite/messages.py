"""Accepting messages and reading them back: the officers' channel, delivery to desks
and the federation receiver.

An accept writes the message, its ``accepted`` (and ``delivered`` or ``replied``) ledger
events and its inbox or outbox row in one group commit; so does a read acknowledgement.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Iterable, Sequence

from gateway.ledger.events import ACCEPTED as EV_ACCEPTED
from gateway.ledger.events import (
    DELIVERED,
    FORWARDED,
    HANDED_OVER,
    READ,
    REPLIED,
    LedgerEvent,
)
from gateway.protocol.cases import FINAL, SUBMITTED, MoveRefused, check_status, due_ms
from gateway.store import (
    ACCEPTED,
    CONFLICT,
    DUPLICATE,
    PRIORITY_RANK,
    READ_DUPLICATE,
    READ_RECORDED,
    READ_UNKNOWN,
    REFUSED,
    AcceptOutcome,
    CaseRow,
    InboxItem,
    IncomingMessage,
    ReadAck,
    SentItem,
    StoredMessage,
)
from gateway.store.sqlite.engine import PHASE_DEPENDENTS, PHASE_MESSAGES, StoreEngine, _Op, _Plan

_INSERT_MESSAGE = (
    "INSERT INTO messages (mseq, id, digest, envelope, kind, priority, sender, recipient,"
    " thread, in_reply_to, created_ms, expires_ms, accepted_ms, origin, actor, handling,"
    " case_state, due) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_INSERT_INBOX = "INSERT INTO inbox (desk, message_id, delivered_ms) VALUES (?,?,?)"
_INSERT_OUTBOX = (
    "INSERT INTO outbox (partner, rank, message_id, queued_ms, expires_ms) VALUES (?,?,?,?,?)"
)
_INSERT_READ = "INSERT INTO reads (message_id, officer_id, read_ms, ack) VALUES (?,?,?,?)"
_QUEUE_READ = (
    "INSERT OR IGNORE INTO read_outbox (partner, message_id, officer_id, read_ms, ack, binding)"
    " VALUES (?,?,?,?,?,?)"
)
_INSERT_CASE = (
    "INSERT INTO cases (thread, requester, executor, partner, opened_ms, due, due_ms, state,"
    " state_ms) VALUES (?,?,?,?,?,?,?,?,?)"
)
_MOVE_CASE = (
    "UPDATE cases SET state = ?, state_ms = ?, last_move = ?, due = ?, due_ms = ?,"
    " reminded_ms = ?, escalated_ms = ?, closed = ? WHERE thread = ?"
)
_IGNORE_MOVE = "UPDATE cases SET ignored_moves = ignored_moves + 1 WHERE thread = ?"
_SENDS_PAGE = 1000
_FIRST_READ = "UPDATE messages SET first_read_ms = ? WHERE id = ? AND first_read_ms IS NULL"
_FIRST_REPLY = "UPDATE messages SET first_reply_ms = ? WHERE id = ? AND first_reply_ms IS NULL"


class _AcceptOp(_Op):
    __slots__ = ("case_thread", "message")

    def __init__(self, loop: asyncio.AbstractEventLoop, message: IncomingMessage) -> None:
        super().__init__(loop)
        self.message = message
        h = message.envelope.header
        self.case_thread = h.thread if h.state is not None else None

    def ids(self) -> Iterable[str]:
        h = self.message.envelope.header
        return (h.id,) if h.in_reply_to is None else (h.id, h.in_reply_to)

    def plan(self, plan: _Plan) -> None:
        m = self.message
        env, h = m.envelope, m.envelope.header
        digest = env.digest
        known = plan.known.get(h.id)
        if known is not None:
            self.result = AcceptOutcome(DUPLICATE if known.digest == digest else CONFLICT, h.id)
            return
        move = None
        if h.state is not None:
            move = self._move(plan)
            if move is None:
                return  # refused: self.result says why
        mseq = plan.add_message(h.id, digest, h.sender)
        plan.add(PHASE_MESSAGES, _INSERT_MESSAGE, (
            mseq, h.id, digest, env.raw, h.kind, h.priority, h.sender, h.recipient, h.thread,
            h.in_reply_to, h.created, h.expires, m.received_ms, m.origin, m.actor, h.handling,
            h.state, h.due,
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
            plan.notify(m.deliver_to, "message", id=h.id, kind=h.kind, priority=h.priority,
                        sender=h.sender, thread=h.thread, in_reply_to=h.in_reply_to)
        else:
            plan.add(PHASE_DEPENDENTS, _INSERT_OUTBOX,
                     (m.relay_to, PRIORITY_RANK[h.priority], h.id, m.received_ms, h.expires))
        if h.kind == "handover":  # the alert's own record: its persons were received
            seqs.append(plan.add_event(LedgerEvent(
                HANDED_OVER, h.in_reply_to, m.received_ms, ref=h.id,  # type: ignore[arg-type]
                actor=m.actor, sender=h.sender,
                partner=None if m.origin == "local" else m.origin)))
        if h.kind == "forward":  # (what it forwards, on this gateway's ledger too)
            seqs.append(plan.add_event(LedgerEvent(
                FORWARDED, h.id, m.received_ms, ref=h.forwards, sender=h.sender,
                recipient=h.recipient, actor=m.actor,
                partner=None if m.origin == "local" else m.origin)))
        if h.kind == "case":
            partner = m.relay_to if m.origin == "local" else m.origin
            row = CaseRow(h.id, h.sender, h.recipient, partner, m.received_ms, h.due,
                          due_ms(h.due) if h.due is not None else None, SUBMITTED,
                          m.received_ms)
            plan.cases[h.id] = row
            plan.add(PHASE_DEPENDENTS, _INSERT_CASE, (
                row.thread, row.requester, row.executor, row.partner, row.opened_ms, row.due,
                row.due_ms, row.state, row.state_ms))
        elif move is not None:
            plan.add(PHASE_DEPENDENTS, *move)
        original = plan.known.get(h.in_reply_to) if h.in_reply_to is not None else None
        if original is not None and h.kind == "reply":
            # The answered message's own record: when its first reply came, and by whom.
            plan.add(PHASE_DEPENDENTS, _FIRST_REPLY, (m.received_ms, h.in_reply_to))
            seqs.append(plan.add_event(LedgerEvent(
                REPLIED, h.in_reply_to, m.received_ms, actor=m.actor, ref=h.id,  # type: ignore[arg-type]
                sender=h.sender,
            )))
            plan.notify(original.sender, "reply", id=h.in_reply_to, reply=h.id, sender=h.sender)
        self.result = AcceptOutcome(ACCEPTED, h.id, tuple(seqs))


    def _move(self, plan: _Plan) -> tuple[str, tuple[object, ...]] | None:
        """The write that moves the request this status belongs to, planned on where it
        stands. A status from this gateway's officers that the lifecycle does not allow is
        refused (nothing is written); one from a partner is kept and delivered, and
        counted as ignored, since its gateway accepted it (both sides moved at once)."""
        m = self.message
        h = m.envelope.header
        assert h.state is not None
        case = plan.cases.get(h.thread)
        try:
            check_status(h, case)
        except MoveRefused as refused:
            if m.origin == "local" or case is None:
                self.result = AcceptOutcome(REFUSED, h.id, refusal=(refused.code, str(refused)))
                return None
            plan.cases[h.thread] = dataclasses.replace(
                case, ignored_moves=case.ignored_moves + 1)
            return _IGNORE_MOVE, (h.thread,)
        assert case is not None  # (check_status refuses a thread that is no request)
        due = case.due
        due_at, reminded, escalated = case.due_ms, case.reminded_ms, case.escalated_ms
        if h.due is not None and h.due != case.due:
            due, due_at, reminded, escalated = h.due, due_ms(h.due), None, None
        moved = dataclasses.replace(case, state=h.state, state_ms=m.received_ms,
                                    last_move=h.id, due=due, due_ms=due_at,
                                    reminded_ms=reminded, escalated_ms=escalated)
        plan.cases[h.thread] = moved
        return _MOVE_CASE, (h.state, m.received_ms, h.id, due, due_at, reminded, escalated,
                            int(h.state in FINAL), h.thread)


class _ReadOp(_Op):
    __slots__ = ("ack",)
    ack: ReadAck

    def __init__(self, loop: asyncio.AbstractEventLoop, ack: ReadAck) -> None:
        super().__init__(loop)
        self.ack = ack

    def ids(self) -> Iterable[str]:
        return (self.ack.message_id,)

    def plan(self, plan: _Plan) -> None:
        a = self.ack
        original = plan.known.get(a.message_id)
        if original is None:
            self.result = READ_UNKNOWN
            return
        if (a.message_id, a.officer_id) in plan.reads:
            self.result = READ_DUPLICATE
            return
        plan.reads.add((a.message_id, a.officer_id))
        plan.add(PHASE_DEPENDENTS, _INSERT_READ, (a.message_id, a.officer_id, a.read_ms, a.ack))
        plan.add(PHASE_DEPENDENTS, _FIRST_READ, (a.read_ms, a.message_id))
        plan.add_event(LedgerEvent(READ, a.message_id, a.read_ms, actor=a.officer_key_id))
        if a.forward_to is not None and a.binding is not None:
            plan.add(PHASE_DEPENDENTS, _QUEUE_READ, (
                a.forward_to, a.message_id, a.officer_id, a.read_ms, a.ack, a.binding))
        plan.notify(original.sender, "read", id=a.message_id, officer=a.officer_id,
                    read=a.read_ms)
        self.result = READ_RECORDED


class MessageQueries(StoreEngine):
    """Accepts, read acknowledgements, and the messages, inboxes and reads they left."""

    def accept(self, message: IncomingMessage) -> Awaitable[AcceptOutcome]:
        return self._submit(_AcceptOp(self._loop, message))

    def record_read(self, ack: ReadAck) -> Awaitable[str]:
        return self._submit(_ReadOp(self._loop, ack))

    async def get_message(self, message_id: str) -> StoredMessage | None:
        rows = await self._read(
            "SELECT id, digest, envelope, kind, priority, sender, recipient, thread, accepted_ms,"
            " origin, first_read_ms, first_reply_ms, handling, actor FROM messages"
            " WHERE id = ?", (message_id,)
        )
        return StoredMessage(*rows[0]) if rows else None

    async def purge_envelopes(self, before_ms: int, limit: int) -> int:
        async with self.transaction() as w:
            cursor = await w.execute(
                "UPDATE messages SET envelope = x'' WHERE mseq IN (SELECT mseq FROM messages"
                " WHERE accepted_ms < ? AND length(envelope) > 0"
                " AND id NOT IN (SELECT message_id FROM outbox) LIMIT ?)", (before_ms, limit))
            return cursor.rowcount

    async def local_sends(self, since_ms: int) -> list[tuple[str, str, int, int]]:
        # Newest first by mseq, a page at a time, until a whole page was accepted before
        # ``since_ms``: accept order is mseq order (a wall clock set back a little moves no
        # page boundary far), so a start reads about a day of rows, never the whole table.
        found: list[tuple[str, str, int, int]] = []
        below = 2**63 - 1
        while True:
            rows = await self._read(
                "SELECT m.mseq, o.id, m.sender, m.accepted_ms, length(m.envelope)"
                " FROM messages m JOIN officers o ON o.sign_key_id = m.actor"
                " WHERE m.mseq < ? AND m.origin = 'local' ORDER BY m.mseq DESC LIMIT ?",
                (below, _SENDS_PAGE))
            found += [(officer, desk, at, size) for _, officer, desk, at, size in rows
                      if at >= since_ms]
            if len(rows) < _SENDS_PAGE or max(row[3] for row in rows) < since_ms:
                break
            below = rows[-1][0]
        found.sort(key=lambda send: send[2])
        return found

    async def stored_digests(self, message_ids: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        unknown = []
        for message_id in message_ids:
            known = self._recalled(message_id)
            if known is not None:
                found[message_id] = known.digest
            else:
                unknown.append(message_id)
        for i in range(0, len(unknown), 500):
            chunk = unknown[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = await self._read(
                f"SELECT id, digest FROM messages WHERE id IN ({marks})", chunk)  # noqa: S608
            found.update((row[0], row[1]) for row in rows)
        return found

    def recent_digest(self, message_id: str) -> str | None:
        """The digest of a message committed lately, from memory (None if not known there)."""
        known = self._recalled(message_id)
        return known.digest if known is not None else None

    async def inbox(self, desk: str, after: int, limit: int) -> list[InboxItem]:
        rows = await self._read(
            "SELECT i.seq, m.id, m.digest, m.kind, m.priority, m.sender, m.recipient, m.thread,"
            " m.in_reply_to, m.created_ms, m.expires_ms, i.delivered_ms, m.first_read_ms,"
            " m.first_reply_ms, m.handling, m.case_state, m.due"
            " FROM inbox i JOIN messages m ON m.id = i.message_id"
            " WHERE i.desk = ? AND i.seq > ? ORDER BY i.seq LIMIT ?", (desk, after, limit)
        )
        return [InboxItem(*row) for row in rows]

    async def sent(self, actor: str, after: int, limit: int) -> list[SentItem]:
        # origin = 'local' lets SQLite use the partial index messages_sent_by.
        rows = await self._read(
            "SELECT m.mseq, m.id, m.kind, m.priority, m.sender, m.recipient, m.thread,"
            " m.in_reply_to, m.created_ms, m.expires_ms, m.accepted_ms, m.first_read_ms,"
            " m.first_reply_ms,"
            " coalesce((SELECT i.delivered_ms FROM inbox i WHERE i.message_id = m.id),"
            "  (SELECT r.received_ms FROM receipts r WHERE r.message_id = m.id"
            "   AND r.outcome != 'rejected')),"
            " (SELECT r.outcome FROM receipts r WHERE r.message_id = m.id),"
            " (SELECT n.reason FROM notices n WHERE n.message_id = m.id)"
            " FROM messages m WHERE m.origin = 'local' AND m.actor = ? AND m.mseq > ?"
            " ORDER BY m.mseq LIMIT ?", (actor, after, limit)
        )
        return [SentItem(*row) for row in rows]

    async def reads_of(self, message_id: str) -> list[tuple[str, int, bytes]]:
        rows = await self._read(
            "SELECT officer_id, read_ms, ack FROM reads WHERE message_id = ? ORDER BY read_ms",
            (message_id,),
        )
        return [(row[0], row[1], row[2]) for row in rows]

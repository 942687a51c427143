"""Response times and service levels: the stage times of messages, the ones overdue
for a stage, and the breaches recorded.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.store import Breach, MessageTimes
from gateway.store.sqlite.engine import _IN_CHUNK, INSERT_NOTICE, StoreEngine

_TIMES = ("m.id, m.kind, m.priority, m.sender, m.recipient, m.origin, m.accepted_ms,"
          " m.first_read_ms, m.first_reply_ms")


class ServiceLevelQueries(StoreEngine):
    """Stage times, overdue messages and breaches."""

    async def message_times(self, message_ids: Sequence[str]) -> dict[str, MessageTimes]:
        found: dict[str, MessageTimes] = {}
        ids = list(dict.fromkeys(message_ids))
        for i in range(0, len(ids), _IN_CHUNK):
            chunk = ids[i : i + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = await self._read(
                f"SELECT {_TIMES} FROM messages m WHERE m.id IN ({marks})", chunk)  # noqa: S608
            found.update({row[0]: MessageTimes(*row) for row in rows})
        return found

    async def overdue(self, stage: str, priority: str, due_before_ms: int, since_ms: int,
                      limit: int) -> list[MessageTimes]:
        if stage == "delivered":
            source = ("outbox o JOIN messages m ON m.id = o.message_id"
                      " WHERE o.queued_ms BETWEEN ? AND ?")
        elif stage == "read":
            source = ("messages m INDEXED BY messages_unread WHERE m.first_read_ms IS NULL"
                      " AND m.accepted_ms BETWEEN ? AND ?")
        elif stage == "reply":
            source = ("messages m INDEXED BY messages_unanswered WHERE m.first_reply_ms IS NULL"
                      " AND m.accepted_ms BETWEEN ? AND ?")
        else:
            raise ValueError(f"no service level for stage {stage!r}")
        rows = await self._read(
            f"SELECT {_TIMES} FROM {source} AND m.priority = ?"  # noqa: S608
            " AND m.kind IN ('hotline', 'case')"
            " AND NOT EXISTS (SELECT 1 FROM breaches b WHERE b.message_id = m.id"
            " AND b.stage = ?)"
            " AND NOT EXISTS (SELECT 1 FROM notices n WHERE n.message_id = m.id)"
            " AND NOT EXISTS (SELECT 1 FROM receipts r WHERE r.message_id = m.id"
            " AND r.outcome = 'rejected')"
            " ORDER BY m.accepted_ms LIMIT ?",
            (since_ms, due_before_ms, priority, stage, limit))
        return [MessageTimes(*row) for row in rows]

    async def record_breaches(self, breaches: Sequence[Breach]) -> list[Breach]:
        new: list[Breach] = []
        async with self.transaction() as w:
            for b in breaches:
                cursor = await w.execute(
                    "INSERT OR IGNORE INTO breaches (message_id, stage, desk, priority, due_ms,"
                    " found_ms, supervisor, notice) VALUES (?,?,?,?,?,?,?,?)",
                    (b.message_id, b.stage, b.desk, b.priority, b.due_ms, b.found_ms,
                     b.supervisor, b.notice))
                if cursor.rowcount == 1:
                    new.append(b)
                    await w.executemany(INSERT_NOTICE, [n.row() for n in b.notices])
        return new

    async def breach_counts(self) -> dict[tuple[str, str], int]:
        rows = await self._read(
            "SELECT priority, stage, COUNT(*) FROM breaches GROUP BY priority, stage")
        return {(row[0], row[1]): row[2] for row in rows}

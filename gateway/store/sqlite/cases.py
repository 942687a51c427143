"""Requests (case threads): where each stands, the ones whose due day nears or passed,
and the reminders and escalations told about them, once each."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.store import CaseRow, DeadlineNotice
from gateway.store.sqlite.engine import CASE_COLUMNS, INSERT_NOTICE, StoreEngine

_MARK = {
    "reminder": "UPDATE cases SET reminded_ms = ? WHERE thread = ? AND reminded_ms IS NULL"
                " AND due_ms = ? AND closed = 0",
    "overdue": "UPDATE cases SET escalated_ms = ? WHERE thread = ? AND escalated_ms IS NULL"
               " AND due_ms = ? AND closed = 0",
}


class CaseQueries(StoreEngine):
    """Requests, their deadlines and their counts."""

    async def case(self, thread: str) -> CaseRow | None:
        rows = await self._read(f"SELECT {CASE_COLUMNS} FROM cases WHERE thread = ?",  # noqa: S608
                                (thread,))
        return CaseRow(*rows[0]) if rows else None

    async def cases_of(self, desks: Sequence[str], *, open_only: bool, limit: int,
                       state: str | None = None, partner: str | None = None,
                       overdue_at: int | None = None) -> list[CaseRow]:
        where = []
        params: list[object] = []
        marks = ",".join("?" * len(desks))
        where.append(f"(requester IN ({marks}) OR executor IN ({marks}))")
        params.extend([*desks, *desks])
        if open_only:
            where.append("closed = 0")
        if state is not None:
            where.append("state = ?")
            params.append(state)
        if partner is not None:
            where.append("partner = ?")
            params.append(partner)
        if overdue_at is not None:
            where.append("closed = 0 AND due_ms <= ?")
            params.append(overdue_at)
        rows = await self._read(
            f"SELECT {CASE_COLUMNS} FROM cases WHERE {' AND '.join(where)}"  # noqa: S608
            " ORDER BY due_ms IS NULL, due_ms, opened_ms LIMIT ?", (*params, limit))
        return [CaseRow(*row) for row in rows]

    async def deadlines_before(self, until_ms: int, limit: int) -> list[CaseRow]:
        """Open requests due before ``until_ms`` whose reminder or escalation is still to
        be told (the open-by-due index)."""
        rows = await self._read(
            f"SELECT {CASE_COLUMNS} FROM cases INDEXED BY cases_open_by_due"  # noqa: S608
            " WHERE closed = 0 AND due_ms <= ?"
            " AND (reminded_ms IS NULL OR escalated_ms IS NULL)"
            " ORDER BY due_ms LIMIT ?", (until_ms, limit))
        return [CaseRow(*row) for row in rows]

    async def record_deadlines(self, told: Sequence[DeadlineNotice]) -> list[DeadlineNotice]:
        """Mark each reminder or escalation told and store its notices, in one
        transaction; one already told (another pass, another process), or about a request
        that closed or got a new due day meanwhile, is left out of the answer."""
        new: list[DeadlineNotice] = []
        async with self.transaction() as w:
            for d in told:
                cursor = await w.execute(_MARK[d.what], (d.at_ms, d.thread, d.due_ms))
                if cursor.rowcount == 1:
                    new.append(d)
                    await w.executemany(INSERT_NOTICE, [n.row() for n in d.notices])
        return new

    async def case_counts(self, now_ms: int) -> dict[tuple[str, str], tuple[int, int]]:
        """(partner or "", state) -> (requests, of which overdue)."""
        rows = await self._read(
            "SELECT coalesce(partner, ''), state, count(*),"
            " sum(closed = 0 AND due_ms IS NOT NULL AND due_ms <= ?)"
            " FROM cases GROUP BY 1, 2", (now_ms,))
        return {(row[0], row[1]): (row[2], row[3] or 0) for row in rows}

    async def case_pairs(self, now_ms: int) -> list[tuple[str, str, str, int, int]]:
        """(requesting gateway, executing gateway, state, requests, of which overdue)."""
        rows = await self._read(
            "SELECT substr(requester, instr(requester, '@') + 1),"
            " substr(executor, instr(executor, '@') + 1), state, count(*),"
            " sum(closed = 0 AND due_ms IS NOT NULL AND due_ms <= ?)"
            " FROM cases GROUP BY 1, 2, 3 ORDER BY 1, 2, 3", (now_ms,))
        return [(r[0], r[1], r[2], r[3], r[4] or 0) for r in rows]

"""Desks, officers and enrollment codes in the SQLite store.

These change rarely (an operator adds a desk, an officer enrolls, a binding is revoked),
so they use ordinary transactions (``SqliteStore.transaction``), not the group commit of
messages. Part of :class:`gateway.store.sqlite.SqliteStore`.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiosqlite

from gateway.errors import ConflictError, ForbiddenError, NotFoundError
from gateway.ledger.events import LedgerEvent
from gateway.protocol.history import Share
from gateway.store import AdmissionRow, DeskNotice, DeskRow, OfficerRow
from gateway.store.sqlite.engine import PHASE_DEPENDENTS, StoreEngine, _Op, _Plan


class EnrollmentError(ForbiddenError):
    """An enrollment code that is unknown, already used or expired (one answer for all,
    so the endpoint tells a guesser nothing)."""

    code = "enrollment_code_invalid"


class DeskExistsError(ConflictError):
    code = "desk_exists"


class UnknownDeskError(NotFoundError):
    code = "unknown_desk"


_NOTICE = "seq, desk, kind, officer_id, by, at_ms, message_id, detail, note"
_NOTICE_N = ", ".join(f"n.{c}" for c in _NOTICE.split(", "))
_BUMP = "UPDATE meta SET value = value + 1 WHERE key = 'directory_version'"


class _NoticesOp(_Op):
    """Membership entries appended, and their notices marked, in the same commit: after a
    crash either both happened or neither (the notice is ledgered at the next start)."""

    __slots__ = ("entries",)

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 entries: Sequence[tuple[int, LedgerEvent]]) -> None:
        super().__init__(loop)
        self.entries = entries

    def plan(self, plan: _Plan) -> None:
        seqs = []
        for notice, event in self.entries:
            seq = plan.add_event(event)
            plan.add(PHASE_DEPENDENTS, "UPDATE desk_notices SET ledger_seq = ? WHERE seq = ?",
                     (seq, notice))
            seqs.append(seq)
        self.result = tuple(seqs)


class DeskQueries(StoreEngine):
    """Desks, officers and enrollment codes.

    Every change to desks or officers also bumps ``directory_version`` in the same
    transaction, which is how a running gateway notices an operator's command.
    """

    async def add_desk(self, name: str, supervisor: str | None, now_ms: int) -> DeskRow:
        async with self.transaction() as tx:
            if supervisor is not None and not await _desk_exists(tx, supervisor):
                raise UnknownDeskError(f"supervisor desk {supervisor!r} does not exist")
            try:
                await tx.execute("INSERT INTO desks (name, supervisor, created_ms) VALUES (?,?,?)",
                                 (name, supervisor, now_ms))
            except sqlite3.IntegrityError:
                raise DeskExistsError(f"desk {name!r} already exists") from None
            await tx.execute(_BUMP)
        return DeskRow(name, supervisor, now_ms)

    async def directory_version(self) -> int:
        rows = await self._read("SELECT value FROM meta WHERE key = 'directory_version'")
        return int(rows[0][0])

    async def desks(self) -> list[DeskRow]:
        rows = await self._read("SELECT name, supervisor, created_ms FROM desks ORDER BY name")
        return [DeskRow(*row) for row in rows]

    async def officers(self) -> list[OfficerRow]:
        members: dict[str, list[str]] = {}
        for officer_id, desk in await self._read(
            "SELECT officer_id, desk FROM officer_desks ORDER BY desk"
        ):
            members.setdefault(officer_id, []).append(desk)
        admitted: dict[str, list[AdmissionRow]] = {}
        for officer_id, desk, by, at, signature in await self._read(
            "SELECT officer_id, desk, admitted_by, admitted_ms, signature FROM admissions"
            " ORDER BY desk"
        ):
            admitted.setdefault(officer_id, []).append(AdmissionRow(desk, by, at, signature))
        rows = await self._read(
            "SELECT id, sign_key, sign_key_id, enc_key, enc_key_id, binding, enrolled_ms,"
            " not_after_ms, revoked_ms FROM officers ORDER BY enrolled_ms, id"
        )
        return [
            OfficerRow(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8],
                       tuple(members.get(row[0], ())), tuple(admitted.get(row[0], ())))
            for row in rows
        ]

    async def add_enrollment_code(self, code_hash: bytes, desks: Sequence[str], now_ms: int,
                                  expires_ms: int) -> None:
        async with self.transaction() as tx:
            for desk in desks:
                if not await _desk_exists(tx, desk):
                    raise UnknownDeskError(f"desk {desk!r} does not exist")
            await tx.execute(
                "INSERT INTO enrollment_codes (code_hash, desks, created_ms, expires_ms)"
                " VALUES (?,?,?,?)", (code_hash, json.dumps(sorted(set(desks))), now_ms, expires_ms)
            )

    async def redeem_enrollment_code(
        self, code_hash: bytes, now_ms: int, make_officer: Callable[[tuple[str, ...]], OfficerRow],
        admit_first: Callable[[OfficerRow, str], AdmissionRow],
    ) -> OfficerRow:
        # A guessed code is refused on the reader, without the write lock: a transaction
        # holds that lock over several turns of the event loop, which under a flood of
        # guesses are slow, and the committer of every officer's message waited behind
        # them (sends took seconds, bench/abuse.py). The check is made again below.
        known = await self._read(
            "SELECT expires_ms, used_ms FROM enrollment_codes WHERE code_hash = ?", (code_hash,))
        if not known or known[0][1] is not None or known[0][0] <= now_ms:
            raise EnrollmentError("enrollment code unknown, already used or expired")
        async with self.transaction() as tx:
            async with tx.execute(
                "SELECT desks, expires_ms, used_ms FROM enrollment_codes WHERE code_hash = ?",
                (code_hash,),
            ) as cur:
                row = await cur.fetchone()
            if row is None or row[2] is not None or row[1] <= now_ms:
                raise EnrollmentError("enrollment code unknown, already used or expired")
            officer = make_officer(tuple(json.loads(row[0])))
            try:
                await tx.execute(
                    "INSERT INTO officers (id, sign_key, sign_key_id, enc_key, enc_key_id, binding,"
                    " enrolled_ms, not_after_ms) VALUES (?,?,?,?,?,?,?,?)",
                    (officer.id, officer.sign_key, officer.sign_key_id, officer.enc_key,
                     officer.enc_key_id, officer.binding, officer.enrolled_ms,
                     officer.not_after_ms),
                )
            except sqlite3.IntegrityError:
                raise ConflictError(
                    "these keys are already enrolled", code="keys_enrolled"
                ) from None
            await tx.executemany("INSERT INTO officer_desks (officer_id, desk) VALUES (?,?)",
                                 [(officer.id, desk) for desk in officer.desks])
            for desk in officer.desks:  # the first member of a desk: the operator admits it
                if not await _has_member(tx, desk, now_ms):
                    await _insert_admission(tx, officer.id, admit_first(officer, desk))
                    await _notice(tx, desk, "joined", officer.id, "operator", now_ms)
                else:
                    await _notice(tx, desk, "pending", officer.id, None, now_ms)
            await tx.execute("UPDATE enrollment_codes SET used_ms = ?, officer_id = ?"
                             " WHERE code_hash = ?", (now_ms, officer.id, code_hash))
            await tx.execute(_BUMP)
        return officer

    async def revoke_officer(self, officer_id: str, now_ms: int) -> bool:
        async with self.transaction() as tx:
            cur = await tx.execute(
                "UPDATE officers SET revoked_ms = ? WHERE id = ? AND revoked_ms IS NULL",
                (now_ms, officer_id),
            )
            if cur.rowcount != 1:
                return False
            async with tx.execute("SELECT desk FROM officer_desks WHERE officer_id = ?",
                                  (officer_id,)) as cur:
                desks = [row[0] for row in await cur.fetchall()]
            for desk in desks:
                await _notice(tx, desk, "left", officer_id, None, now_ms)
            await tx.execute(_BUMP)
            return True


    async def admit(self, officer_id: str, admission: AdmissionRow, now_ms: int,
                    operator: bool = False) -> None:
        async with self.transaction() as tx:
            if operator and await _has_member(tx, admission.desk, now_ms):
                raise ConflictError(f"desk {admission.desk!r} has members: one of them admits "
                                    "new officers", code="desk_has_members")
            try:
                await _insert_admission(tx, officer_id, admission)
            except sqlite3.IntegrityError:
                raise ConflictError(f"{officer_id} is already admitted to {admission.desk}",
                                    code="already_admitted") from None
            await _notice(tx, admission.desk, "joined", officer_id, admission.admitted_by,
                          now_ms)
            await tx.execute(_BUMP)

    async def add_shares(self, officer_id: str, shares: Sequence[Share]) -> int:
        async with self.transaction() as tx:
            added = 0
            for share in shares:
                cur = await tx.execute(
                    "INSERT OR IGNORE INTO history_shares (message_id, officer_id, wrap,"
                    " shared_by, shared_ms, signature) VALUES (?,?,?,?,?,?)",
                    (share.message, officer_id, share.wrap, share.by, share.at,
                     share.signature))
                added += cur.rowcount
            return added

    async def share_for(self, message_id: str, officer_id: str) -> Share | None:
        rows = await self._read("SELECT message_id, wrap, shared_by, shared_ms, signature FROM"
                                " history_shares WHERE message_id = ? AND officer_id = ?",
                                (message_id, officer_id))
        return Share(*rows[0]) if rows else None

    async def unledgered_notices(self, after: int, limit: int) -> list[DeskNotice]:
        rows = await self._read(f"SELECT {_NOTICE} FROM desk_notices"  # noqa: S608
                                " WHERE ledger_seq IS NULL AND kind IN ('joined', 'left')"
                                " AND seq > ? ORDER BY seq LIMIT ?", (after, limit))
        return [DeskNotice(*row) for row in rows]

    async def membership_entries(self, desk: str) -> dict[str, int]:
        rows = await self._read("SELECT officer_id, max(ledger_seq) FROM desk_notices"
                                " WHERE desk = ? AND kind = 'joined' AND ledger_seq IS NOT NULL"
                                " GROUP BY officer_id", (desk,))
        return {officer: int(seq) for officer, seq in rows}

    def ledger_notices(self, entries: Sequence[tuple[int, LedgerEvent]]
                       ) -> Awaitable[tuple[int, ...]]:
        return self._submit(_NoticesOp(self._loop, entries))

    async def last_desk_notice(self) -> int:
        rows = await self._read("SELECT coalesce(max(seq), 0) FROM desk_notices")
        return int(rows[0][0])

    async def desk_notices(self, desk: str | None, after: int, limit: int) -> list[DeskNotice]:
        if desk is None:
            rows = await self._read(f"SELECT {_NOTICE} FROM desk_notices"  # noqa: S608
                                    " WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit))
        else:
            rows = await self._read(f"SELECT {_NOTICE} FROM desk_notices"  # noqa: S608
                                    " WHERE desk = ? AND seq > ? ORDER BY seq LIMIT ?",
                                    (desk, after, limit))
        return [DeskNotice(*row) for row in rows]

    async def notices_for(self, desks: Sequence[str], after: int, limit: int,
                          reader: str | None = None, unread_since_ms: int | None = None
                          ) -> list[DeskNotice]:
        marks = ",".join("?" * len(desks))
        where = f"n.desk IN ({marks}) AND n.seq > ?"
        params: list[Any] = [reader, *desks, after]
        if unread_since_ms is not None:
            where += (" AND r.read_ms IS NULL AND n.at_ms >= ? AND n.seq > (SELECT value"
                      " FROM meta WHERE key = 'notices_unread_after')"
                      " AND n.officer_id IS NOT ?")
            params += [unread_since_ms, reader]
        rows = await self._read(
            f"SELECT {_NOTICE_N}, r.read_ms FROM desk_notices n"  # noqa: S608
            " LEFT JOIN notice_reads r ON r.notice = n.seq AND r.officer_id = ?"
            f" WHERE {where} ORDER BY n.seq LIMIT ?", (*params, limit))
        return [DeskNotice(*row) for row in rows]

    async def latest_notices_for(self, desks: Sequence[str], after: int, upto: int,
                                 limit: int) -> list[DeskNotice]:
        marks = ",".join("?" * len(desks))
        rows = await self._read(
            f"SELECT {_NOTICE_N}, NULL FROM desk_notices n"  # noqa: S608
            f" WHERE n.desk IN ({marks}) AND n.seq > ? AND n.seq <= ?"
            " ORDER BY n.seq DESC LIMIT ?", (*desks, after, upto, limit))
        return [DeskNotice(*row) for row in reversed(rows)]

    async def unread_notices(self, desk: str, reader: str, since_ms: int) -> int:
        rows = await self._read(
            "SELECT count(*) FROM desk_notices n WHERE n.desk = ? AND n.at_ms >= ?"
            " AND n.seq > (SELECT value FROM meta WHERE key = 'notices_unread_after')"
            " AND n.officer_id IS NOT ? AND NOT EXISTS (SELECT 1 FROM notice_reads r"
            " WHERE r.officer_id = ? AND r.notice = n.seq)", (desk, since_ms, reader, reader))
        return int(rows[0][0])

    async def mark_notices_read(self, desk: str, reader: str, cursors: Sequence[int],
                                now_ms: int) -> int:
        async with self.transaction() as tx:
            marked = 0
            for cursor in dict.fromkeys(cursors):
                cur = await tx.execute(
                    "INSERT OR IGNORE INTO notice_reads (officer_id, notice, read_ms)"
                    " SELECT ?, seq, ? FROM desk_notices WHERE seq = ? AND desk = ?",
                    (reader, now_ms, cursor, desk))
                marked += cur.rowcount
            return marked


async def _has_member(tx: aiosqlite.Connection, desk: str, now_ms: int) -> bool:
    """Whether an officer with a binding still in force is admitted to ``desk``."""
    async with tx.execute(
        "SELECT 1 FROM admissions a JOIN officers o ON o.id = a.officer_id"
        " WHERE a.desk = ? AND o.revoked_ms IS NULL AND o.not_after_ms > ? LIMIT 1",
        (desk, now_ms),
    ) as cur:
        return await cur.fetchone() is not None


async def _notice(tx: aiosqlite.Connection, desk: str, kind: str, officer_id: str,
                  by: str | None, now_ms: int) -> None:
    await tx.execute("INSERT INTO desk_notices (desk, kind, officer_id, by, at_ms)"
                     " VALUES (?,?,?,?,?)", (desk, kind, officer_id, by, now_ms))


async def _insert_admission(tx: aiosqlite.Connection, officer_id: str,
                            admission: AdmissionRow) -> None:
    await tx.execute(
        "INSERT INTO admissions (officer_id, desk, admitted_by, admitted_ms, signature)"
        " VALUES (?,?,?,?,?)",
        (officer_id, admission.desk, admission.admitted_by, admission.admitted_ms,
         admission.signature),
    )


async def _desk_exists(tx: aiosqlite.Connection, name: str) -> bool:
    async with tx.execute("SELECT 1 FROM desks WHERE name = ?", (name,)) as cur:
        return await cur.fetchone() is not None

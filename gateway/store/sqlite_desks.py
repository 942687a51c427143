"""Desks, officers and enrollment codes in the SQLite store.

These change rarely (an operator adds a desk, an officer enrolls, a binding is revoked),
so they use ordinary transactions (``SqliteStore.transaction``), not the group commit of
messages. Mixed into :class:`gateway.store.sqlite.SqliteStore`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager

import aiosqlite

from gateway.errors import ConflictError, ForbiddenError, NotFoundError
from gateway.store import DeskRow, OfficerRow


class EnrollmentError(ForbiddenError):
    """An enrollment code that is unknown, already used or expired (one answer for all,
    so the endpoint tells a guesser nothing)."""

    code = "enrollment_code_invalid"


class DeskExistsError(ConflictError):
    code = "desk_exists"


class UnknownDeskError(NotFoundError):
    code = "unknown_desk"


class DeskQueries:
    """The desk and officer half of the SQLite store."""

    _reader: aiosqlite.Connection
    transaction: Callable[[], AbstractAsyncContextManager[aiosqlite.Connection]]

    async def add_desk(self, name: str, supervisor: str | None, now_ms: int) -> DeskRow:
        async with self.transaction() as tx:
            if supervisor is not None and not await _desk_exists(tx, supervisor):
                raise UnknownDeskError(f"supervisor desk {supervisor!r} does not exist")
            try:
                await tx.execute("INSERT INTO desks (name, supervisor, created_ms) VALUES (?,?,?)",
                                 (name, supervisor, now_ms))
            except sqlite3.IntegrityError:
                raise DeskExistsError(f"desk {name!r} already exists") from None
        return DeskRow(name, supervisor, now_ms)

    async def desks(self) -> list[DeskRow]:
        async with self._reader.execute(
            "SELECT name, supervisor, created_ms FROM desks ORDER BY name"
        ) as cur:
            return [DeskRow(*row) for row in await cur.fetchall()]

    async def officers(self) -> list[OfficerRow]:
        members: dict[str, list[str]] = {}
        async with self._reader.execute(
            "SELECT officer_id, desk FROM officer_desks ORDER BY desk"
        ) as cur:
            for officer_id, desk in await cur.fetchall():
                members.setdefault(officer_id, []).append(desk)
        async with self._reader.execute(
            "SELECT id, sign_key, sign_key_id, enc_key, enc_key_id, binding, enrolled_ms,"
            " not_after_ms, revoked_ms FROM officers ORDER BY enrolled_ms, id"
        ) as cur:
            return [
                OfficerRow(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8],
                           tuple(members.get(row[0], ())))
                for row in await cur.fetchall()
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
        self, code_hash: bytes, now_ms: int, make_officer: Callable[[tuple[str, ...]], OfficerRow]
    ) -> OfficerRow:
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
            await tx.execute("UPDATE enrollment_codes SET used_ms = ?, officer_id = ?"
                             " WHERE code_hash = ?", (now_ms, officer.id, code_hash))
        return officer

    async def revoke_officer(self, officer_id: str, now_ms: int) -> bool:
        async with self.transaction() as tx:
            cur = await tx.execute(
                "UPDATE officers SET revoked_ms = ? WHERE id = ? AND revoked_ms IS NULL",
                (now_ms, officer_id),
            )
            return cur.rowcount == 1


async def _desk_exists(tx: aiosqlite.Connection, name: str) -> bool:
    async with tx.execute("SELECT 1 FROM desks WHERE name = ?", (name,)) as cur:
        return await cur.fetchone() is not None



"""What the gateway keeps about each partner: its followed key history (rotation), its
last verified directory, its newest witnessed checkpoint and the sender's retry state.

Each is one row (or a few) replaced in an ordinary transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.store import PartnerState, StoredCheckpoint
from gateway.store.sqlite.engine import StoreEngine


class PartnerQueries(StoreEngine):
    """Partner key history, directory, witnessed checkpoint and retry state."""

    async def partner_key_history(self, partner: str) -> list[bytes]:
        rows = await self._read(
            "SELECT statement FROM partner_keys WHERE partner = ? ORDER BY seq", (partner,))
        return [bytes(row[0]) for row in rows]

    async def partner_directory(self, partner: str
                                ) -> tuple[bytes, bytes, int, bytes | None] | None:
        rows = await self._read("SELECT note, signing_key, fetched_ms, descriptor"
                                " FROM partner_directories WHERE partner = ?", (partner,))
        if not rows:
            return None
        note, key, fetched_ms, descriptor = rows[0]
        return bytes(note), bytes(key), fetched_ms, \
            None if descriptor is None else bytes(descriptor)

    async def set_partner_directory(self, partner: str, note: bytes, signing_key: bytes,
                                    fetched_ms: int, descriptor: bytes) -> None:
        async with self.transaction() as w:
            await w.execute(
                "INSERT INTO partner_directories (partner, note, signing_key, fetched_ms,"
                " descriptor) VALUES (?,?,?,?,?) ON CONFLICT (partner) DO UPDATE SET"
                " note = excluded.note, signing_key = excluded.signing_key,"
                " fetched_ms = excluded.fetched_ms, descriptor = excluded.descriptor",
                (partner, note, signing_key, fetched_ms, descriptor))

    async def partner_proofs(self, partner: str, desk: str) -> bytes | None:
        rows = await self._read("SELECT answer FROM partner_proofs WHERE partner = ?"
                                " AND desk = ?", (partner, desk))
        return bytes(rows[0][0]) if rows else None

    async def set_partner_proofs(self, partner: str, desk: str, answer: bytes,
                                 fetched_ms: int) -> None:
        async with self.transaction() as w:
            await w.execute(
                "INSERT INTO partner_proofs (partner, desk, answer, fetched_ms) VALUES"
                " (?,?,?,?) ON CONFLICT (partner, desk) DO UPDATE SET answer ="
                " excluded.answer, fetched_ms = excluded.fetched_ms",
                (partner, desk, answer, fetched_ms))

    async def set_partner_key_history(self, partner: str, statements: Sequence[bytes],
                                      now_ms: int) -> None:
        async with self.transaction() as w:
            await w.execute("DELETE FROM partner_keys WHERE partner = ?", (partner,))
            await w.executemany(
                "INSERT INTO partner_keys (partner, seq, statement, learned_ms)"
                " VALUES (?,?,?,?)",
                [(partner, i, bytes(s), now_ms) for i, s in enumerate(statements)])

    async def partner_checkpoint(self, partner: str) -> StoredCheckpoint | None:
        rows = await self._read(
            "SELECT size, root, note, seen_ms FROM partner_checkpoints WHERE partner = ?",
            (partner,))
        return StoredCheckpoint(*rows[0]) if rows else None

    async def set_partner_checkpoint(self, partner: str, checkpoint: StoredCheckpoint) -> None:
        async with self.transaction() as w:
            await w.execute(
                "INSERT INTO partner_checkpoints (partner, size, root, note, seen_ms)"
                " VALUES (?,?,?,?,?) ON CONFLICT (partner) DO UPDATE SET size = excluded.size,"
                " root = excluded.root, note = excluded.note, seen_ms = excluded.seen_ms",
                (partner, checkpoint.size, checkpoint.root, checkpoint.note,
                 checkpoint.made_ms))

    async def partner_state(self, partner: str) -> PartnerState:
        rows = await self._read(
            "SELECT partner, failures, next_attempt_ms, last_contact_ms, last_error"
            " FROM partner_state WHERE partner = ?", (partner,)
        )
        return PartnerState(*rows[0]) if rows else PartnerState(partner)

    async def set_partner_state(self, state: PartnerState) -> None:
        async with self.transaction() as w:
            await w.execute(
                "INSERT INTO partner_state (partner, failures, next_attempt_ms,"
                " last_contact_ms, last_error) VALUES (?,?,?,?,?) ON CONFLICT (partner) DO"
                " UPDATE SET failures = excluded.failures, next_attempt_ms ="
                " excluded.next_attempt_ms, last_contact_ms = excluded.last_contact_ms,"
                " last_error = excluded.last_error",
                (state.partner, state.failures, state.next_attempt_ms, state.last_contact_ms,
                 state.last_error),
            )

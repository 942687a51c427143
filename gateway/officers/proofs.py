"""Membership proofs of this gateway's desks (docs/PROTOCOL.md 7.8): each member's
``admitted`` ledger entry with its inclusion proof, against a checkpoint that covers them
all, and a consistency proof from the checkpoint the asking client remembers."""

from __future__ import annotations

from typing import Any

from gateway.errors import NotFoundError
from gateway.ledger.ledger import Ledger
from gateway.officers.directory import DirectoryService
from gateway.protocol.membership import proofs_answer
from gateway.store import NoticeStore


async def membership_proofs(ledger: Ledger, notices: NoticeStore, directories: DirectoryService,
                            desk: str, known: int) -> dict[str, Any]:
    """The proofs of ``desk``'s current members; ``known``: the size of the client's last
    checkpoint (its consistency proof is left empty if the ledger is smaller)."""
    name = desk.partition("@")[0]
    directory = await directories.get()
    seqs = await notices.membership_entries(name)
    entry = directory.desk(desk)
    if entry is not None and any(m.id not in seqs for m in entry.members):
        directory = await directories.reload()  # ledgers the joins not in the ledger yet
        seqs = await notices.membership_entries(name)
        entry = directory.desk(desk)
    if entry is None:
        raise NotFoundError(f"no desk {desk[:100]!r} on this gateway", code="unknown_desk")
    proven = {m.id: seqs[m.id] for m in entry.members if m.id in seqs}
    checkpoint = await ledger.store.latest_checkpoint()
    if checkpoint is None or checkpoint.size <= max(proven.values(), default=-1):
        checkpoint = await ledger.make_checkpoint()
    rows = await ledger.store.ledger_rows_at(proven.values())
    proofs = await ledger.inclusion_proofs(list(proven.values()), checkpoint.size)
    members = [(officer, seq, rows[seq].entry, proof)
               for (officer, seq), proof in zip(proven.items(), proofs, strict=True)]
    consistency = (await ledger.consistency_proof(known, checkpoint.size)
                   if known <= checkpoint.size else [])
    return proofs_answer(desk, checkpoint.note, known, consistency, members)

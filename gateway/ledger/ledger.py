"""The verifiable ledger: roots, proofs, signed checkpoints and full verification.

Design
------
The store appends entries and keeps, with each leaf, the hashes of the complete subtrees
that leaf completes (see gateway.store.sqlite). This module only *reads* that structure:

* a root or a proof needs O(log n) stored hashes, fetched in one query, combined with
  :mod:`gateway.protocol.merkle`;
* a **checkpoint** is a C2SP signed note ``<origin>\\n<size>\\n<base64 root>\\n`` signed by the
  gateway key under the origin as key name; one is made every ``checkpoint_every``
  entries or ``checkpoint_interval`` seconds (whichever comes first, by a supervised
  task) and on demand;
* **full verification** streams every row once: it checks that positions are contiguous,
  that each entry names its own position, that its leaf hash and stored subtree hashes
  are what the bytes give, and that each signed checkpoint's root is the root of the
  entries up to its size. It names the first bad entry. The gateway runs it at start and
  refuses to serve if it fails.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from gateway.clock import Clock
from gateway.crypto.note import NoteSigner, NoteVerifier, sign_note
from gateway.errors import LedgerError, StoreError
from gateway.ledger.events import decode_entry
from gateway.protocol.checkpoint import Checkpoint, open_checkpoint
from gateway.protocol.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_path_nodes,
    inclusion_path_nodes,
    leaf_hash,
    materialize,
    needed_nodes,
    root_from_nodes,
    subtree_ranges_for_size,
)
from gateway.store import LedgerStore, StoredCheckpoint

log = structlog.get_logger("gateway.ledger.ledger")

Progress = Callable[[int, int], None]


class Ledger:
    """Read side of the ledger plus checkpoint signing, over a :class:`LedgerStore`."""

    def __init__(self, store: LedgerStore, origin: str, verifiers: Iterable[NoteVerifier],
                 signer: NoteSigner | None, clock: Clock) -> None:
        self.store = store
        self.origin = origin
        self.verifiers = list(verifiers)
        self.signer = signer
        self.clock = clock
        if signer is not None and signer.name != origin:
            raise LedgerError("checkpoints are signed under the ledger origin")
        self._signing = asyncio.Lock()  # the schedule and a membership change may overlap

    @property
    def size(self) -> int:
        return self.store.ledger_size()

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise LedgerError(f"tree size {size} is beyond the ledger ({self.size} entries)")

    async def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        self._check_size(size)
        if size == 0:
            return EMPTY_ROOT
        nodes = await self.store.ledger_nodes(subtree_ranges_for_size(size))
        return root_from_nodes(size, nodes)

    async def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        self._check_size(size)
        if not 0 <= index < size:
            raise LedgerError(f"entry {index} is not in a tree of size {size}")
        paths = inclusion_path_nodes(index, size)
        return materialize(paths, await self.store.ledger_nodes(needed_nodes(paths)))

    async def inclusion_proofs(self, indices: list[int], size: int) -> list[list[bytes]]:
        """The inclusion proofs of several entries in the tree of ``size``, from one read
        of the stored nodes they need (a desk's members, gateway.officers.proofs)."""
        self._check_size(size)
        if not all(0 <= index < size for index in indices):
            raise LedgerError(f"an entry of {indices} is not in a tree of size {size}")
        paths = [inclusion_path_nodes(index, size) for index in indices]
        nodes = await self.store.ledger_nodes(needed_nodes(p for path in paths for p in path))
        return [materialize(path, nodes) for path in paths]

    async def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        self._check_size(new_size)
        if not 0 <= old_size <= new_size:
            raise LedgerError("a consistency proof goes from a smaller to a larger tree")
        paths = consistency_path_nodes(old_size, new_size)
        return materialize(paths, await self.store.ledger_nodes(needed_nodes(paths)))

    async def make_checkpoint(self) -> StoredCheckpoint:
        """Sign and store a checkpoint of the current tree (or return the last if unchanged)."""
        if self.signer is None:
            raise LedgerError("this ledger has no signing key; cannot make checkpoints")
        async with self._signing:
            latest = await self.store.latest_checkpoint()
            size = self.size
            if latest is not None and latest.size == size:
                return latest
            root = await self.root(size)
            note = sign_note(Checkpoint(self.origin, size, root).text(), [self.signer])
            stored = StoredCheckpoint(size, root, note, self.clock.now_ms())
            await self.store.add_checkpoint(stored)
            log.info("checkpoint_made", size=size)
            return stored

    async def verify(self, progress: Progress | None = None) -> int:
        """Recompute the whole tree and check every checkpoint; return the entry count.

        Raises :class:`LedgerError` naming the first bad entry or checkpoint.
        """
        checkpoints = await self.store.checkpoints()
        rows_on_disk = await self.store.ledger_row_count()
        total = max(rows_on_disk, checkpoints[-1].size if checkpoints else 0)
        frontier = CompactRange()
        next_cp = 0
        previous_cp_size = 0
        seq = 0
        while next_cp < len(checkpoints) and checkpoints[next_cp].size == 0:
            self._check_checkpoint(checkpoints[next_cp], EMPTY_ROOT, 0)
            next_cp += 1
        async for row in self.store.ledger_rows():
            if row.seq != seq:
                raise LedgerError(f"ledger entry {seq} is missing (next stored is {row.seq})")
            try:
                doc = decode_entry(row.entry)
            except LedgerError as exc:
                raise LedgerError(f"ledger entry {seq}: {exc.message}") from None
            if doc["seq"] != seq:
                raise LedgerError(
                    f"ledger entry {seq} holds the entry of position {doc['seq']} "
                    "(rows moved or swapped)"
                )
            leaf = leaf_hash(row.entry)
            if not hmac.compare_digest(leaf, row.leaf_hash):
                raise LedgerError(f"ledger entry {seq}: its bytes do not match its leaf hash")
            completed = frontier.append(leaf)
            expected_nodes = b"".join(h for _, _, h in completed[1:])
            if not hmac.compare_digest(expected_nodes, row.nodes):
                raise LedgerError(
                    f"ledger entry {seq}: stored tree hashes do not match the entries"
                )
            seq += 1
            while next_cp < len(checkpoints) and checkpoints[next_cp].size == seq:
                self._check_checkpoint(checkpoints[next_cp], frontier.root(), previous_cp_size)
                previous_cp_size = seq
                next_cp += 1
            if progress is not None and seq % 65536 == 0:
                progress(seq, total)
        if next_cp < len(checkpoints):
            cp = checkpoints[next_cp]
            raise LedgerError(
                f"ledger entry {seq} is missing: the checkpoint at size {cp.size} covers "
                f"entries up to {cp.size - 1} but only {seq} are stored (tail cut?)"
            )
        if seq != self.size:
            raise LedgerError(
                f"ledger has {seq} entries on disk but the store counts {self.size}"
            )
        if progress is not None:
            progress(seq, total)
        return seq

    def _check_checkpoint(self, cp: StoredCheckpoint, root: bytes, previous: int) -> None:
        opened = open_checkpoint(cp.note, self.origin, self.verifiers)
        if opened.size != cp.size or not hmac.compare_digest(opened.root, cp.root):
            raise LedgerError(f"checkpoint at size {cp.size}: stored columns differ from its note")
        if not hmac.compare_digest(root, opened.root):
            first = previous
            raise LedgerError(
                f"checkpoint at size {cp.size} does not match the entries: a ledger entry "
                f"from {first} to {cp.size - 1} was altered"
            )

    async def prove_message(self, message_id: str) -> dict[str, Any]:
        """Every event of a message with its inclusion proof, against one checkpoint."""
        seqs = await self.store.events_of_message(message_id)
        if not seqs:
            raise LedgerError(f"the ledger has no event about message {message_id}")
        checkpoint = next(
            (cp for cp in reversed(await self.store.checkpoints()) if cp.size > seqs[-1]), None
        )
        if checkpoint is None:
            raise LedgerError(
                f"no checkpoint covers the events of {message_id} yet "
                "(run `gateway ledger checkpoint`)"
            )
        rows = await self.store.ledger_rows_at(seqs)
        events = []
        for seq in seqs:
            row = rows.get(seq)
            if row is None:
                raise StoreError(f"ledger entry {seq} is missing")
            proof = await self.inclusion_proof(seq, checkpoint.size)
            events.append({
                "seq": seq,
                "entry": row.entry.decode("utf-8"),
                "leaf_hash": row.leaf_hash.hex(),
                "inclusion_proof": [base64.b64encode(h).decode("ascii") for h in proof],
            })
        return {
            "message_id": message_id,
            "checkpoint": {
                "origin": self.origin,
                "size": checkpoint.size,
                "root": base64.b64encode(checkpoint.root).decode("ascii"),
                "note": checkpoint.note.decode("utf-8"),
            },
            "events": events,
        }


class CheckpointSchedule:
    """Makes a checkpoint every ``every`` entries or ``interval`` seconds, whichever first.

    Started and stopped by the application's lifecycle; the store calls :meth:`notify`
    after each commit so that a busy ledger is checkpointed by count without polling.
    """

    def __init__(self, ledger: Ledger, every: int, interval: float) -> None:
        self.ledger = ledger
        self.every = every
        self.interval = interval
        self._last_size = 0
        self._due = asyncio.Event()

    def notify(self, size: int) -> None:
        if size - self._last_size >= self.every:
            self._due.set()

    async def run(self) -> None:
        latest = await self.ledger.store.latest_checkpoint()
        self._last_size = latest.size if latest else 0
        clock = self.ledger.clock
        while True:
            timer = asyncio.ensure_future(clock.sleep(self.interval))
            due = asyncio.ensure_future(self._due.wait())
            try:
                await asyncio.wait({timer, due}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                timer.cancel()
                due.cancel()
            self._due.clear()
            if self.ledger.size > self._last_size:
                try:
                    self._last_size = (await self.ledger.make_checkpoint()).size
                except StoreError as exc:
                    log.error("checkpoint_failed", error=exc.message)
                    await clock.sleep(min(self.interval, 5.0))  # do not spin on a failure

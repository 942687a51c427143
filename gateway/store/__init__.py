"""The durable store: the one place where accepted messages and ledger entries are kept.

The rest of the gateway talks to the :class:`Store` interface below, never to SQL, so a
PostgreSQL implementation shared by several gateway processes can be added as a new
module beside :mod:`gateway.store.sqlite` without touching the callers.

Rules every implementation keeps:

* a message is *accepted* only when its row, its ledger event(s) and its inbox or outbox
  row are committed durably in one transaction; only then does the caller hear back;
* message ids are deduplicated durably: a second accept of the same envelope is answered
  ``duplicate`` and changes nothing; the same id with different bytes is a ``conflict``;
* ledger entries are append-only: their position (``seq``) is assigned at commit, and the
  Merkle tree hashes are stored with them so roots and proofs cost O(log n) reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.crypto.envelope import Envelope
from gateway.events import LedgerEvent
from gateway.merkle import NodeId

PRIORITY_RANK = {"flash": 0, "immediate": 1, "priority": 2, "routine": 3}

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
CONFLICT = "conflict"


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """A verified envelope and where it goes: one local desk's inbox or one partner."""

    envelope: Envelope
    received_ms: int
    origin: str  # "local" for this gateway's officers, else the partner gateway id
    actor: str  # key id of the signing officer
    deliver_to: str | None = None  # desk address on this gateway
    relay_to: str | None = None  # partner gateway id

    def __post_init__(self) -> None:
        if (self.deliver_to is None) == (self.relay_to is None):
            raise ValueError("a message goes to exactly one desk inbox or one partner outbox")


@dataclass(frozen=True, slots=True)
class AcceptOutcome:
    status: str  # ACCEPTED, DUPLICATE or CONFLICT
    message_id: str
    seqs: tuple[int, ...] = ()  # ledger positions of the events this accept wrote


@dataclass(frozen=True, slots=True)
class LedgerRow:
    seq: int
    entry: bytes
    leaf_hash: bytes
    nodes: bytes  # hashes of the complete subtrees this leaf completes, level 1 upwards


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    size: int
    root: bytes
    note: bytes
    made_ms: int


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: str
    digest: str
    envelope: bytes
    kind: str
    priority: str
    sender: str
    recipient: str
    accepted_ms: int
    origin: str


class Store(Protocol):
    """What the gateway needs from durable storage."""

    def accept(self, message: IncomingMessage) -> Awaitable[AcceptOutcome]:
        """Store a message with its events, or recognise it as a duplicate; durable when
        the awaitable completes."""

    def append_events(self, events: Sequence[LedgerEvent]) -> Awaitable[tuple[int, ...]]:
        """Append events to the ledger; their positions, once durable."""

    async def get_message(self, message_id: str) -> StoredMessage | None: ...

    def ledger_size(self) -> int:
        """Number of committed ledger entries."""

    async def ledger_nodes(self, ids: Iterable[NodeId]) -> dict[NodeId, bytes]:
        """Stored hashes of complete subtrees ``(level, index)`` of committed entries."""

    def ledger_rows(self, start: int = 0, batch: int = 4096) -> AsyncIterator[LedgerRow]:
        """Every ledger row from ``start`` in order (for full verification)."""

    async def ledger_row_count(self) -> int:
        """Rows on disk, counted (verification compares it with the sequence numbers)."""

    async def ledger_rows_at(self, seqs: Iterable[int]) -> dict[int, LedgerRow]: ...

    async def events_of_message(self, message_id: str) -> list[int]:
        """Ledger positions of every event about ``message_id``, in order."""

    async def add_checkpoint(self, checkpoint: StoredCheckpoint) -> None: ...

    async def checkpoints(self) -> list[StoredCheckpoint]: ...

    async def latest_checkpoint(self) -> StoredCheckpoint | None: ...

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        """A write transaction for non-message state: commits at the end, rolls back on
        error, never interleaved with message commits."""

    async def close(self) -> None: ...

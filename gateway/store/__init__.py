"""The durable store: the one place where accepted messages and ledger entries are kept.

The rest of the gateway talks to the interface below, never to SQL, so a PostgreSQL
implementation shared by several gateway processes can be added as a new module beside
:mod:`gateway.store.sqlite` without touching the callers. Each consumer sees only its own
protocol (:class:`SenderStore`, :class:`LedgerStore`, ...); :class:`Store` is their union.

Rules every implementation keeps:

* a message is *accepted* only when its row, its ledger event(s) and its inbox or outbox
  row are committed durably in one transaction; only then does the caller hear back;
* message ids are deduplicated durably: a second accept of the same envelope is answered
  ``duplicate`` and changes nothing; the same id with different bytes is a ``conflict``;
* ledger entries are append-only: their position (``seq``) is assigned at commit, and the
  Merkle tree hashes are stored with them so roots and proofs cost O(log n) reads.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.crypto.envelope import Envelope
from gateway.ledger.events import LedgerEvent
from gateway.protocol.history import Share
from gateway.protocol.merkle import NodeId

PRIORITY_RANK = {"flash": 0, "immediate": 1, "priority": 2, "routine": 3}

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
CONFLICT = "conflict"
REFUSED = "refused"  # a status move the request's lifecycle does not allow


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
    status: str  # ACCEPTED, DUPLICATE, CONFLICT or REFUSED
    message_id: str
    seqs: tuple[int, ...] = ()  # ledger positions of the events this accept wrote
    refusal: tuple[str, str] | None = None  # REFUSED: (code, message)


@dataclass(frozen=True, slots=True)
class CaseRow:
    """A request (case thread) as this gateway records it (table ``cases``)."""

    thread: str
    requester: str  # desk address
    executor: str  # desk address
    partner: str | None  # the other side's gateway; None when both desks are here
    opened_ms: int
    due: str | None  # YYYY-MM-DD
    due_ms: int | None  # the first instant it is overdue
    state: str
    state_ms: int
    last_move: str | None = None
    reminded_ms: int | None = None
    escalated_ms: int | None = None
    ignored_moves: int = 0


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
class ReadAck:
    """An officer's signed statement that a message was opened and read."""

    message_id: str
    officer_id: str
    officer_key_id: str
    # When this gateway received the acknowledgement: what the ledger, the message's
    # first read and the response-time metrics record. The time the officer signed is in
    # ``ack``, kept beside it; a client's clock is its own claim.
    read_ms: int
    ack: bytes  # the signed acknowledgement as received, kept as evidence
    # For a message that came from a partner: that partner, and the reading officer's
    # binding, so that the acknowledgement travels back to the sender's gateway.
    forward_to: str | None = None
    binding: bytes | None = None


READ_RECORDED = "recorded"
READ_DUPLICATE = "duplicate"
READ_UNKNOWN = "unknown_message"


@dataclass(frozen=True, slots=True)
class Notification:
    """Something a desk's officers should hear about at once (live stream)."""

    desk: str  # desk address
    kind: str  # "message", "read" or "reply"
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class InboxItem:
    cursor: int
    message_id: str
    digest: str
    kind: str
    priority: str
    sender: str
    recipient: str
    thread: str
    in_reply_to: str | None
    created_ms: int
    expires_ms: int
    delivered_ms: int
    first_read_ms: int | None
    first_reply_ms: int | None
    handling: str | None = None  # the optional header fields, as signed
    state: str | None = None
    due: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "cursor": self.cursor, "id": self.message_id, "digest": self.digest,
            "kind": self.kind, "priority": self.priority, "from": self.sender,
            "to": self.recipient, "thread": self.thread, "in_reply_to": self.in_reply_to,
            "created": self.created_ms, "expires": self.expires_ms,
            "delivered": self.delivered_ms, "first_read": self.first_read_ms,
            "first_reply": self.first_reply_ms, "handling": self.handling,
            "state": self.state, "due": self.due,
        }


@dataclass(frozen=True, slots=True)
class SentItem:
    """A message one officer sent, and how far it got: ``delivered`` (in a local desk's
    inbox, or taken by the partner: its signed receipt), ``read``, ``replied``,
    ``non-delivered`` (refused by the partner, or expired on the way: a signed notice),
    else ``pending`` (still queued for the partner)."""

    cursor: int
    message_id: str
    kind: str
    priority: str
    sender: str
    recipient: str
    thread: str
    in_reply_to: str | None
    created_ms: int
    expires_ms: int
    accepted_ms: int
    first_read_ms: int | None
    first_reply_ms: int | None
    delivered_ms: int | None  # into a local desk's inbox, or the partner's receipt
    receipt: str | None  # the partner's receipt outcome (accepted, duplicate, rejected)
    not_delivered: str | None  # the reason of a signed non-delivery notice

    @property
    def status(self) -> str:
        if self.first_reply_ms is not None:
            return "replied"
        if self.first_read_ms is not None:
            return "read"
        if self.not_delivered is not None or self.receipt == "rejected":
            return "non-delivered"
        if self.delivered_ms is not None:
            return "delivered"
        return "pending"

    def to_json(self) -> dict[str, Any]:
        return {
            "cursor": self.cursor, "id": self.message_id, "kind": self.kind,
            "priority": self.priority, "from": self.sender, "to": self.recipient,
            "thread": self.thread, "in_reply_to": self.in_reply_to,
            "created": self.created_ms, "expires": self.expires_ms,
            "accepted": self.accepted_ms, "delivered": self.delivered_ms,
            "first_read": self.first_read_ms, "first_reply": self.first_reply_ms,
            "status": self.status,
            "reason": self.not_delivered or (self.receipt if self.receipt == "rejected"
                                             else None),
        }


@dataclass(frozen=True, slots=True)
class DeskRow:
    name: str  # local desk name, without "@gateway"
    supervisor: str | None
    created_ms: int


@dataclass(frozen=True, slots=True)
class OfficerRow:
    id: str
    sign_key: bytes
    sign_key_id: str
    enc_key: bytes
    enc_key_id: str
    binding: bytes
    enrolled_ms: int
    not_after_ms: int
    revoked_ms: int | None
    desks: tuple[str, ...]  # local desk names its binding names
    admissions: tuple[AdmissionRow, ...] = ()  # the desks it was admitted to


MEMBERSHIP_KINDS = frozenset({"pending", "joined", "left"})
MEMBERSHIP = "membership"


@dataclass(frozen=True, slots=True)
class DeskNotice:
    """A notice stored for a desk: a change of its membership (``pending``, ``joined``,
    ``left``), a service-level ``breach`` or ``escalation``, or a non-delivery notice
    (``expired``, ``rejected``). Its ``seq`` is the cursor, one sequence for all desks."""

    seq: int
    desk: str  # local desk name
    kind: str  # pending | joined | left | breach | escalation | expired | rejected
    officer: str | None  # membership: the officer who waits, joined or left
    by: str | None  # who admitted (joined): an officer id or "operator"
    at_ms: int
    message_id: str | None = None  # breach and non-delivery: the message concerned
    detail: str | None = None  # JSON object: the fields of the stream event
    note: bytes | None = None  # the gateway-signed notice, as signed
    read_ms: int | None = None  # when the officer asking read it (listings only)

    @property
    def event(self) -> str:
        """The live stream event that tells it."""
        return MEMBERSHIP if self.kind in MEMBERSHIP_KINDS else self.kind

    def to_json(self, gateway: str) -> dict[str, Any]:
        """The notice as listed and as its stream event's data (with ``desk``)."""
        head = {"cursor": self.seq, "desk": f"{self.desk}@{gateway}", "event": self.event}
        if self.kind in MEMBERSHIP_KINDS:
            return {**head, "kind": self.kind, "officer": self.officer, "by": self.by,
                    "at": self.at_ms}
        doc: dict[str, Any] = {**head, **(json.loads(self.detail) if self.detail else {}),
                               "at": self.at_ms}
        if self.note is not None:
            doc["notice"] = base64.b64encode(self.note).decode("ascii")
        return doc


@dataclass(frozen=True, slots=True)
class NewNotice:
    """A notice to store with the state change that causes it (see DeskNotice)."""

    desk: str  # desk address (of this gateway)
    kind: str  # breach | escalation | expired | rejected
    message_id: str
    at_ms: int
    detail: dict[str, Any]
    note: bytes | None = None

    def row(self) -> tuple[Any, ...]:
        return (self.desk.partition("@")[0], self.kind, self.at_ms, self.message_id,
                json.dumps(self.detail, separators=(",", ":"), sort_keys=True), self.note)


@dataclass(frozen=True, slots=True)
class Exchanged:
    """What one gateway exchanged with a partner in a window (for reconciliation)."""

    sent: list[tuple[str, str, int, str]]  # (id, digest, accepted ms, where it stands)
    received: list[tuple[str, str, int]]  # (id, digest, accepted ms)
    truncated: bool


@dataclass(frozen=True, slots=True)
class DeadlineNotice:
    """A reminder (the due day nears) or an escalation (it passed) about one request,
    with the desk notices that tell it; recorded once (gateway.cases.deadlines)."""

    thread: str
    what: str  # "reminder" | "overdue"
    due_ms: int  # the due time it is about: a new due day makes a new one
    at_ms: int
    notices: tuple[NewNotice, ...]


@dataclass(frozen=True, slots=True)
class AdmissionRow:
    desk: str  # local desk name
    admitted_by: str  # officer id, or "operator"
    admitted_ms: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: str
    digest: str
    envelope: bytes
    kind: str
    priority: str
    sender: str
    recipient: str
    thread: str
    accepted_ms: int
    origin: str
    first_read_ms: int | None
    first_reply_ms: int | None
    handling: str | None = None  # of its signed header
    actor: str | None = None  # key id of the officer who signed it


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A message waiting to be relayed, with what the partner needs to verify it."""

    message_id: str
    digest: str
    envelope: bytes
    binding: bytes | None  # the sending officer's binding (None: officer unknown here)
    rank: int
    queued_ms: int


@dataclass(frozen=True, slots=True)
class RelayResult:
    """A verified receipt for one relayed message, to record."""

    message_id: str
    outcome: str  # accepted, duplicate or rejected
    reason: str | None
    note: bytes  # the signed receipt as received
    sent_ms: int
    received_ms: int
    actor: str  # key id of the partner gateway key that signed the receipt


@dataclass(frozen=True, slots=True)
class QueuedRead:
    """A read acknowledgement waiting to travel back to the sender's gateway."""

    seq: int
    message_id: str
    ack: bytes  # the officer's signed acknowledgement (text then signature)
    binding: bytes  # the reading officer's binding, signed by this gateway


@dataclass(frozen=True, slots=True)
class ExpiredItem:
    """A queued message whose expiry passed before the partner took it, or that the
    partner refused: what its non-delivery notice names."""

    message_id: str
    digest: str
    sender: str
    recipient: str
    expires_ms: int


@dataclass(frozen=True, slots=True)
class NonDelivery:
    """A signed non-delivery notice to record for a queued message that will not be
    delivered: it expired (``event`` ``expired``), or the partner refused it for good or
    an operator returned it (``rejected``)."""

    message_id: str
    sender: str  # the sending desk, which is told
    reason: str
    notice: bytes  # the signed notice
    time_ms: int
    actor: str  # key id of this gateway's key that signed it
    event: str = "expired"  # the ledger event written, and the desk's stream event
    note: str | None = None  # an operator's reason (returned messages): in the notice and
    # the desk's stream event, never in the ledger


@dataclass(frozen=True, slots=True)
class PartnerState:
    partner: str
    failures: int = 0
    next_attempt_ms: int = 0
    last_contact_ms: int | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """A message waiting in a partner's outbox, as operators see it: metadata only (the
    gateway holds no plaintext, and the ciphertext is not shown either)."""

    message_id: str
    partner: str
    sender: str  # the sending desk (address)
    recipient: str  # the recipient desk (address)
    kind: str
    priority: str
    size: int  # envelope bytes
    digest: str
    accepted_ms: int
    queued_ms: int
    expires_ms: int
    attempts: int  # posts to the partner that did not deliver it
    last_error: str | None


@dataclass(frozen=True, slots=True)
class QueueStats:
    partner: str
    depth: int
    oldest_queued_ms: int | None


@dataclass(frozen=True, slots=True)
class MessageTimes:
    """What response-time metrics and service levels need of a stored message."""

    id: str
    kind: str
    priority: str
    sender: str  # desk address
    recipient: str  # desk address
    origin: str  # "local" or the partner it came from
    accepted_ms: int
    first_read_ms: int | None
    first_reply_ms: int | None


@dataclass(frozen=True, slots=True)
class Breach:
    """A message that missed a service level, as recorded (gateway.service_levels.levels)."""

    message_id: str
    stage: str
    desk: str  # desk address told
    priority: str
    due_ms: int
    found_ms: int
    supervisor: str | None = None  # desk address escalated to
    notice: bytes | None = None  # the gateway-signed notice sent there
    notices: tuple[NewNotice, ...] = ()  # stored with the breach, if it is new


# --- the interface, one protocol per consumer ----------------------------------------
# Each consumer is annotated with the protocol that declares what it calls and no more,
# so a second implementation (or a test double) can be checked against one consumer at a
# time, and mypy shows which part of the gateway needs which method. A method several
# consumers call is declared in each of their protocols; its docstring is on the first.
# :class:`Store` is their union: what an implementation provides.


class SenderStore(Protocol):
    """What the federation sender (one task per partner) needs: the partner's outbox, its
    read acknowledgements to forward, and its retry state."""

    async def partner_state(self, partner: str) -> PartnerState: ...

    async def set_partner_state(self, state: PartnerState) -> None: ...

    async def outbox_batch(self, partner: str, limit: int, max_bytes: int) -> list[OutboxItem]:
        """The next messages for ``partner``: by priority rank, then first queued first;
        at most ``limit`` of them and about ``max_bytes`` of envelopes (at least one)."""

    def record_relay(self, partner: str, results: Sequence[RelayResult],
                     notices: Sequence[NonDelivery] = ()) -> Awaitable[int]:
        """Take the messages out of the partner's outbox, keep their receipts, write their
        ``relayed`` and ``receipt`` ledger events (and, for the ``notices`` of messages the
        partner rejected, what :meth:`record_expiry` writes), in one commit; how many
        receipts it recorded
        (results about messages this store does not hold are ignored)."""

    async def read_outbox_batch(self, partner: str, limit: int) -> list[QueuedRead]:
        """The oldest read acknowledgements waiting for ``partner``."""

    async def forget_reads(self, partner: str, seqs: Sequence[int]) -> None:
        """Drop read acknowledgements the partner has answered."""

    async def next_expiry(self, partner: str) -> int | None:
        """When the first message queued for ``partner`` expires (None: nothing queued)."""

    async def expired_outbox(self, partner: str, now_ms: int, limit: int) -> list[ExpiredItem]:
        """Messages queued for ``partner`` whose expiry is ``now_ms`` or earlier."""

    def record_expiry(self, partner: str, notices: Sequence[NonDelivery]) -> Awaitable[int]:
        """Take expired (or refused) messages out of the partner's outbox, keep their
        non-delivery notices, write their ``expired`` (or ``rejected``) events and tell
        their sending desks, in one commit; how many it recorded."""

    async def queued_items(self, partner: str, message_ids: Sequence[str]) -> list[ExpiredItem]:
        """Those of ``message_ids`` queued for ``partner``, with what a notice names."""

    async def note_attempts(self, partner: str, message_ids: Sequence[str], error: str) -> None:
        """Count one more undelivered post of each of ``message_ids`` (still queued for
        ``partner``) and keep ``error`` as its last error."""


class ReceiverStore(Protocol):
    """What the federation receiver needs: the batches partners relay are deduplicated,
    accepted, and their read acknowledgements recorded."""

    def accept(self, message: IncomingMessage) -> Awaitable[AcceptOutcome]:
        """Store a message with its events, or recognise it as a duplicate; durable when
        the awaitable completes."""

    def record_read(self, ack: ReadAck) -> Awaitable[str]:
        """Store a read acknowledgement and its ledger event: READ_RECORDED, or
        READ_DUPLICATE if this officer already acknowledged it, or READ_UNKNOWN."""

    async def get_message(self, message_id: str) -> StoredMessage | None: ...

    async def stored_digests(self, message_ids: Sequence[str]) -> dict[str, str]:
        """The digests of those of ``message_ids`` that are stored (one lookup for many)."""


class PartnerStore(Protocol):
    """What the partner registry (gateway.federation.partners) keeps across restarts: the
    key rotations it followed and the last directory it verified, per partner."""

    async def partner_key_history(self, partner: str) -> list[bytes]:
        """The key rotation statements followed for ``partner``, oldest first
        (gateway.protocol.rotation)."""

    async def set_partner_key_history(self, partner: str, statements: Sequence[bytes],
                                      now_ms: int) -> None:
        """Replace the partner's followed key history by ``statements``, durably."""

    async def partner_directory(self, partner: str
                                ) -> tuple[bytes, bytes, int, bytes | None] | None:
        """The partner's last verified directory note, the raw key that signed it, when
        it was fetched, and the partner's descriptor of then (None if kept before)."""

    async def set_partner_directory(self, partner: str, note: bytes, signing_key: bytes,
                                    fetched_ms: int, descriptor: bytes) -> None: ...

    async def partner_proofs(self, partner: str, desk: str) -> bytes | None:
        """The membership proofs of a partner's desk as it last answered them."""

    async def set_partner_proofs(self, partner: str, desk: str, answer: bytes,
                                 fetched_ms: int) -> None: ...


class WitnessStore(Protocol):
    """What the witness of partners' checkpoints needs."""

    async def partner_checkpoint(self, partner: str) -> StoredCheckpoint | None:
        """The newest consistent checkpoint seen from ``partner`` (witnessing)."""

    async def set_partner_checkpoint(self, partner: str, checkpoint: StoredCheckpoint) -> None:
        """Keep ``checkpoint`` as the newest seen from ``partner``."""


class DeliveryStore(Protocol):
    """What the officers' messages need (gateway.officers.delivery): accept, inbox, fetch
    with its ledger proof, read acknowledgements."""

    def accept(self, message: IncomingMessage) -> Awaitable[AcceptOutcome]: ...

    def record_read(self, ack: ReadAck) -> Awaitable[str]: ...

    async def get_message(self, message_id: str) -> StoredMessage | None: ...

    async def case(self, thread: str) -> CaseRow | None:
        """Where the request ``thread`` stands; None if it is not a request."""

    def recent_digest(self, message_id: str) -> str | None:
        """The digest of a recently committed message, from memory; None if not known."""

    async def inbox(self, desk: str, after: int, limit: int) -> list[InboxItem]:
        """A desk's inbox (desk address) in delivery order, after cursor ``after``."""

    async def sent(self, actor: str, after: int, limit: int) -> list[SentItem]:
        """The messages the officer whose signing key id is ``actor`` sent through this
        gateway, in the order accepted, after cursor ``after``."""

    async def reads_of(self, message_id: str) -> list[tuple[str, int, bytes]]:
        """(officer id, time received, signed acknowledgement) of every read
        acknowledgement of a message."""

    async def notices_of(self, message_id: str) -> list[bytes]:
        """The signed non-delivery notices of a message."""

    async def events_of_message(self, message_id: str) -> list[int]:
        """Ledger positions of every event about ``message_id``, in order."""

    async def ledger_rows_at(self, seqs: Iterable[int]) -> dict[int, LedgerRow]: ...


class DirectoryStore(Protocol):
    """What the desk directory (gateway.officers.directory) reads."""

    async def desks(self) -> list[DeskRow]: ...

    async def officers(self) -> list[OfficerRow]: ...

    async def directory_version(self) -> int:
        """A number that changes whenever desks or officers change, in any process."""


class EnrollmentStore(Protocol):
    """What an officer's enrollment (gateway.officers.enrollment) needs."""

    async def redeem_enrollment_code(
        self, code_hash: bytes, now_ms: int, make_officer: Callable[[tuple[str, ...]], OfficerRow],
        admit_first: Callable[[OfficerRow, str], AdmissionRow],
    ) -> OfficerRow:
        """Atomically use a one-time code and store the officer ``make_officer`` builds
        for the code's desks, admitted (``admit_first``) to each desk that has no member;
        raises EnrollmentError if the code is unknown, used or expired."""


class NoticeStore(Protocol):
    """What stored desk notices (gateway.officers.membership, gateway.officers.notices)
    read and mark."""

    async def desk_notices(self, desk: str | None, after: int, limit: int) -> list[DeskNotice]:
        """Notices after cursor ``after``, oldest first: of one desk (local name), or of
        every desk when ``desk`` is None."""

    async def notices_for(self, desks: Sequence[str], after: int, limit: int,
                          reader: str | None = None, unread_since_ms: int | None = None
                          ) -> list[DeskNotice]:
        """Notices of ``desks`` (local names) after ``after``, oldest first, each with
        when ``reader`` read it; with ``unread_since_ms``, only those made since then
        that ``reader`` has not read (not stored before notices were counted, and not
        about ``reader`` itself: its own join is no news to it)."""

    async def latest_notices_for(self, desks: Sequence[str], after: int, upto: int,
                                 limit: int) -> list[DeskNotice]:
        """The newest ``limit`` notices of ``desks`` (local names) with a cursor after
        ``after`` and at most ``upto``, oldest first."""

    async def unread_notices(self, desk: str, reader: str, since_ms: int) -> int:
        """How many notices of ``desk`` made since ``since_ms`` ``reader`` has not read
        (as ``notices_for`` lists them with ``unread_since_ms``)."""

    async def mark_notices_read(self, desk: str, reader: str, cursors: Sequence[int],
                                now_ms: int) -> int:
        """Mark those of ``cursors`` that are notices of ``desk`` read by ``reader``;
        how many were newly marked."""

    async def last_desk_notice(self) -> int:
        """The cursor of the newest notice (0 for none)."""

    async def unledgered_notices(self, after: int, limit: int) -> list[DeskNotice]:
        """Joins and departures after cursor ``after`` without their ledger entry yet,
        oldest first."""

    async def membership_entries(self, desk: str) -> dict[str, int]:
        """The position of each officer's ``admitted`` entry for ``desk`` (a bare desk
        name), by officer id: every officer ever admitted there whose join is ledgered."""

    def ledger_notices(self, entries: Sequence[tuple[int, LedgerEvent]]
                       ) -> Awaitable[tuple[int, ...]]:
        """Append each (notice cursor, event) to the ledger and mark the notice with its
        position, in one commit; the positions."""


class ShareStore(Protocol):
    """What history shares (gateway.officers.history) keep and give back."""

    async def add_shares(self, officer_id: str, shares: Sequence[Share]) -> int:
        """Store shares for ``officer_id`` (one per message: a later one is ignored); how
        many were new."""

    async def share_for(self, message_id: str, officer_id: str) -> Share | None: ...

    async def get_message(self, message_id: str) -> StoredMessage | None: ...


class AdmissionStore(Protocol):
    """What admitting an officer to a desk (gateway.officers.admission) needs."""

    async def admit(self, officer_id: str, admission: AdmissionRow, now_ms: int,
                    operator: bool = False) -> None:
        """Store an admission the caller checked; ConflictError (``already_admitted``) if
        there is one, (``desk_has_members``) if ``operator`` and the desk has a member."""


class OperatorStore(Protocol):
    """What the operators' commands (``gateway desk``, ``gateway officer``) change and
    list."""

    async def add_desk(self, name: str, supervisor: str | None, now_ms: int) -> DeskRow: ...

    async def add_enrollment_code(self, code_hash: bytes, desks: Sequence[str], now_ms: int,
                                  expires_ms: int) -> None: ...

    async def revoke_officer(self, officer_id: str, now_ms: int) -> bool: ...

    async def admit(self, officer_id: str, admission: AdmissionRow, now_ms: int,
                    operator: bool = False) -> None: ...

    async def desks(self) -> list[DeskRow]: ...

    async def officers(self) -> list[OfficerRow]: ...


class LedgerStore(Protocol):
    """What the ledger (gateway.ledger.ledger) reads, and the checkpoints it signs. The
    commands that open a ledger on its own (``gateway ledger verify``) close its store
    through it."""

    def ledger_size(self) -> int:
        """Number of committed ledger entries."""

    async def ledger_nodes(self, ids: Iterable[NodeId]) -> dict[NodeId, bytes]:
        """Stored hashes of complete subtrees ``(level, index)`` of committed entries."""

    def ledger_rows(self, start: int = 0, batch: int = 4096) -> AsyncIterator[LedgerRow]:
        """Every ledger row from ``start`` in order (for full verification)."""

    async def ledger_row_count(self) -> int:
        """Rows on disk, counted (verification compares it with the sequence numbers)."""

    async def ledger_rows_at(self, seqs: Iterable[int]) -> dict[int, LedgerRow]: ...

    async def events_of_message(self, message_id: str) -> list[int]: ...

    async def add_checkpoint(self, checkpoint: StoredCheckpoint) -> None: ...

    async def checkpoints(self) -> list[StoredCheckpoint]: ...

    async def latest_checkpoint(self) -> StoredCheckpoint | None: ...

    async def close(self) -> None: ...


class StagesStore(Protocol):
    """What the response-time metrics (gateway.service_levels.stages) look up."""

    async def message_times(self, message_ids: Sequence[str]) -> dict[str, MessageTimes]:
        """Kind, priority, desks, origin and stage times of the stored messages among
        ``message_ids``."""


class LevelsStore(Protocol):
    """What the service-level checker (gateway.service_levels.levels) needs."""

    async def overdue(self, stage: str, priority: str, due_before_ms: int, since_ms: int,
                      limit: int) -> list[MessageTimes]:
        """Messages of ``priority`` accepted (for ``delivered``: queued) in
        [since_ms, due_before_ms] that have not reached ``stage`` and have no breach
        recorded for it; hotlines and cases only."""

    async def record_breaches(self, breaches: Sequence[Breach]) -> list[Breach]:
        """Store new breaches; the ones already recorded are left out of the answer."""


class CaseStore(Protocol):
    """What requests' views and deadlines need (gateway.cases)."""

    async def case(self, thread: str) -> CaseRow | None: ...

    async def cases_of(self, desks: Sequence[str], *, open_only: bool, limit: int,
                       state: str | None = None, partner: str | None = None,
                       overdue_at: int | None = None) -> list[CaseRow]:
        """Requests that any of ``desks`` (addresses) made or must execute, soonest due
        first."""

    async def deadlines_before(self, until_ms: int, limit: int) -> list[CaseRow]: ...

    async def record_deadlines(self, told: Sequence[DeadlineNotice]) -> list[DeadlineNotice]: ...

    async def case_counts(self, now_ms: int) -> dict[tuple[str, str], tuple[int, int]]: ...

    async def case_pairs(self, now_ms: int) -> list[tuple[str, str, str, int, int]]: ...


class ExchangeStore(Protocol):
    """What reconciliation with a partner reads (gateway.federation.reconcile)."""

    async def exchanged(self, partner: str, since_ms: int, until_ms: int,
                        limit: int) -> Exchanged: ...


class StatusStore(Protocol):
    """What the operators' status and the metrics endpoint report (gateway.channels.admin
    and gateway.channels.metrics)."""

    async def queue_stats(self) -> dict[str, QueueStats]:
        """Outbox depth and oldest queued time of every partner with queued messages."""

    async def read_queue_depths(self) -> dict[str, int]:
        """How many read acknowledgements wait for each partner that has some."""

    async def partner_state(self, partner: str) -> PartnerState: ...

    async def partner_checkpoint(self, partner: str) -> StoredCheckpoint | None: ...

    async def breach_counts(self) -> dict[tuple[str, str], int]:
        """How many breaches were recorded, by (priority, stage)."""

    def ledger_size(self) -> int: ...

    async def latest_checkpoint(self) -> StoredCheckpoint | None: ...


class QueueStore(Protocol):
    """What operators' queue control needs (gateway.federation.queue)."""

    async def queued_messages(self, partner: str | None, limit: int) -> list[QueuedMessage]:
        """Messages queued for ``partner`` (every partner if None), in the order they are
        sent: by partner, then priority rank, then first queued first; at most ``limit``."""

    async def queued_message(self, message_id: str) -> QueuedMessage | None:
        """The message ``message_id`` if it waits in an outbox."""

    async def queued_items(self, partner: str, message_ids: Sequence[str]) -> list[ExpiredItem]:
        ...

    def record_expiry(self, partner: str, notices: Sequence[NonDelivery]) -> Awaitable[int]:
        ...


class RetentionStore(Protocol):
    """What the retention task (gateway.retention) needs."""

    async def purge_envelopes(self, before_ms: int, limit: int) -> int:
        """Empty the envelopes of up to ``limit`` messages accepted before ``before_ms``
        and not waiting for a partner; the rows, digests and ledger stay. How many."""


class QuotaStore(Protocol):
    """What the quotas (gateway.officers.quotas) need to survive a restart."""

    async def local_sends(self, since_ms: int) -> list[tuple[str, str, int, int]]:
        """(officer id, sending desk, accepted_ms, envelope bytes) of each message this
        gateway's officers sent since ``since_ms``, oldest first; without scanning
        older messages."""


class Store(SenderStore, ReceiverStore, PartnerStore, WitnessStore, DeliveryStore,
            DirectoryStore, EnrollmentStore, AdmissionStore, NoticeStore, ShareStore,
            OperatorStore,
            LedgerStore,
            StagesStore,
            LevelsStore, CaseStore, ExchangeStore, StatusStore, QueueStore, RetentionStore,
            QuotaStore, Protocol):
    """What the gateway needs from durable storage: every consumer's protocol, and what
    the application, the tests and the benchmarks use to write and to stop it."""

    def append_events(self, events: Sequence[LedgerEvent]) -> Awaitable[tuple[int, ...]]:
        """Append events to the ledger; their positions, once durable."""

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        """A write transaction for non-message state: commits at the end, rolls back on
        error, never interleaved with message commits."""

    async def close(self) -> None: ...

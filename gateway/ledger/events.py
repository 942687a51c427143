"""Ledger events and their entry encoding: what each leaf of the ledger's Merkle tree says.

Every state change of a message is one :class:`LedgerEvent`. When the store commits it,
the event gets its sequence number and becomes an *entry*: one line of canonical JSON
(sorted keys, no spaces, UTF-8), hashed as a leaf. Entries hold ids, hashes, desk and
gateway names, event type and time, nothing else: no plaintext, no names of people, no
case references (those live inside ciphertexts the gateway cannot open).

docs/PROTOCOL.md ("Ledger entries") is the normative description.
"""

from __future__ import annotations

import json
import operator
from json.encoder import encode_basestring
from typing import Any, NamedTuple

from gateway.errors import LedgerError
from gateway.protocol import jsontext
from gateway.protocol.membership import ADMITTED, DEPARTED

ENTRY_VERSION = 1

# Event types. The values are written into entries; never change one.
ACCEPTED = "accepted"  # a sender's envelope was verified and durably stored
RELAYED = "relayed"  # handed to a partner gateway
RECEIPT = "receipt"  # a partner's signed receipt for a relayed message was received
DELIVERED = "delivered"  # placed in the recipient desk's inbox
READ = "read"  # a recipient officer's signed read acknowledgement
REPLIED = "replied"  # a reply referring to this message was accepted
EXPIRED = "expired"  # expired before delivery; a non-delivery notice was issued
REJECTED = "rejected"  # refused after it had been accepted (e.g. by the partner)
FORWARDED = "forwarded"  # a forward was accepted; ``ref`` the message it embeds
HANDED_OVER = "handed_over"  # a handover receipt answering ``msg`` was accepted (``ref``)
# Membership of a desk (``msg`` is then the officer's id, ``recipient`` the desk).
# ADMITTED (an officer became a member of a desk: its signed admission) and DEPARTED (a
# member's binding was revoked) come from gateway.protocol.membership, which clients share.
CHECKPOINT = "checkpoint"  # reserved: never a leaf; checkpoints are signed notes

EVENT_TYPES = frozenset({ACCEPTED, RELAYED, RECEIPT, DELIVERED, READ, REPLIED, EXPIRED, REJECTED,
                         ADMITTED, DEPARTED, FORWARDED, HANDED_OVER})

_OPTIONAL = ("digest", "sender", "recipient", "kind", "priority", "partner", "actor", "ref",
             "outcome", "reason")


class LedgerEvent(NamedTuple):
    """One state change of one message. ``time_ms`` is Unix milliseconds.

    (A named tuple: two are built for every accepted message, on the committer's hot
    path. Values are checked when the event is encoded, which every event is.)
    """

    type: str
    message_id: str
    time_ms: int
    digest: str | None = None  # SHA-256 hex of the envelope
    sender: str | None = None  # desk address
    recipient: str | None = None  # desk address
    kind: str | None = None
    priority: str | None = None
    partner: str | None = None  # the other gateway involved, if any
    actor: str | None = None  # key id of the officer or gateway that caused it
    ref: str | None = None  # a related message id (e.g. the reply's own id)
    outcome: str | None = None  # e.g. a receipt's accepted / duplicate / rejected
    reason: str | None = None  # a stable reason code, never free text

    def encode(self, seq: int) -> bytes:
        """The entry bytes of this event at position ``seq`` (0-based).

        Canonical JSON written by hand in sorted key order: this runs for every ledger
        append, and is several times faster than ``json.dumps(sort_keys=True)``, which the
        tests check it equals.
        """
        if self.type not in EVENT_TYPES:
            raise LedgerError(f"unknown ledger event type {self.type!r}")
        if type(self.time_ms) is not int:
            raise LedgerError("ledger event time must be integer milliseconds")
        try:
            body = ",".join([
                key + encode_basestring(value)
                for key, value in zip(_SORTED_KEYS, _SORTED_VALUES(self), strict=True)
                if value is not None
            ])
        except TypeError:
            raise LedgerError("ledger event fields must be strings") from None
        return (
            f'{{{body},"seq":{seq},"t":{self.time_ms},"type":"{self.type}","v":{ENTRY_VERSION}}}'
        ).encode()

    def reference_encode(self, seq: int) -> bytes:
        """The same bytes through the JSON library (the definition ``encode`` must meet)."""
        doc: dict[str, Any] = {
            "v": ENTRY_VERSION, "seq": seq, "type": self.type, "msg": self.message_id,
            "t": self.time_ms,
        }
        for name in _OPTIONAL:
            value = getattr(self, name)
            if value is not None:
                doc[name] = value
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def decode_entry(data: bytes) -> dict[str, Any]:
    """Parse entry bytes (for audits and proofs); raises LedgerError if not an entry."""
    try:
        doc = jsontext.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise LedgerError("ledger entry is not JSON") from None
    if not isinstance(doc, dict) or doc.get("v") != ENTRY_VERSION:
        raise LedgerError("ledger entry has no known version")
    if not isinstance(doc.get("seq"), int) or doc.get("type") not in EVENT_TYPES:
        raise LedgerError("ledger entry lacks seq or type")
    return doc


# The string fields in the sorted order of their JSON keys ("seq", "t", "type" and "v" sort
# after all of them), for LedgerEvent.encode.
_SORTED_FIELDS = sorted(
    [("msg", "message_id")] + [(name, name) for name in _OPTIONAL], key=lambda pair: pair[0]
)
_SORTED_KEYS = tuple(f'"{key}":' for key, _ in _SORTED_FIELDS)
_SORTED_VALUES = operator.attrgetter(*(name for _, name in _SORTED_FIELDS))

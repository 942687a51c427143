"""Signed receipts: a receiving gateway's answer for each relayed message.

A receipt is a signed note (gateway.crypto.note) by the receiving gateway whose text is
``fpg receipt v1`` and one line of canonical JSON:

    {"digest": SHA-256 hex of the envelope, "from": sending gateway, "gateway": receiving
     gateway, "id": message id, "outcome": "accepted" | "duplicate" | "rejected",
     "reason": stable reason code or null, "time": Unix ms, "v": 1}

``accepted`` and ``duplicate`` both mean the message is durably in the recipient desk's
inbox (``duplicate``: it already was, from an earlier attempt). ``rejected`` means it never
will be, for ``reason``. The sender keeps the note as evidence and records a ledger event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gateway import jsontext
from gateway.crypto.keys import GatewaySigningKey, VerifyKey
from gateway.crypto.note import NoteSigner, NoteVerifier, note_checks, sign_note, verify_note
from gateway.crypto.worker import CryptoWorker
from gateway.errors import BadSignatureError, MalformedError

RECEIPT_LINE = "fpg receipt v1"
MAX_RECEIPT_SIZE = 4096
ACCEPTED, DUPLICATE, REJECTED = "accepted", "duplicate", "rejected"
OUTCOMES = (ACCEPTED, DUPLICATE, REJECTED)


@dataclass(frozen=True)
class Receipt:
    gateway: str  # who received (and signs)
    sender: str  # the gateway that relayed the message
    message_id: str
    digest: str
    outcome: str
    reason: str | None
    time_ms: int

    @property
    def delivered(self) -> bool:
        return self.outcome in (ACCEPTED, DUPLICATE)

    def text(self) -> str:
        body: dict[str, Any] = {
            "digest": self.digest, "from": self.sender, "gateway": self.gateway,
            "id": self.message_id, "outcome": self.outcome, "reason": self.reason,
            "time": self.time_ms, "v": 1,
        }
        return f"{RECEIPT_LINE}\n{json.dumps(body, sort_keys=True, separators=(',', ':'))}\n"

    def sign(self, key: GatewaySigningKey) -> bytes:
        return sign_note(self.text(), [NoteSigner(self.gateway, key)])


def open_receipt(note: bytes, gateway: str, keys: list[VerifyKey]) -> Receipt:
    """Verify a receipt signed by ``gateway`` with one of ``keys`` and parse it."""
    text = verify_note(note, [NoteVerifier(gateway, k) for k in keys],
                       max_size=MAX_RECEIPT_SIZE)
    return _parse(text, gateway)


async def open_receipts_on(worker: CryptoWorker, notes: list[bytes], gateway: str,
                           key: VerifyKey) -> list[Receipt]:
    """:func:`open_receipt` for a batch's receipts, all signed by ``gateway`` with ``key``,
    their signatures checked by ``worker`` in one job; raises on the first bad one."""
    verifiers = [NoteVerifier(gateway, key)]
    texts, checks = [], []
    for note in notes:
        text, needed = note_checks(note, verifiers, max_size=MAX_RECEIPT_SIZE)
        texts.append(text)
        checks.extend(needed)
    if not all(await worker.check_all(checks)):
        raise BadSignatureError("a receipt's signature does not verify")
    return [_parse(text, gateway) for text in texts]


def _parse(text: str, gateway: str) -> Receipt:
    lines = text.split("\n")
    if len(lines) != 3 or lines[0] != RECEIPT_LINE:
        raise MalformedError("not a receipt")
    try:
        doc = jsontext.loads(lines[1])
        receipt = Receipt(
            gateway=str(doc["gateway"]), sender=str(doc["from"]), message_id=str(doc["id"]),
            digest=str(doc["digest"]), outcome=str(doc["outcome"]),
            reason=None if doc["reason"] is None else str(doc["reason"]),
            time_ms=int(doc["time"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise MalformedError("receipt lacks a field or has a wrong type") from None
    if doc.get("v") != 1 or receipt.outcome not in OUTCOMES or receipt.gateway != gateway:
        raise MalformedError("receipt has a wrong version, outcome or gateway")
    if receipt.text() != text:
        raise MalformedError("receipt is not in canonical form")
    return receipt

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
import re
from dataclasses import dataclass
from typing import Any

from gateway.crypto.keys import GatewaySigningKey, VerifyKey
from gateway.crypto.note import NoteVerifier, note_checks
from gateway.crypto.worker import CryptoWorker
from gateway.errors import BadSignatureError, MalformedError
from gateway.protocol import jsontext
from gateway.protocol.signed import SignedJson

RECEIPT_LINE = "fpg receipt v1"
MAX_RECEIPT_SIZE = 4096
RECEIPT = SignedJson(RECEIPT_LINE, "receipt", MAX_RECEIPT_SIZE)
ACCEPTED, DUPLICATE, REJECTED = "accepted", "duplicate", "rejected"
OUTCOMES = (ACCEPTED, DUPLICATE, REJECTED)

# What json.dumps writes for a str (ensure_ascii): the same function, called directly.
_json_string = json.encoder.encode_basestring_ascii

# A receipt's line when each string is printable ASCII without '"' or '\\' (written as is,
# unescaped) and the time a plain decimal: parsed by this one match, not by json (see
# _parse). Any other line, canonical or not, goes the general way.
_PLAIN = r'"([\x20\x21\x23-\x5b\x5d-\x7e]*)"'
_PLAIN_LINE = re.compile(
    r'\{"digest":' + _PLAIN + ',"from":' + _PLAIN + ',"gateway":' + _PLAIN + ',"id":' + _PLAIN
    + ',"outcome":' + _PLAIN + ',"reason":(?:null|' + _PLAIN + ')'
    + r',"time":(0|-?[1-9][0-9]{0,17}),"v":1\}'
)


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
        reason = self.reason
        if (type(self.time_ms) is int and (reason is None or type(reason) is str)
                and type(self.digest) is type(self.sender) is type(self.gateway)
                is type(self.message_id) is type(self.outcome) is str):
            # Byte for byte what RECEIPT.text below (json.dumps) writes for these types.
            q = _json_string
            return (
                f'{RECEIPT_LINE}\n{{"digest":{q(self.digest)},"from":{q(self.sender)},'
                f'"gateway":{q(self.gateway)},"id":{q(self.message_id)},'
                f'"outcome":{q(self.outcome)},'
                f'"reason":{"null" if reason is None else q(reason)},'
                f'"time":{self.time_ms},"v":1}}\n'
            )
        body: dict[str, Any] = {
            "digest": self.digest, "from": self.sender, "gateway": self.gateway,
            "id": self.message_id, "outcome": self.outcome, "reason": self.reason,
            "time": self.time_ms, "v": 1,
        }
        return RECEIPT.text(body)

    def sign(self, key: GatewaySigningKey) -> bytes:
        return RECEIPT.sign(self.text(), self.gateway, key)


def open_receipt(note: bytes, gateway: str, keys: list[VerifyKey]) -> Receipt:
    """Verify a receipt signed by ``gateway`` with one of ``keys`` and parse it."""
    return _parse(RECEIPT.verify(note, gateway, keys), gateway)


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
    line = RECEIPT.line(text)
    plain = _PLAIN_LINE.fullmatch(line)
    if plain is not None:
        # Such a line is canonical JSON of exactly these values (json.loads would give the
        # same strings and int, and text() would write the line back unchanged), so this is
        # the general way's answer without its parse and re-dump.
        digest, sender, signer, message_id, outcome, reason, time_ms = plain.groups()
        if outcome not in OUTCOMES or signer != gateway:
            raise MalformedError("receipt has a wrong version, outcome or gateway")
        return Receipt(gateway=signer, sender=sender, message_id=message_id, digest=digest,
                       outcome=outcome, reason=reason, time_ms=int(time_ms))
    with RECEIPT.fields():
        doc = jsontext.loads(line)
        receipt = Receipt(
            gateway=str(doc["gateway"]), sender=str(doc["from"]), message_id=str(doc["id"]),
            digest=str(doc["digest"]), outcome=str(doc["outcome"]),
            reason=None if doc["reason"] is None else str(doc["reason"]),
            time_ms=int(doc["time"]),
        )
    if doc.get("v") != 1 or receipt.outcome not in OUTCOMES or receipt.gateway != gateway:
        raise MalformedError("receipt has a wrong version, outcome or gateway")
    RECEIPT.check_canonical(receipt.text(), text)
    return receipt

"""Checkpoints: the signed statement of a ledger's size and root (docs/PROTOCOL.md 6.2).

A C2SP tlog-checkpoint, ``<origin>\\n<size>\\n<base64 root>\\n``, signed as a note by the
gateway key under the origin. The gateway signs them (gateway.ledger); partners' witnesses
and officers' clients open them here and check proofs against them
(gateway.protocol.merkle).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.crypto.note import NoteVerifier, verify_note
from gateway.errors import CryptoError, LedgerError
from gateway.protocol.merkle import HASH_SIZE

__all__ = ["Checkpoint", "open_checkpoint", "parse_checkpoint_text"]


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode('ascii')}\n"


_SIZE = re.compile(r"0|[1-9][0-9]{0,18}", re.ASCII)


def parse_checkpoint_text(text: str) -> Checkpoint:
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise LedgerError("a checkpoint has an origin, a size and a root hash line")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if not _SIZE.fullmatch(size_text):  # ASCII digits, no leading zero, under 2^64
        raise LedgerError("checkpoint size is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except (binascii.Error, ValueError):
        raise LedgerError("checkpoint root is not base64") from None
    if len(root) != HASH_SIZE:
        raise LedgerError("checkpoint root is not a SHA-256 hash")
    return Checkpoint(origin, int(size_text), root)


def open_checkpoint(note: bytes, origin: str, verifiers: Iterable[NoteVerifier]) -> Checkpoint:
    """Verify a checkpoint note's signature, then parse it and check its origin."""
    try:
        text = verify_note(note, verifiers, max_size=64 * 1024)
    except CryptoError as exc:
        raise LedgerError(f"checkpoint signature: {exc.message}") from None
    checkpoint = parse_checkpoint_text(text)
    if checkpoint.origin != origin:
        raise LedgerError(f"checkpoint origin {checkpoint.origin!r} is not {origin!r}")
    return checkpoint

"""Signed notes (C2SP signed-note, Ed25519 type 0x01): how a gateway signs what it states.

Checkpoints, descriptors, officer bindings and receipts are all notes: a UTF-8 text ending
in a newline, a blank line, then one line per signature::

    <text ending in \\n>
    \\n
    — <key name> <base64(key id (4 bytes, big-endian) || Ed25519 signature over the text)>\\n

The key id is ``SHA-256(key name || 0x0A || 0x01 || public key)[:4]`` as c2sp.org/signed-note
recommends. The first line of the text says what kind of statement the note is (a
checkpoint's origin, ``fpg descriptor v1`` ...), so a signature made for one kind can
never be taken for another. :func:`verify_note` returns the verified text; callers parse
only that.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

from gateway.crypto.errors import BadSignatureError, MalformedError
from gateway.crypto.keys import SIGNATURE_SIZE, SigningKey, VerifyKey

SIG_TYPE_ED25519 = 0x01
DASH = "\u2014"
MAX_NOTE_SIZE = 4 * 1024 * 1024
MAX_SIGNATURES = 16

# Both checks run on every note signed or opened, so neither is a Python loop per character.
# ``\s`` in a str pattern is exactly ``str.isspace`` (both are Py_UNICODE_ISSPACE), and in
# UTF-8 (surrogates too, with "surrogatepass") a byte below 0x20 only ever encodes that same
# character; tests/test_note_fast.py checks both against the old loops on every code point.
_NAME_REFUSED = re.compile(r"[\s+]")
_TEXT_CONTROL_BYTES = bytes(c for c in range(0x20) if c != 0x0A)  # below U+0020 but "\n"


def note_key_id(name: str, key: VerifyKey) -> bytes:
    """The 4-byte key id of ``key`` under ``name``."""
    material = name.encode("utf-8") + b"\n" + bytes([SIG_TYPE_ED25519]) + key.raw
    return hashlib.sha256(material).digest()[:4]


def _check_name(name: str) -> None:
    if not name or _NAME_REFUSED.search(name):
        raise MalformedError("a note key name is non-empty, without spaces or '+'")


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise MalformedError("note text must end with a newline")
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded.translate(None, _TEXT_CONTROL_BYTES)) != len(encoded):
        raise MalformedError("note text must not contain control characters")


@dataclass(frozen=True)
class NoteSigner:
    """A gateway key together with the name it signs notes under."""

    name: str
    key: SigningKey

    def __post_init__(self) -> None:
        _check_name(self.name)

    # Computed once per signer (the fields are frozen), not once per note.
    @cached_property
    def key_id(self) -> bytes:
        return note_key_id(self.name, self.key.public)

    def signature_line(self, text: str) -> str:
        sig = self.key.sign(text.encode("utf-8"))
        return f"{DASH} {self.name} {base64.b64encode(self.key_id + sig).decode('ascii')}\n"


@dataclass(frozen=True)
class NoteVerifier:
    """A trusted public key and the name it signs under."""

    name: str
    key: VerifyKey

    def __post_init__(self) -> None:
        _check_name(self.name)

    @cached_property
    def key_id(self) -> bytes:
        return note_key_id(self.name, self.key)


def sign_note(text: str, signers: Iterable[NoteSigner]) -> bytes:
    """The signed note of ``text`` by every signer, as UTF-8 bytes."""
    _check_text(text)
    lines = [s.signature_line(text) for s in signers]
    if not lines:
        raise MalformedError("a note needs at least one signature")
    return (text + "\n" + "".join(lines)).encode("utf-8")


def cosign_note(note: bytes, signer: NoteSigner, *, max_size: int = MAX_NOTE_SIZE) -> bytes:
    """``note`` with one more signature line by ``signer`` over the same text (the
    existing signatures are kept, unverified: the caller has verified them)."""
    text, sigs = split_note(note, max_size=max_size)
    if len(sigs) >= MAX_SIGNATURES:
        raise MalformedError("note has too many signatures")
    return note + signer.signature_line(text).encode("utf-8")


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: bytes
    signature: bytes


def split_note(data: bytes, *, max_size: int = MAX_NOTE_SIZE) -> tuple[str, list[Signature]]:
    """Parse a note into its (unverified) text and signature lines."""
    if len(data) > max_size:
        raise MalformedError(f"note larger than {max_size} bytes")
    try:
        whole = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedError("note is not UTF-8") from None
    if not whole.endswith("\n"):
        raise MalformedError("note does not end with a newline")
    cut = whole.rfind("\n\n")
    if cut < 0:
        raise MalformedError("note has no blank line before its signatures")
    text, sig_block = whole[: cut + 1], whole[cut + 2 :]
    _check_text(text)
    sigs: list[Signature] = []
    for line in sig_block.split("\n")[:-1]:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != DASH:
            raise MalformedError("malformed note signature line")
        _, name, b64 = parts
        _check_name(name)
        try:
            raw = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise MalformedError("note signature is not base64") from None
        if len(raw) < 5:
            raise MalformedError("note signature too short")
        sigs.append(Signature(name, raw[:4], raw[4:]))
    if not sigs:
        raise MalformedError("note has no signature")
    if len(sigs) > MAX_SIGNATURES:
        raise MalformedError("note has too many signatures")
    return text, sigs


def verify_note(
    data: bytes, verifiers: Iterable[NoteVerifier], *, max_size: int = MAX_NOTE_SIZE
) -> str:
    """Return the note's text if a signature by one of ``verifiers`` verifies.

    As the specification requires, signatures from unknown keys are ignored, a known key
    whose signature fails rejects the note, and a note with no known signature is rejected.
    """
    text, checks = note_checks(data, verifiers, max_size=max_size)
    for key, message, signature in checks:
        key.verify(message, signature)
    return text


def note_checks(
    data: bytes, verifiers: Iterable[NoteVerifier], *, max_size: int = MAX_NOTE_SIZE
) -> tuple[str, list[tuple[VerifyKey, bytes, bytes]]]:
    """The note's text, not yet verified, and the signatures by ``verifiers`` that must
    all verify for it to be (at least one), as ``(key, message, signature)``."""
    text, sigs = split_note(data, max_size=max_size)
    known = {(v.name, v.key_id): v for v in verifiers}
    message = text.encode("utf-8")
    checks = []
    for sig in sigs:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            continue
        if len(sig.signature) != SIGNATURE_SIZE:
            raise BadSignatureError(f"signature by {sig.name} has the wrong length")
        checks.append((verifier.key, message, sig.signature))
    if not checks:
        raise BadSignatureError("note carries no signature by a trusted key")
    return text, checks

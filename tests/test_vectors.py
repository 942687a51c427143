"""docs/PROTOCOL.md's test vectors, checked in both directions."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.crypto import vectors
from gateway.crypto.envelope import open_envelope, verify_envelope
from gateway.crypto.keys import GatewaySigningKey, OfficerEncryptionKey, OfficerSigningKey
from gateway.crypto.note import NoteVerifier, verify_note

PROTOCOL = Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md"


def block() -> str:
    return vectors.extract_block(PROTOCOL.read_text("utf-8"))


def test_regenerating_gives_the_documented_bytes() -> None:
    assert vectors.render() == block()


def _code_blocks(section: str) -> list[str]:
    return re.findall(r"```\n(.*?)\n```", section, flags=re.S)


def test_documented_envelopes_verify_and_open() -> None:
    sections = block().split("### Vector ")[1:]
    assert len(sections) == len(vectors.VECTORS) + 1
    for section, vector in zip(sections, vectors.VECTORS, strict=False):
        payload_text, header_text, hex_text = _code_blocks(section)
        data = bytes.fromhex("".join(hex_text.split()))
        # Keys are derived from the labels as the document says, not taken from our objects.
        sender_label = re.search(r'signing seed: SHA-256\("([^"]+)"\)', section).group(1)
        sender = OfficerSigningKey(vectors.fixed(sender_label))
        assert sender.public.raw.hex() in section
        envelope = verify_envelope(data, sender.public)
        assert envelope.header_bytes.decode() == header_text
        labels = re.findall(r'recipient X25519 secret: SHA-256\("([^"]+)"\)', section)
        assert labels == list(vector.recipient_labels)
        for label in labels:
            assert open_envelope(envelope, OfficerEncryptionKey(vectors.fixed(label))) == (
                payload_text.encode("utf-8")
            )


def test_documented_note_verifies() -> None:
    section = block().split("### Vector ")[-1]
    (note_text,) = _code_blocks(section)
    key = GatewaySigningKey(vectors.fixed(vectors.NOTE_KEY_LABEL))
    assert verify_note((note_text + "\n").encode(), [NoteVerifier(vectors.NOTE_NAME, key.public)]) \
        == vectors.NOTE_TEXT

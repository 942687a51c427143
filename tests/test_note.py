"""Signed notes (C2SP signed-note) and descriptors."""

from __future__ import annotations

import pytest

from gateway.crypto.keys import GatewaySigningKey
from gateway.crypto.note import NoteSigner, NoteVerifier, sign_note, split_note, verify_note
from gateway.errors import BadSignatureError, CryptoError, MalformedError
from gateway.protocol.descriptor import (
    Descriptor,
    peek_descriptor,
    sign_descriptor,
    verify_descriptor,
)


def test_c2sp_published_example_parses() -> None:
    # The example note of c2sp.org/signed-note (key "quasimodo.example/salvatore").
    note = (
        "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\n"
        "ed è subito sera.\n\n"
        "— quasimodo.example/salvatore NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKON"
        "rMouFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n"
    ).encode()
    text, sigs = split_note(note)
    assert text.endswith("ed è subito sera.\n") and "\n\n" in text
    assert sigs[0].name == "quasimodo.example/salvatore" and len(sigs[0].signature) == 64


def test_sign_verify_and_unknown_keys() -> None:
    a, b = GatewaySigningKey.generate(), GatewaySigningKey.generate()
    note = sign_note("origin\n1\nroot\n", [NoteSigner("vn-mps", a)])
    assert verify_note(note, [NoteVerifier("vn-mps", a.public)]) == "origin\n1\nroot\n"
    with pytest.raises(BadSignatureError):  # no known key signed
        verify_note(note, [NoteVerifier("vn-mps", b.public)])
    with pytest.raises(BadSignatureError):  # same key under another name is another key
        verify_note(note, [NoteVerifier("kh-cnp", a.public)])
    tampered = note.replace(b"\n1\n", b"\n2\n")
    with pytest.raises(BadSignatureError):
        verify_note(tampered, [NoteVerifier("vn-mps", a.public)])


@pytest.mark.parametrize(
    "raw",
    [b"", b"text\n", b"text\n\n", b"text\n\n- name sig\n", b"a\x01\n\n\xe2\x80\x94 n AAAA\n",
     b"text\n\n\xe2\x80\x94 n !!!\n", b"\xff\n\n"],
)
def test_malformed_notes(raw: bytes) -> None:
    with pytest.raises(MalformedError):
        split_note(raw)


def test_descriptor_roundtrip_and_pinning() -> None:
    key = GatewaySigningKey.generate()
    d = Descriptor("vn-mps", "https://vn.example", key.public, "fpg/vn-mps", 1, 2)
    data = sign_descriptor(d, key)
    assert verify_descriptor(data, "vn-mps", key.public) == d
    assert peek_descriptor(data) == d
    with pytest.raises(CryptoError):
        verify_descriptor(data, "vn-mps", GatewaySigningKey.generate().public)
    with pytest.raises(CryptoError):
        verify_descriptor(data, "kh-cnp", key.public)
    with pytest.raises(MalformedError):
        sign_descriptor(d, GatewaySigningKey.generate())

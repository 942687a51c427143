"""Sealing, verifying and opening envelopes: who can open, and that every bit counts."""

from __future__ import annotations

import base64
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.crypto import envelope
from gateway.crypto.envelope import (
    MAX_RECIPIENTS,
    EnvelopeHeader,
    open_envelope,
    read_signer,
    seal_envelope,
    verify_envelope,
)
from gateway.crypto.keys import OfficerEncryptionKey, OfficerSigningKey
from gateway.errors import (
    BadSignatureError,
    CryptoError,
    MalformedError,
    NotARecipientError,
    SignerMismatchError,
)
from gateway.protocol import names
from tests.helpers import envelope_header as header


@pytest.fixture(scope="module")
def parties() -> tuple[OfficerSigningKey, list[OfficerEncryptionKey], OfficerEncryptionKey]:
    return (
        OfficerSigningKey.generate(),
        [OfficerEncryptionKey.generate() for _ in range(3)],
        OfficerEncryptionKey.generate(),
    )


PAYLOAD = "Đã tìm thấy nạn nhân — រកឃើញជនរងគ្រោះ — ພົບຜູ້ເຄາະຮ້າຍ — พบเหยื่อ — 已找到受害者".encode()


def test_three_officers_each_open_and_nobody_else(parties) -> None:
    sender, officers, outsider = parties
    data = seal_envelope(header(), PAYLOAD, sender, [k.public for k in officers])
    envelope = verify_envelope(data, sender.public)
    for officer in officers:
        assert open_envelope(envelope, officer) == PAYLOAD
    with pytest.raises(NotARecipientError):
        open_envelope(envelope, outsider)
    # Even forcing the outsider's key against each wrapped key fails to authenticate.
    for wrap in envelope.wraps:
        with pytest.raises(CryptoError):
            outsider.unwrap(wrap)


def test_verify_returns_parsed_header_and_digest(parties) -> None:
    sender, officers, _ = parties
    h = header(kind="case", priority="routine")
    data = seal_envelope(h, b"{}", sender, [officers[0].public])
    envelope = verify_envelope(data, sender.public)
    assert envelope.header == dataclasses.replace(h, recipients=(officers[0].key_id,))
    assert envelope.signer == sender.key_id == read_signer(data)
    assert len(envelope.digest) == 64 and envelope.raw == data


def test_every_single_bit_flip_is_rejected_with_a_typed_error(parties) -> None:
    sender, officers, _ = parties
    data = seal_envelope(header(), b"x" * 40, sender, [k.public for k in officers])
    env = verify_envelope(data, sender.public)
    assert len(env.wraps) == 3
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(CryptoError):
            verify_envelope(bytes(flipped), sender.public)


def test_regions_fail_for_the_right_reason(parties) -> None:
    sender, officers, _ = parties
    data = seal_envelope(header(), b"hello", sender, [k.public for k in officers])

    def flip(offset: int) -> bytes:
        b = bytearray(data)
        b[offset] ^= 0x01
        return bytes(b)

    with pytest.raises(MalformedError):  # magic
        verify_envelope(flip(0), sender.public)
    with pytest.raises(SignerMismatchError):  # signer key id
        verify_envelope(flip(6), sender.public)
    header_len = int.from_bytes(data[13:15], "big")
    for offset in (20, 15 + header_len + 10, len(data) - 100, len(data) - 1):
        with pytest.raises(BadSignatureError):  # header, wraps, ciphertext, signature
            verify_envelope(flip(offset), sender.public)


def test_wrong_key_truncation_and_extension(parties) -> None:
    sender, officers, _ = parties
    data = seal_envelope(header(), b"hello", sender, [officers[0].public])
    with pytest.raises(SignerMismatchError):
        verify_envelope(data, OfficerSigningKey.generate().public)
    for bad in (data[:-1], data + b"\0", data[:40], b"", b"FPGE"):
        with pytest.raises(CryptoError):
            verify_envelope(bad, sender.public)
    with pytest.raises(MalformedError):
        verify_envelope(data, sender.public, max_size=len(data) - 1)


def test_header_rules() -> None:
    with pytest.raises(MalformedError):
        header(kind="gossip")
    with pytest.raises(MalformedError):
        header(priority="urgent")
    with pytest.raises(MalformedError):
        header(sender="Trafficking@vn-mps")
    with pytest.raises(MalformedError):
        header(expires=1_767_225_600_000)
    with pytest.raises(MalformedError):
        header(kind="reply")  # a reply must say what it answers
    with pytest.raises(MalformedError):
        header(thread="0" * 32)  # a new thread starts at its own id
    with pytest.raises(MalformedError):
        header(created=True)
    reply = header(kind="reply", thread="a" * 32, in_reply_to="a" * 32)
    assert EnvelopeHeader.decode(reply.encode()) == reply


@pytest.mark.parametrize(
    "raw",
    [
        b"[]",
        b'{"v":1}',
        b"\xff\xfe",
        b"{" + b'"v":1,' * 2 + b"}",
    ],
)
def test_header_decode_refuses_garbage(raw: bytes) -> None:
    with pytest.raises(MalformedError):
        EnvelopeHeader.decode(raw)


def test_optional_fields_and_their_rules() -> None:
    plain = header()
    assert b"handling" not in plain.encode() and plain.extensions == frozenset()
    case = header(kind="case", due="2027-03-01", handling="H2")
    assert case.extensions == {"due", "handling"}
    assert EnvelopeHeader.decode(case.encode()) == case
    status = header(kind="status", thread="a" * 32, in_reply_to="a" * 32,
                    state="resubmitted", due="2027-04-01")
    assert EnvelopeHeader.decode(status.encode()) == status
    note = header(kind="status", thread="a" * 32, in_reply_to="a" * 32)  # no state: a note
    assert note.state is None
    with pytest.raises(MalformedError, match="only a status"):
        header(kind="reply", thread="a" * 32, in_reply_to="a" * 32, state="received")
    with pytest.raises(MalformedError, match="due is set by a case"):
        header(kind="status", thread="a" * 32, in_reply_to="a" * 32, state="received",
               due="2027-04-01")
    with pytest.raises(MalformedError, match="calendar date"):
        header(kind="case", due="2027-02-29")
    with pytest.raises(MalformedError, match="handling"):
        header(handling="h1")
    with pytest.raises(MalformedError, match="state must be"):
        header(kind="status", thread="a" * 32, in_reply_to="a" * 32, state="done")


def test_duplicate_and_unknown_header_fields_are_refused() -> None:
    good = header().encode()
    with pytest.raises(MalformedError, match="duplicate"):
        EnvelopeHeader.decode(good[:-1] + b',"v":1}')
    with pytest.raises(MalformedError, match="unknown field extra"):
        EnvelopeHeader.decode(good[:-1] + b',"extra":1}')


def test_recipient_limits(parties) -> None:
    sender, officers, _ = parties
    with pytest.raises(MalformedError):
        seal_envelope(header(), b"x", sender, [])
    with pytest.raises(MalformedError):
        seal_envelope(header(), b"x", sender, [officers[0].public] * (MAX_RECIPIENTS + 1))


@settings(max_examples=50, deadline=None)
@given(payload=st.binary(max_size=3000), n=st.integers(min_value=1, max_value=4))
def test_roundtrip_property(payload: bytes, n: int) -> None:
    sender = OfficerSigningKey.generate()
    officers = [OfficerEncryptionKey.generate() for _ in range(n)]
    envelope = verify_envelope(seal_envelope(header(), payload, sender,
                                             [k.public for k in officers]), sender.public)
    assert all(open_envelope(envelope, k) == payload for k in officers)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2000))
def test_random_bytes_never_verify(data: bytes) -> None:
    sender = OfficerSigningKey(b"\x07" * 32)
    with pytest.raises(CryptoError):
        verify_envelope(b"FPGE\x01" + sender.public.key_id_bytes + data, sender.public)


_hex32 = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)
_name = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)


@st.composite
def headers(draw: st.DrawFn) -> EnvelopeHeader:
    mid = draw(_hex32)
    reply_to = draw(st.one_of(st.none(), _hex32))
    kind = draw(st.sampled_from(["reply", "status"] if reply_to
                                else ["hotline", "case", "forward"]))
    created = draw(st.integers(min_value=0, max_value=2**52))
    state = draw(st.one_of(st.none(), st.sampled_from(envelope.CASE_STATES))) \
        if kind == "status" else None
    due = draw(st.one_of(st.none(), st.dates().map(lambda d: d.isoformat()))) \
        if kind == "case" or state == "resubmitted" else None
    return EnvelopeHeader(
        handling=draw(st.one_of(st.none(), st.sampled_from(envelope.HANDLING_CODES))),
        state=state, due=due,
        forwards=draw(_hex32) if kind == "forward" else None,
        permit=draw(st.one_of(st.none(), st.binary(min_size=64, max_size=64).map(
            lambda b: base64.b64encode(b).decode()))) if kind == "forward"
        else None,
        id=mid, kind=kind, priority=draw(st.sampled_from(["flash", "immediate", "priority",
                                                          "routine"])),
        sender=f"{draw(_name)}@{draw(_name)}", recipient=f"{draw(_name)}@{draw(_name)}",
        created=created, expires=created + draw(st.integers(min_value=1, max_value=10**9)),
        thread=draw(_hex32) if reply_to else mid, in_reply_to=reply_to,
        recipients=tuple(draw(st.lists(st.text(alphabet="0123456789abcdef", min_size=16,
                                                max_size=16), unique=True, max_size=5))),
    )


@settings(max_examples=300, deadline=None)
@given(h=headers())
def test_canonical_fast_path_agrees_with_the_json_parser(h: EnvelopeHeader) -> None:
    import json

    canonical = h.encode()
    relaxed = json.dumps(json.loads(canonical), indent=2).encode()  # forces the slow path
    assert EnvelopeHeader.decode(canonical) == EnvelopeHeader.decode(relaxed) == h


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(expires=d["created"]),
        lambda d: d.update(thread="f" * 32),
        lambda d: d.update(kind="reply"),
        lambda d: d.update(recipients=["0123456789abcdef"] * 2),
        lambda d: d.update(created=2**53 + 1, expires=2**53 + 2),
        lambda d: d.update(handling="H4"),
        lambda d: d.update(handling=None),
        lambda d: d.update(state="received"),  # on a hotline
        lambda d: d.update(due="2027-02-30"),  # on a hotline, and no such day
        lambda d: d.update(kind="case", due="2027-02-30"),
        lambda d: d.update(kind="case", due="27-02-01"),
        lambda d: d.update(kind="status", state="received"),  # a status answers something
        lambda d: d.update(kind="forward"),  # names nothing it forwards
        lambda d: d.update(forwards="a" * 32),  # on a hotline
        lambda d: d.update(kind="forward", forwards="a" * 32, permit="c2lnbmF0dXJl"),
    ],
)
def test_both_paths_refuse_rule_violations(mutate) -> None:
    import json

    doc = header().to_json()
    mutate(doc)
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    for data in (canonical, json.dumps(doc, indent=1).encode()):
        with pytest.raises(MalformedError):
            EnvelopeHeader.decode(data)


def test_envelope_addresses_spell_names_as_the_protocol_does() -> None:
    """crypto/ keeps its own copy of the name pattern (it imports nothing else of the
    gateway): the copy must be the one spelling of names."""
    assert envelope.NAME == names.NAME
    assert envelope.is_address("anti-trafficking@kh-cnp")
    assert not envelope.is_address("anti-trafficking-@kh-cnp")

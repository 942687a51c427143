"""Signed JSON notes (gateway/protocol/signed.py) and the seven documents built on them:
the same bytes as the code each document had before (known answers), each opens back to
what was signed, and a note is refused in the right order: signature, lines, JSON, fields,
canonical form."""

from __future__ import annotations

import hashlib
import json

import pytest

from gateway.crypto.keys import (
    AnchorSigningKey,
    GatewaySigningKey,
    OfficerEncryptionKey,
    OfficerSigningKey,
)
from gateway.crypto.note import NoteSigner, NoteVerifier, sign_note, split_note, verify_note
from gateway.errors import BadKeyError, BadSignatureError, MalformedError
from gateway.federation.receipts import RECEIPT, Receipt, open_receipt
from gateway.federation.roster import RosterEntry, make_roster, open_roster
from gateway.officers.directory import Desk, Directory, Officer
from gateway.protocol.descriptor import (
    Descriptor,
    peek_descriptor,
    sign_descriptor,
    verify_descriptor,
)
from gateway.protocol.notices import NOTICE_LINE, NonDeliveryNotice, open_notice
from gateway.protocol.officers import Binding, open_binding, open_directory
from gateway.protocol.signed import SignedJson, json_line
from gateway.service_levels.levels import BreachNotice, open_breach_notice

T0 = 1_767_225_600_000
DAY = 86_400_000
GW = GatewaySigningKey(b"\x11" * 32)
ANCHOR = AnchorSigningKey(b"\x22" * 32)
SIGN = OfficerSigningKey(b"\x33" * 32)
ENC = OfficerEncryptionKey(b"\x44" * 32)
MID = "01JGZ8Q0000000000000000000"
DESK = "anti-trafficking@kh-cnp"

RECEIPT_DOC = Receipt("kh-cnp", "vn-mps", MID, "ab" * 32, "accepted", None, T0)
ESCAPED = Receipt("kh-cnp", "vn-mps", MID, "ab" * 32, "rejected", 'r\u00e9fus\u00e9 "x"', T0)
NOTICE = NonDeliveryNotice("vn-mps", "kh-cnp", MID, "cd" * 32, "trafficking@vn-mps", DESK,
                           T0, "expired", T0 + 5)
BREACH = BreachNotice("kh-cnp", MID, DESK, "supervisors@kh-cnp", "hotline", "flash", "read",
                      T0, T0 + 900_000, T0 + 900_001)
BINDING = Binding("kh-cnp", "officer-1", (DESK,), SIGN.public, ENC.public, T0, T0 + DAY)
DESCRIPTOR = Descriptor("kh-cnp", "https://kh.example/fpg", GW.public, "fpg/kh-cnp", T0,
                        T0 + DAY)
ENTRY = RosterEntry("kh-cnp", "https://kh.example/fpg", GW.public.fingerprint, T0, T0 + DAY)


def directory() -> Directory:
    officer = Officer("officer-1", SIGN.public, ENC.public, frozenset({DESK}), frozenset({DESK}),
                      {}, T0, T0 + DAY, None, BINDING.sign(GW))
    desk = Desk("anti-trafficking", DESK, "supervisors@kh-cnp", (officer,),
                frozenset({ENC.public.key_id}))
    return Directory("kh-cnp", {DESK: desk}, {officer.id: officer},
                     {SIGN.public.key_id: officer}, (), T0, T0 + DAY)


def notes() -> dict[str, bytes]:
    return {
        "receipt": RECEIPT_DOC.sign(GW),
        "receipt_escaped": ESCAPED.sign(GW),
        "notice": NOTICE.sign(GW),
        "breach": BREACH.sign(GW),
        "binding": BINDING.sign(GW),
        "directory": directory().signed(GW),
        "descriptor": sign_descriptor(DESCRIPTOR, GW),
        "roster": make_roster("asean-ta", ANCHOR, [ENTRY], T0, T0 + DAY),
    }


# SHA-256 of each note as the code before gateway/protocol/signed.py signed it (commit
# 254e73b), with the same fixed keys: Ed25519 signatures are deterministic.
BEFORE = {
    "receipt": "8ac2c3168503c74d0823fe309fb1f3b9ae9f6f546cf299bddbf3045d8d159162",
    "receipt_escaped": "18e3849ce4afbab3261cda4cba22c2027eaf8c6bff9c389ba35e6dde8430873f",
    "notice": "fff07a2161a11cd8c6c6649011d19fba1f681eafb4d0a8d40d6680a65437c633",
    "breach": "aa1f1a26d4d2aadb04edd5c27617612fd0eb7bd84b69865be62d1e17b6122e49",
    "binding": "af888ae82c6d6fc02033a3029d3affd834b485a30366543b83ff67236a5d7acc",
    "directory": "9211260068f8fa564a51087a856cc3a0f8fd5e3beaed2ad41b889b448da9f794",
    "descriptor": "fb9d5ae8bce894f8df41d1dc38c736e7a558a67afc882ac2050a4312fa768760",
    "roster": "e7f67af103d472bfc77deb3da6872f3dbb1decb2b70d4f6f9dc3a2088773d92e",
}


def test_every_document_signs_the_bytes_it_signed_before() -> None:
    assert {name: hashlib.sha256(note).hexdigest() for name, note in notes().items()} == BEFORE


def test_every_document_opens_to_what_was_signed() -> None:
    n = notes()
    assert open_receipt(n["receipt"], "kh-cnp", [GW.public]) == RECEIPT_DOC
    assert open_receipt(n["receipt_escaped"], "kh-cnp", [GW.public]) == ESCAPED
    assert open_notice(n["notice"], "vn-mps", GW.public) == NOTICE
    assert open_breach_notice(n["breach"], "kh-cnp", GW.public) == BREACH
    assert open_binding(n["binding"], "kh-cnp", GW.public) == BINDING
    desks = open_directory(n["directory"], "kh-cnp", GW.public)
    assert list(desks) == [DESK] and desks[DESK].members[0]["officer"] == "officer-1"
    assert verify_descriptor(n["descriptor"], "kh-cnp", GW.public) == DESCRIPTOR
    assert peek_descriptor(n["descriptor"]) == DESCRIPTOR
    assert open_roster(n["roster"], "asean-ta", ANCHOR.public.fingerprint, T0).gateways == (
        ENTRY,)


# --- the helper -------------------------------------------------------------------------------

KIND = SignedJson("fpg example v1", "sample", 4096)


def signed(text: str, key: GatewaySigningKey = GW, name: str = "kh-cnp") -> bytes:
    return sign_note(text, [NoteSigner(name, key)])


def test_text_is_the_first_line_and_canonical_json() -> None:
    body = {"b": [1, {"z": None, "a": "\u00e9"}], "a": True}
    assert json_line(body) == '{"a":true,"b":[1,{"a":"\\u00e9","z":null}]}'
    assert KIND.text(body) == f"fpg example v1\n{json_line(body)}\n"
    assert json.loads(KIND.text(body).split("\n")[1]) == body


def test_the_signature_is_checked_before_anything_is_parsed() -> None:
    other = GatewaySigningKey.generate()
    for text in ("fpg other v1\n{}\n", "fpg example v1\n{not json\n", "fpg example v1\n{}\n"):
        with pytest.raises(BadSignatureError):
            KIND.open(signed(text, other), "kh-cnp", [GW.public])
        with pytest.raises(BadSignatureError):  # signed by the key, under another name
            KIND.open(signed(text, GW, "vn-mps"), "kh-cnp", [GW.public])


@pytest.mark.parametrize(("text", "message"), [
    ("fpg other v1\n{}\n", "not a sample"),
    ("fpg example v2\n{}\n", "not a sample"),
    ("fpg example v1\n{}\n{}\n", "not a sample"),
    ("fpg example v1\n", "not a sample"),
    ("fpg example v1\n{not json\n", "sample lacks a field or has a wrong type"),
    ("fpg example v1\n{\"a\":NaN}\n", "sample lacks a field or has a wrong type"),
    ("fpg example v1\n" + "[" * 1000 + "\n", "sample lacks a field or has a wrong type"),
])
def test_a_signed_text_that_is_not_of_the_kind_is_malformed(text: str, message: str) -> None:
    note = signed(text)
    with pytest.raises(MalformedError) as refused:
        KIND.open(note, "kh-cnp", [GW.public])
    assert refused.value.message == message
    with pytest.raises(MalformedError):
        KIND.peek(note)


def test_fields_name_the_kind_and_let_crypto_errors_through() -> None:
    text, doc = KIND.open(signed('fpg example v1\n{"a":1}\n'), "kh-cnp", [GW.public])
    assert (text, doc) == ('fpg example v1\n{"a":1}\n', {"a": 1})
    for wrong in (lambda: doc["missing"], lambda: int(doc), lambda: int("x"),
                  lambda: doc.missing):
        with pytest.raises(MalformedError, match=r"^sample lacks a field or has a wrong type$"):
            with KIND.fields():
                wrong()
    with pytest.raises(BadKeyError, match="its own reason"), KIND.fields():
        raise BadKeyError("its own reason")


def test_check_canonical() -> None:
    KIND.check_canonical('fpg example v1\n{"a":1}\n', 'fpg example v1\n{"a":1}\n')
    with pytest.raises(MalformedError, match=r"^sample is not in canonical form$"):
        KIND.check_canonical('fpg example v1\n{"a":1}\n', 'fpg example v1\n{"a": 1}\n')


def test_each_canonical_kind_refuses_another_form_of_the_same_document() -> None:
    def respaced(note: bytes) -> str:
        text, _ = split_note(note)
        first, line, _ = text.split("\n")
        return f"{first}\n{json.dumps(json.loads(line), sort_keys=True)}\n"  # with spaces

    for note, opener, what in [
        (NOTICE.sign(GW), lambda n: open_notice(n, "vn-mps", GW.public), "non-delivery notice"),
        (BREACH.sign(GW), lambda n: open_breach_notice(n, "kh-cnp", GW.public), "breach notice"),
        (ESCAPED.sign(GW), lambda n: open_receipt(n, "kh-cnp", [GW.public]), "receipt"),
    ]:
        name = "vn-mps" if what == "non-delivery notice" else "kh-cnp"
        with pytest.raises(MalformedError, match=f"^{what} is not in canonical form$"):
            opener(signed(respaced(note), name=name))


def test_the_signer_follows_the_key_and_the_name() -> None:
    a, b = GatewaySigningKey.generate(), GatewaySigningKey.generate()
    text = 'fpg example v1\n{"a":1}\n'
    for key, name in [(a, "kh-cnp"), (b, "kh-cnp"), (a, "kh-cnp"), (a, "vn-mps"), (b, "vn-mps")]:
        note = KIND.sign(text, name, key)
        assert note == signed(text, key, name)
        assert verify_note(note, [NoteVerifier(name, key.public)]) == text
    with pytest.raises(MalformedError):
        KIND.sign(text, "kh cnp", a)  # a name with a space is refused, not cached
    assert KIND.sign(text, "vn-mps", b) == signed(text, b, "vn-mps")


def test_receipts_share_the_kind_and_its_refusals() -> None:
    note = signed(f"{NOTICE_LINE}\n{json_line({'v': 1})}\n")
    with pytest.raises(MalformedError, match=r"^not a receipt$"):
        open_receipt(note, "kh-cnp", [GW.public])
    with pytest.raises(MalformedError, match=r"^not an officer binding$"):
        open_binding(note, "kh-cnp", GW.public)
    assert RECEIPT.first_line == "fpg receipt v1" and RECEIPT.max_size == 4096

"""The fast paths of gateway/crypto/note.py and gateway/federation/receipts.py against the code they
replaced, kept here as the reference: the same bytes out, the same inputs refused (with the
same exception type and message)."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import sys
from enum import IntEnum
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.crypto.keys import GatewaySigningKey, SigningKey
from gateway.crypto.note import (
    DASH,
    NoteSigner,
    NoteVerifier,
    _check_name,
    _check_text,
    note_key_id,
    sign_note,
    split_note,
    verify_note,
)
from gateway.errors import MalformedError
from gateway.federation import receipts
from gateway.federation.receipts import OUTCOMES, RECEIPT_LINE, Receipt, _parse, open_receipt
from gateway.protocol import jsontext

MANY = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))

# --- the old code, as it was ---------------------------------------------------------------


def old_check_name(name: str) -> None:
    if not name or any(ch.isspace() or ch == "+" for ch in name):
        raise MalformedError("a note key name is non-empty, without spaces or '+'")


def old_check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise MalformedError("note text must end with a newline")
    if any(ord(ch) < 0x20 and ch != "\n" for ch in text):
        raise MalformedError("note text must not contain control characters")


def old_text(r: Receipt) -> str:
    body: dict[str, Any] = {
        "digest": r.digest, "from": r.sender, "gateway": r.gateway,
        "id": r.message_id, "outcome": r.outcome, "reason": r.reason,
        "time": r.time_ms, "v": 1,
    }
    return f"{RECEIPT_LINE}\n{json.dumps(body, sort_keys=True, separators=(',', ':'))}\n"


def old_sign(r: Receipt, key: SigningKey) -> bytes:
    text = old_text(r)
    old_check_name(r.gateway)
    old_check_text(text)
    kid = hashlib.sha256(r.gateway.encode() + b"\n\x01" + key.public.raw).digest()[:4]
    sig = base64.b64encode(kid + key.sign(text.encode("utf-8"))).decode("ascii")
    return (text + "\n" + f"{DASH} {r.gateway} {sig}\n").encode("utf-8")


def old_parse(text: str, gateway: str) -> Receipt:
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
    if old_text(receipt) != text:
        raise MalformedError("receipt is not in canonical form")
    return receipt


def result(f: Any, *args: Any) -> Any:
    """What ``f(*args)`` gives: its value, or the type and message of what it raises."""
    try:
        return ("value", f(*args))
    except Exception as exc:
        return ("raised", type(exc), str(exc))


# --- characters ------------------------------------------------------------------------------

SPECIAL = (
    [chr(c) for c in range(0x00, 0x21)] + [chr(c) for c in range(0x7F, 0xA1)]
    + list("\"\\/+-{}[]:,.0123456789eE\u00ad\u1680\u180e\u2000\u200b\u2028\u2029\u202f"
           "\u205f\u3000\ufeff\ufffe\uffff\U0001f600\U0010ffff")
    + ["\ud800", "\udbff", "\udc00", "\udfff"]
)
chars = st.characters(exclude_categories=()) | st.sampled_from(SPECIAL)
texts = st.text(chars, max_size=40)


def test_every_code_point_is_judged_as_before() -> None:
    everything = [chr(c) for c in range(sys.maxunicode + 1)]
    bad_text = [ch for ch in everything if ord(ch) < 0x20 and ch != "\n"]
    bad_name = [ch for ch in everything if ch.isspace() or ch == "+"]
    assert len(bad_text) == 31 and "\x1c" in bad_name and "\u2028" in bad_name
    for ch in bad_text:
        assert result(_check_text, ch + "\n") == result(old_check_text, ch + "\n")
        assert result(_check_text, ch + "\n")[0] == "raised"
    for ch in bad_name:
        assert result(_check_name, ch) == result(old_check_name, ch)
        assert result(_check_name, "a" + ch + "b")[0] == "raised"
    # Both new checks refuse a string if any one character is refused, so one string of
    # all the other code points (surrogates included) passing shows each of them passes.
    bad_text_set, bad_name_set = set(bad_text), set(bad_name)
    _check_text("".join(ch for ch in everything if ch not in bad_text_set) + "\n")
    _check_name("".join(ch for ch in everything if ch not in bad_name_set))
    for ch in everything[:0x3100]:  # and one by one, through the first blocks
        assert result(_check_text, ch + "\n") == result(old_check_text, ch + "\n")
        assert result(_check_name, ch) == result(old_check_name, ch)


@MANY
@given(text=texts, name=texts)
def test_text_and_name_checks_are_the_old_ones(text: str, name: str) -> None:
    for t in (text, text + "\n", "fpg receipt v1\n" + text + "\n"):
        assert result(_check_text, t) == result(old_check_text, t)
    assert result(_check_name, name) == result(old_check_name, name)


def test_text_and_name_checks_on_random_strings() -> None:
    rng = random.Random(1)
    pools = [SPECIAL, [chr(c) for c in range(0x80)],
             [chr(rng.randrange(0x110000)) for _ in range(500)]]
    for _ in range(20000):
        pool = rng.choice(pools)
        s = "".join(rng.choice(pool) for _ in range(rng.randrange(12)))
        for t in (s, s + "\n"):
            assert result(_check_text, t) == result(old_check_text, t)
        assert result(_check_name, s) == result(old_check_name, s)


def test_a_note_with_a_surrogate_is_still_refused_when_signed() -> None:
    key = GatewaySigningKey.generate()
    with pytest.raises(UnicodeEncodeError):
        sign_note("a\ud800\n", [NoteSigner("gw", key)])


# --- key ids and signers ---------------------------------------------------------------------


def test_cached_key_ids_are_the_key_ids() -> None:
    a, b = GatewaySigningKey.generate(), GatewaySigningKey.generate()
    s, v = NoteSigner("vn-mps", a), NoteVerifier("vn-mps", a.public)
    assert s.key_id == v.key_id == note_key_id("vn-mps", a.public) == s.key_id
    assert NoteVerifier("vn-mps", b.public).key_id == note_key_id("vn-mps", b.public)
    assert v == NoteVerifier("vn-mps", a.public) and hash(v) == hash(NoteVerifier("vn-mps",
                                                                                  a.public))
    assert "key_id" not in repr(v)


def test_receipt_signer_follows_the_key_and_the_gateway() -> None:
    a, b = GatewaySigningKey.generate(), GatewaySigningKey.generate()
    for key, gw in [(a, "kh-cnp"), (b, "kh-cnp"), (a, "kh-cnp"), (a, "vn-mps"), (b, "vn-mps")]:
        r = Receipt(gw, "th-dsi", "m1", "ab" * 32, "accepted", None, 7)
        note = r.sign(key)
        assert note == old_sign(r, key)
        assert open_receipt(note, gw, [key.public]) == r
    for bad in ("", "kh cnp", "kh+cnp", "kh\u2028cnp"):
        r = Receipt(bad, "th-dsi", "m1", "ab" * 32, "accepted", None, 7)
        for _ in range(2):
            assert result(r.sign, a) == result(old_sign, r, a)
            assert result(r.sign, a)[0] == "raised"


# --- receipt text and signature --------------------------------------------------------------

KEY = GatewaySigningKey(bytes(range(32)))
names = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="+"),
                min_size=1, max_size=12)


class Kind(IntEnum):
    SOME = 1700000000000


class Tagged(str):
    __slots__ = ()


receipts_any = st.builds(
    Receipt, gateway=texts | names, sender=texts, message_id=texts, digest=texts,
    outcome=st.sampled_from(OUTCOMES) | texts, reason=st.none() | texts,
    time_ms=st.integers() | st.integers(-(10**60), 10**60),
)


@MANY
@given(r=receipts_any)
def test_receipt_text_is_the_old_json(r: Receipt) -> None:
    assert r.text() == old_text(r)


@pytest.mark.parametrize("r", [
    Receipt("gw", "a", "m", "d", "accepted", None, True),
    Receipt("gw", "a", "m", "d", "accepted", None, Kind.SOME),
    Receipt("gw", Tagged("a\u00e9\""), "m", "d", "accepted", Tagged("r"), 0),
    Receipt("gw", "a", "m", "d", "accepted", 5, 1),  # type: ignore[arg-type]
    Receipt("gw", "a", 12, "d", "accepted", None, 1),  # type: ignore[arg-type]
])
def test_receipt_text_of_other_types_is_the_old_json(r: Receipt) -> None:
    assert r.text() == old_text(r)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(r=receipts_any, gw=names)
def test_receipt_signature_is_the_old_bytes(r: Receipt, gw: str) -> None:
    r = Receipt(gw, r.sender, r.message_id, r.digest, r.outcome, r.reason, r.time_ms)
    assert result(r.sign, KEY) == result(old_sign, r, KEY)


# --- receipt parsing -------------------------------------------------------------------------

plain = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)
FIELDS = ["digest", "from", "gateway", "id", "outcome", "reason", "time", "v"]
ODD_VALUES = ["1.0", "1e3", "1E3", "-0", "00", "01", "-01", "+1", "true", "false", "null",
              "[]", "{}", '"1"', "[1]", '{"a":1}', "1" * 19, "9" * 30, "-" + "9" * 18,
              "Infinity", "NaN", "-Infinity", "1e400", '"\\u0061"', '"a\\/b"', '"\\""',
              '"\\\\"', '"\\ud800"', '"\u00e9"', '"\\u00e9"', '"\x7f"', '"\t"', "[" * 50]


def doc_of(r: Receipt) -> dict[str, Any]:
    return json.loads(old_text(r).split("\n")[1])


def mutated_lines(rng: random.Random, doc: dict[str, Any]) -> list[str]:
    canon = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    out = [canon, canon + " ", " " + canon, canon.replace(":", ": ", 1),
           canon.replace(",", " ,", 1), json.dumps(doc, sort_keys=True),
           json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
           canon[:-1] + ',"v":1}', canon[:-1] + ',"id":"x"}', canon[:-1] + ',"x":1}',
           "{" + canon[1:].replace('"gateway"', '"gateway":"zz","gateway"', 1),
           canon.replace('"', "'")]
    keys = list(doc)
    rng.shuffle(keys)
    out.append(json.dumps({k: doc[k] for k in keys}, separators=(",", ":")))
    short = dict(doc)
    short.pop(rng.choice(FIELDS), None)
    out.append(json.dumps(short, sort_keys=True, separators=(",", ":")))
    for field in FIELDS:  # each field's value written otherwise
        raw = rng.choice(ODD_VALUES)
        out.append(json.dumps({**doc, field: 0}, sort_keys=True, separators=(",", ":"))
                   .replace(f'"{field}":0', f'"{field}":{raw}', 1))
    for _ in range(6):  # and characters changed, added or taken out anywhere
        i = rng.randrange(len(canon) + 1)
        c = rng.choice([*SPECIAL, '"', "\\", "u", "0", "a", " "])
        out += [canon[:i] + c + canon[i:], canon[:i] + c + canon[i + 1:],
                canon[:i] + canon[i + 1:]]
    return out


def check_parse(text: str, gateway: str) -> None:
    assert result(_parse, text, gateway) == result(old_parse, text, gateway)


@MANY
@given(r=receipts_any, simple=st.builds(
    Receipt, gateway=names, sender=plain, message_id=plain, digest=plain,
    outcome=st.sampled_from(OUTCOMES) | plain, reason=st.none() | plain,
    time_ms=st.integers(-(10**20), 10**20)), seed=st.integers(0, 2**32))
def test_receipt_parse_is_the_old_parse(r: Receipt, simple: Receipt, seed: int) -> None:
    rng = random.Random(seed)
    for one in (r, simple):
        for line in mutated_lines(rng, doc_of(one)):
            for gw in (one.gateway, "kh-cnp"):
                check_parse(f"{RECEIPT_LINE}\n{line}\n", gw)
    text = old_text(simple)
    assert result(_parse, text, simple.gateway) == result(old_parse, text, simple.gateway)
    check_parse(text.rstrip("\n"), simple.gateway)
    check_parse(text + "\n", simple.gateway)
    check_parse(text.replace(RECEIPT_LINE, "fpg receipt v2"), simple.gateway)


def test_receipt_parse_on_random_lines() -> None:
    rng = random.Random(2)
    base = Receipt("kh-cnp", "vn-mps", "01J" + "0" * 23, "ab" * 32, "accepted", None,
                   1_700_000_000_000)
    for _ in range(3000):
        doc = doc_of(base)
        doc["reason"] = rng.choice([None, "ok", "id_conflict", 'q"', "\u00e9"])
        doc["time"] = rng.choice([0, -1, 10**17, 10**18 - 1, 10**18, -(10**18), 2**63])
        doc["outcome"] = rng.choice([*OUTCOMES, "bogus", ""])
        for line in mutated_lines(rng, doc):
            check_parse(f"{RECEIPT_LINE}\n{line}\n", "kh-cnp")


def test_plain_receipts_parse_fast_and_verify() -> None:
    r = Receipt("kh-cnp", "vn-mps", "01J" + "0" * 23, "ab" * 32, "rejected", "expired", 5)
    note = r.sign(KEY)
    assert receipts._PLAIN_LINE.fullmatch(r.text().split("\n")[1]) is not None
    assert open_receipt(note, "kh-cnp", [KEY.public]) == r
    text, _ = split_note(note)
    assert verify_note(note, [NoteVerifier("kh-cnp", KEY.public)]) == text == r.text()

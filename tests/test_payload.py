"""The plaintext formats officers write (validated on the client, never seen by gateways)."""

from __future__ import annotations

import pytest

from gateway.client import payload
from gateway.client.payload import PayloadError

CASE = {"type": "case", "case_ref": "KH-2026-7", "legal_basis": "reciprocity",
        "offence": "trafficking in children", "requested_actions": ["serve documents"],
        "deadline": "2027-01-15", "text": "",
        "attachments": [payload.attachment("note.txt", "text/plain", "ຂໍ້ມູນ".encode())]}


def test_round_trip_keeps_unicode() -> None:
    doc = {"type": "hotline", "text": "Nạn nhân — ជនរងគ្រោះ — ຜູ້ເຄາະຮ້າຍ — ผู้เสียหาย — 受害者"}
    assert payload.decode(payload.encode(doc, "hotline"), "hotline") == doc
    assert payload.decode(payload.encode(CASE, "case"), "case") == CASE


@pytest.mark.parametrize(
    ("kind", "doc"),
    [
        ("hotline", {"type": "hotline", "text": "   "}),
        ("hotline", {"type": "case", "text": "x"}),
        ("hotline", ["not", "an", "object"]),
        ("case", {**CASE, "legal_basis": "goodwill"}),
        ("case", {**CASE, "requested_actions": []}),
        ("case", {**CASE, "deadline": "next week"}),
        ("case", {**CASE, "attachments": [{"name": "a", "media_type": "b", "data": "!!"}]}),
        ("reply", {"type": "reply", "text": "x" * (payload.MAX_TEXT + 1)}),
    ],
)
def test_invalid_payloads_are_refused(kind: str, doc: object) -> None:
    with pytest.raises(PayloadError):
        payload.encode(doc, kind)  # type: ignore[arg-type]


def test_decode_refuses_non_json() -> None:
    with pytest.raises(PayloadError):
        payload.decode(b"\xff\xfe", "hotline")


def test_a_status_payload_says_what_its_move_needs_and_matches_its_header() -> None:
    from tests.helpers import envelope_header

    move = {"type": "status", "state": "returned_incomplete", "missing": ["translation"]}
    assert payload.decode(payload.encode(move, "status"), "status") == move
    for bad in ({**move, "missing": []}, {"type": "status", "state": "refused"},
                {"type": "status", "state": "done"}, {**move, "missing": [""]}):
        with pytest.raises(PayloadError):
            payload.validate(bad, "status")
    header = envelope_header(kind="status", thread="a" * 32, in_reply_to="a" * 32,
                             state="returned_incomplete")
    payload.check_header(move, header)
    with pytest.raises(PayloadError, match="sealed state differs"):
        payload.check_header({**move, "state": "executed"}, header)
    case = envelope_header(kind="case", due="2027-01-15")
    payload.check_header(CASE, case)
    with pytest.raises(PayloadError, match="sealed deadline differs"):
        payload.check_header({**CASE, "deadline": "2027-01-16"}, case)

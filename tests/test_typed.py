"""Typed hotline alerts and requests: every rule of their fields, and every alert type and
request type sent both ways between two real gateways, opened, and answered."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.client import payload, typed
from gateway.client.api import ApiError, GatewayClient, OpenedMessage
from gateway.client.payload import PayloadError
from gateway.errors import ClientError
from tests.helpers import (
    desk_known,
    has_message,
    make,
    officers,
    pin,
    started,
    stop_all,
    until,
)

VICTIM = {"role": "victim", "age_band": "12-15", "child": True, "nationality": "VN",
          "documents": [{"type": "passport", "number": "C1234567", "issuer": "VN"}]}
ALERT = {"type": "hotline", "text": "Located at the gate", "alert_type": "located_victim",
         "place": "Mộc Bài", "border_gate": "Bavet", "time": "2026-12-06T14:30+07:00",
         "persons": [VICTIM, {"role": "suspect", "age_band": "25-39", "child": False}],
         "documents": [{"type": "id_card", "number": "079123"}]}
REQUEST = {"type": "case", "case_ref": "VN-MLA-1", "legal_basis": "treaty",
           "offence": "trafficking in persons", "requested_actions": ["hear a witness"],
           "deadline": "2027-03-31", "text": "", "request_type": "summon_witness",
           "requesting_authority": "Supreme People's Procuracy of Viet Nam",
           "executing_authority": "Office of the Attorney General, Lao PDR",
           "treaty": "ASEAN MLAT 2004", "languages": ["vi", "lo"],
           "attachments": [payload.attachment("yeu-cau.pdf", "application/pdf", b"%PDF-1"),
                           payload.attachment("request-lo.pdf", "application/pdf", b"%PDF-2")],
           "translations": [{"attachment": 1, "language": "lo"}]}


def test_typed_fields_round_trip() -> None:
    for doc, kind in ((ALERT, "hotline"), (REQUEST, "case")):
        assert payload.decode(payload.encode(doc, kind), kind) == doc


@pytest.mark.parametrize(("kind", "change"), [
    ("hotline", {"alert_type": "rumour"}),
    ("hotline", {"place": ""}),
    ("hotline", {"time": "yesterday"}),
    ("hotline", {"time": "2026-12-06T14:30"}),  # no offset: whose 14:30?
    ("hotline", {"persons": [{**VICTIM, "child": False}]}),  # 12-15 is a child
    ("hotline", {"persons": [{**VICTIM, "role": "bystander"}]}),
    ("hotline", {"persons": [{**VICTIM, "age_band": "13"}]}),
    ("hotline", {"persons": [{**VICTIM, "child": "yes"}]}),
    ("hotline", {"persons": [{**VICTIM, "address": "x"}]}),  # no such field
    ("hotline", {"persons": [VICTIM] * (typed.MAX_PERSONS + 1)}),
    ("hotline", {"documents": [{"type": "visa"}]}),
    ("hotline", {"documents": [{"type": "passport", "number": "x" * 101}]}),
    ("case", {"request_type": "favour"}),
    ("case", {"languages": []}),
    ("case", {"languages": ["Vietnamese"]}),
    ("case", {"translations": [{"attachment": 2, "language": "lo"}]}),
    ("case", {"translations": [{"attachment": True, "language": "lo"}]}),
    ("case", {"translations": [{"attachment": 0}]}),
    ("case", {"executing_authority": "x" * 501}),
])
def test_each_typed_field_is_checked(kind: str, change: dict[str, Any]) -> None:
    base = ALERT if kind == "hotline" else REQUEST
    with pytest.raises(PayloadError):
        payload.validate({**base, **change}, kind)


def test_people_and_documents_from_the_command_line() -> None:
    assert typed.person_from("role=victim,age=12-15,nationality=VN") == {
        "role": "victim", "age_band": "12-15", "child": True, "nationality": "VN"}
    assert typed.person_from("role=missing,child=yes")["age_band"] == "unknown"
    assert typed.document_from("type=passport,number=C1,issuer=KH") == {
        "type": "passport", "number": "C1", "issuer": "KH"}
    for bad in ("role=victim,age=12-15,child=no", "role=victim,hair=dark", "victim",
                "role=victim,role=suspect", "role=victim,child=maybe"):
        with pytest.raises(PayloadError):
            typed.person_from(bad)
    with pytest.raises(PayloadError):
        typed.document_from("type=visa")


async def _read_and_answer(reader: GatewayClient, mid: str) -> dict[str, Any]:
    opened = await reader.open(mid)
    await reader.acknowledge(opened)
    await reader.reply(opened, {"type": "reply", "text": f"received {mid[:6]}"})
    return opened.payload


async def test_every_alert_and_request_type_both_ways_with_a_reply(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    vn, kh = make(tmp_path, "vn-mps"), make(tmp_path, "kh-cnp")
    pin(vn, kh)
    await started(vn, kh)
    try:
        a, k = await officers(vn, kh, http)
        await desk_known(k, "border-liaison@vn-mps")
        ends = ((a, "anti-trafficking@kh-cnp", k), (k, "border-liaison@vn-mps", a))
        sent: list[tuple[GatewayClient, GatewayClient, str, dict[str, Any]]] = []
        for sender, to, reader in ends:
            for alert_type in typed.ALERT_TYPES:
                doc = {**ALERT, "alert_type": alert_type}
                result = await sender.send("hotline", to, doc, priority="flash")
                sent.append((sender, reader, result["id"], doc))
            for request_type in typed.REQUEST_TYPES:
                doc = {**REQUEST, "request_type": request_type}
                result = await sender.send("case", to, doc, priority="priority")
                sent.append((sender, reader, result["id"], doc))
        assert len(sent) == 2 * (len(typed.ALERT_TYPES) + len(typed.REQUEST_TYPES))
        for _, reader, mid, doc in sent:
            await until(lambda r=reader, m=mid: has_message(r, m), f"message {mid} delivered")
            assert await _read_and_answer(reader, mid) == doc
        for sender, _, mid, _ in sent:
            async def answered(s: GatewayClient = sender, m: str = mid) -> bool:
                return (await s.status(m)).get("first_reply") is not None
            await until(answered, f"the reply to {mid}")
        # None of the typed fields reached either gateway's database.
        for gw in (vn, kh):
            with sqlite3.connect(gw.database) as db:
                rows = db.execute("SELECT * FROM messages").fetchall()
            text = " ".join(str(v) for row in rows for v in row if not isinstance(v, bytes))
            for secret in ("Mộc Bài", "Bavet", "C1234567", "summon_witness",
                           "located_victim", "ASEAN MLAT"):
                assert secret not in text, (gw.id, secret)
    finally:
        await stop_all(vn, kh)


def _handed_over(gw: Any) -> list[tuple[str, str]]:
    return [(doc["msg"], doc["ref"]) for (entry,) in gw.rows("SELECT entry FROM ledger")
            if (doc := json.loads(entry))["type"] == "handed_over"]


async def test_a_victim_handover_is_acknowledged_signed_and_ledgered_on_both_sides(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    vn, kh = make(tmp_path, "vn-mps"), make(tmp_path, "kh-cnp")
    pin(vn, kh)
    await started(vn, kh)
    try:
        a, k = await officers(vn, kh, http)
        await desk_known(k, "border-liaison@vn-mps")
        alert = {**ALERT, "alert_type": "victim_handover",
                 "text": "Handing over at Bavet, 14:30"}
        mid = (await a.send("hotline", "anti-trafficking@kh-cnp", alert, priority="flash",
                            handling="H1"))["id"]
        await until(lambda: has_message(k, mid), "the alert at kh-cnp")
        opened = await k.open(mid)
        receipt = {"type": "handover", "received_at": "2026-12-06T14:41+07:00",
                   "place": "Bavet", "persons": [VICTIM], "text": "received in good health"}
        rid = (await k.handover(opened, receipt))["id"]
        await until(lambda: has_message(a, rid), "the receipt at vn-mps")
        got = await a.open(rid)
        assert (got.header.kind, got.header.in_reply_to, got.header.handling) == (
            "handover", mid, "H1")
        assert got.sender_officer == k.creds.officer_id and got.payload == receipt
        await until(lambda: _handed_over(vn) == [(mid, rid)], "vn-mps's ledger entry")
        assert _handed_over(kh) == [(mid, rid)]
        # Only the desk the alert went to acknowledges it: the client says so, and the
        # gateway refuses a receipt from the sending side, storing nothing.
        sent, _ = await a._verified(mid)  # a sent it: it cannot open it, only verify it
        with pytest.raises(ClientError) as refused:
            await a.handover(OpenedMessage(sent, {}, a.creds.officer_id),
                             {"received_at": "2026-12-06T15:00+07:00"})
        assert refused.value.code == "not_the_recipient"
        with pytest.raises(ApiError) as refused_api:
            await a.send("handover", "anti-trafficking@kh-cnp",
                         {"type": "handover", "received_at": "2026-12-06T15:00+07:00"},
                         in_reply_to=mid, thread=mid)
        assert (refused_api.value.status, refused_api.value.code) == (403,
                                                                      "not_the_recipient")
        with pytest.raises(ApiError) as refused_api:  # a receipt answers an alert only
            await k.send("handover", "border-liaison@vn-mps",
                         {"type": "handover", "received_at": "2026-12-06T15:00+07:00"},
                         in_reply_to=rid, thread=mid)
        assert refused_api.value.code == "bad_reply"
        with pytest.raises(PayloadError):
            payload.validate({"type": "handover", "received_at": "today"}, "handover")
    finally:
        await stop_all(vn, kh)

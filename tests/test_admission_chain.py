"""The admission chain a client checks before it seals for a desk (PROTOCOL.md 7.6).

Real Ed25519 signatures over the real admission text; only the officers are made up here.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway.crypto.keys import GatewaySigningKey, OfficerEncryptionKey, OfficerSigningKey
from gateway.errors import ConflictError, MalformedError
from gateway.officers.admission import operator_admission
from gateway.officers.directory import build_directory
from gateway.officers.membership import MembershipNotices
from gateway.officers.notices import StoredNotices
from gateway.protocol.admission import (
    OPERATOR,
    Admission,
    Member,
    UnprovenMemberError,
    admission_text,
    check_members,
    safety_code,
    safety_codes_equal,
)
from gateway.protocol.officers import code_hash
from gateway.protocol.rotation import ChainKey
from gateway.store import AdmissionRow, Notification, OfficerRow
from gateway.store.sqlite import SqliteStore

T0 = 1_767_225_600_000
DAY = 86_400_000
GW = GatewaySigningKey(b"\x31" * 32)
GW_KEYS = (ChainKey(GW.public, None, None),)
DESK, BOSS = "border-liaison@vn-mps", "supervisors@vn-mps"
SUPERVISORS = {DESK: BOSS, BOSS: None}


class People:
    """Officers with real keys, and the admissions they sign for each other."""

    def __init__(self) -> None:
        self.keys: dict[str, OfficerSigningKey] = {}
        self.enc: dict[str, str] = {}
        self.officers: dict[str, Member] = {}

    def add(self, officer: str, ended: int = T0 + DAY) -> None:
        self.keys[officer] = OfficerSigningKey.generate()
        self.enc[officer] = OfficerEncryptionKey.generate().public.b64()
        self.officers[officer] = Member(officer, self.keys[officer].public, self.enc[officer],
                                        T0 + DAY, ended, {})

    def admit(self, officer: str, desk: str, by: str, at: int,
              signer: OfficerSigningKey | GatewaySigningKey | None = None) -> None:
        text = admission_text(desk, officer, self.keys[officer].public.b64(), self.enc[officer],
                              by, at)
        key = signer or (GW if by == OPERATOR else self.keys[by])
        member = self.officers[officer]
        admissions = {**member.admissions, desk: Admission(by, at, key.sign(text))}
        self.officers[officer] = Member(member.officer, member.sign_key, member.enc_key_b64,
                                        member.not_after, member.ended, admissions)

    def check(self, *listed: str) -> None:
        check_members(DESK, list(listed), self.officers, SUPERVISORS, GW_KEYS)


def refused(people: People, *listed: str, says: str) -> None:
    with pytest.raises(UnprovenMemberError) as info:
        people.check(*listed)
    assert info.value.code == "unproven_member"
    assert re.search(says, info.value.message), info.value.message


@pytest.fixture
def people() -> People:
    p = People()
    for name in ("first", "second", "third", "boss"):
        p.add(name)
    p.admit("first", DESK, OPERATOR, T0)
    p.admit("boss", BOSS, OPERATOR, T0)
    return p


def test_members_admitted_by_members_or_the_supervisor_desk_hold(people: People) -> None:
    people.admit("second", DESK, "first", T0 + 10)
    people.admit("third", DESK, "boss", T0 + 20)  # a member of the supervisor desk
    people.check("first", "second", "third")


def test_a_forged_signature_is_refused(people: People) -> None:
    people.admit("second", DESK, "first", T0 + 10, signer=OfficerSigningKey.generate())
    refused(people, "first", "second", says="not signed by first")


def test_an_admission_over_other_keys_is_refused(people: People) -> None:
    people.admit("second", DESK, "first", T0 + 10)
    m = people.officers["second"]  # the gateway swapped the encryption key afterwards
    people.officers["second"] = Member(m.officer, m.sign_key,
                                       OfficerEncryptionKey.generate().public.b64(),
                                       m.not_after, m.ended, m.admissions)
    refused(people, "second", says="not signed by first")


def test_the_admitter_must_itself_be_proven(people: People) -> None:
    people.admit("second", DESK, "first", T0 + 10, signer=OfficerSigningKey.generate())
    people.admit("third", DESK, "second", T0 + 20)  # by someone whose own admission is forged
    refused(people, "third", says="second to border-liaison")


def test_admissions_in_a_circle_prove_nothing(people: People) -> None:
    people.admit("second", DESK, "third", T0 + 10)
    people.admit("third", DESK, "second", T0 + 10)
    refused(people, "second", says="circle")


def test_an_admitter_from_another_desk_is_refused(people: People) -> None:
    people.add("stranger")
    people.admit("stranger", "trafficking@vn-mps", OPERATOR, T0)
    people.admit("second", DESK, "stranger", T0 + 10)
    refused(people, "second", says="was not a member of")


def test_an_admitter_admitted_after_it_admitted_is_refused(people: People) -> None:
    people.admit("second", DESK, "first", T0 + 50)
    people.admit("third", DESK, "second", T0 + 10)  # before second was a member
    refused(people, "third", says="was not a member of")


def test_an_admission_after_the_admitters_binding_ended_is_refused(people: People) -> None:
    people.add("gone", ended=T0 + 5)
    people.admit("gone", DESK, OPERATOR, T0)
    people.admit("second", DESK, "gone", T0 + 10)
    refused(people, "second", says="after its own binding ended")


def test_the_operator_admits_only_onto_a_desk_without_members(people: People) -> None:
    people.admit("second", DESK, OPERATOR, T0 + 10)  # while first is a member
    refused(people, "first", "second", says="by the operator while first was a member")
    later = People()
    later.add("old", ended=T0 + 5)
    later.add("new")
    later.admit("old", DESK, OPERATOR, T0)
    later.admit("new", DESK, OPERATOR, T0 + 10)  # the desk had no member left then
    later.check("new")


def test_an_operator_admission_must_carry_the_gateways_signature(people: People) -> None:
    people.add("lone")
    people.admit("lone", "other@vn-mps", OPERATOR, T0)
    other = People()
    other.officers = dict(people.officers)
    fake = GatewaySigningKey.generate()
    text = admission_text(DESK, "second", people.keys["second"].public.b64(),
                          people.enc["second"], OPERATOR, T0 - 1)
    m = people.officers["second"]
    other.officers["second"] = Member(m.officer, m.sign_key, m.enc_key_b64, m.not_after,
                                      m.ended, {DESK: Admission(OPERATOR, T0 - 1,
                                                                fake.sign(text))})
    with pytest.raises(UnprovenMemberError, match="not signed by the operator"):
        check_members(DESK, ["second"], other.officers, SUPERVISORS, GW_KEYS)


def test_an_operator_admission_is_checked_with_the_key_in_use_when_it_was_made(
        people: People) -> None:
    """The gateway rotated its key at T0: what its old key signed before stays proven; the
    old key can no longer admit anyone, and the new key could not before."""
    new = GatewaySigningKey(b"\x32" * 32)
    history = (ChainKey(GW.public, None, T0), ChainKey(new.public, T0, None))
    people.admit("second", DESK, OPERATOR, T0 - 1, signer=GW)
    check_members(DESK, ["second"], people.officers, SUPERVISORS, history)
    for at, signer in ((T0, GW), (T0 - 1, new)):
        people.admit("second", DESK, OPERATOR, at, signer=signer)
        with pytest.raises(UnprovenMemberError, match="not signed by the operator"):
            check_members(DESK, ["second"], people.officers, SUPERVISORS, history)


def test_a_listed_member_without_admission_or_unknown_is_refused(people: People) -> None:
    refused(people, "second", says="without an admission")
    refused(people, "nobody", says="without an admission")


def test_the_safety_code_is_twenty_digits_of_the_keys() -> None:
    sign, enc = OfficerSigningKey.generate().public.b64(), \
        OfficerEncryptionKey.generate().public.b64()
    code = safety_code(DESK, "off-1", sign, enc)
    assert re.fullmatch(r"\d{4}( \d{4}){4}", code)
    assert code == safety_code(DESK, "off-1", sign, enc)
    other_enc = OfficerEncryptionKey.generate().public.b64()
    assert code != safety_code(DESK, "off-1", sign, other_enc)
    assert code != safety_code("other@vn-mps", "off-1", sign, enc)
    assert safety_codes_equal(code.replace(" ", "-"), code)
    assert safety_codes_equal(code.replace(" ", ""), code)
    assert not safety_codes_equal(code[:-1] + str((int(code[-1]) + 1) % 10), code)
    assert not safety_codes_equal("", code)


def test_a_malformed_admission_is_refused() -> None:
    good = Admission("off-1", T0, bytes(64)).to_json()
    assert Admission.from_json(good) == Admission("off-1", T0, bytes(64))
    for bad in ({**good, "signature": "%%"}, {**good, "at": "1"}, {**good, "by": 3},
                {k: v for k, v in good.items() if k != "by"}, "x",
                {**good, "signature": "AAAA"}):
        with pytest.raises(MalformedError):
            Admission.from_json(bad)


def test_the_protocol_documents_vector_is_what_the_code_makes() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md").read_text("utf-8")
    block = doc[doc.index("### 7.6 Admission to a desk"):doc.index("### 7.7 History shares")]
    values = dict(re.findall(r"^(desk|officer|sign_key|enc_key|at|safety code)\s+(\S.*)$",
                             block, re.M))
    signatures = re.findall(r"^signature\s+(\S+)$", block, re.M)
    new_s, new_e = OfficerSigningKey(b"\x01" * 32), OfficerEncryptionKey(b"\x02" * 32)
    admitter, gateway = OfficerSigningKey(b"\x03" * 32), GatewaySigningKey(b"\x04" * 32)
    assert (values["sign_key"], values["enc_key"]) == (new_s.public.b64(), new_e.public.b64())
    assert admitter.public.b64() in block and gateway.public.b64() in block
    desk, officer, at = values["desk"], values["officer"], int(values["at"])
    by_member = admission_text(desk, officer, new_s.public.b64(), new_e.public.b64(),
                               "off-fedcba9876543210", at)
    by_operator = admission_text(desk, officer, new_s.public.b64(), new_e.public.b64(),
                                 OPERATOR, at)
    assert signatures == [base64.b64encode(admitter.sign(by_member)).decode(),
                          base64.b64encode(gateway.sign(by_operator)).decode()]
    assert values["safety code"] == safety_code(desk, officer, new_s.public.b64(),
                                                new_e.public.b64())


# --- the store's side: admissions are kept once, the operator's only onto an empty desk ---


async def test_the_store_keeps_one_admission_and_the_operator_needs_an_empty_desk(
        tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "gateway.sqlite3")
    try:
        await store.add_desk("border-liaison", None, T0)
        rows = []
        for n in range(2):
            digest = code_hash(f"FPG-AAAA-AAAA-AAAA-AAAA-AAA{n + 2}")
            await store.add_enrollment_code(digest, ["border-liaison"], T0, T0 + DAY)
            sign, enc = OfficerSigningKey.generate().public, \
                OfficerEncryptionKey.generate().public

            def make(desks: tuple[str, ...], n: int = n, sign=sign, enc=enc) -> OfficerRow:
                return OfficerRow(f"off-{n}", sign.raw, sign.key_id, enc.raw, enc.key_id, b"b",
                                  T0, T0 + DAY, None, desks)
            rows.append(await store.redeem_enrollment_code(
                digest, T0, make, lambda row, desk: operator_admission(GW, "vn-mps", row, desk,
                                                                       T0)))
        stored = {o.id: o.admissions for o in await store.officers()}
        assert [a.admitted_by for a in stored["off-0"]] == [OPERATOR]  # the first member
        assert stored["off-1"] == ()  # waits: the desk has a member
        second = operator_admission(GW, "vn-mps", rows[1], "border-liaison", T0 + 1)
        with pytest.raises(ConflictError) as staffed:
            await store.admit("off-1", second, T0 + 1, operator=True)
        assert staffed.value.code == "desk_has_members"
        by_member = AdmissionRow("border-liaison", "off-0", T0 + 2, bytes(64))
        await store.admit("off-1", by_member, T0 + 2)
        with pytest.raises(ConflictError) as again:
            await store.admit("off-1", by_member, T0 + 3)
        assert again.value.code == "already_admitted"
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "gateway.sqlite3") as db:  # append-only, like the ledger
        for sql in ("DELETE FROM admissions", "UPDATE admissions SET admitted_by = 'x'"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                db.execute(sql)


async def test_joins_and_departures_are_ledgered_once_and_published_once(
        tmp_path: Path) -> None:
    """A request's reload and the watcher's can overlap; a gateway can stop between a
    change and its entry: each join and departure is one ledger entry, each notice one
    stream event."""
    path = tmp_path / "gateway.sqlite3"
    store = await SqliteStore.open(path)
    published: list[Notification] = []
    checkpoints: list[int] = []  # the ledger's size at each checkpoint asked for

    async def checkpoint() -> None:
        checkpoints.append(store.ledger_size())

    try:
        feed = StoredNotices(store, "vn-mps", published.append)
        notices = MembershipNotices(store, "vn-mps", feed, lambda: "gw-key-id", checkpoint)
        before = await directory_of(store)
        await notices.catch_up(before)  # notes where the store stands
        await store.add_desk("border-liaison", None, T0)
        digest = code_hash("FPG-AAAA-AAAA-AAAA-AAAA-AAAA")
        await store.add_enrollment_code(digest, ["border-liaison"], T0, T0 + DAY)
        sign, enc = OfficerSigningKey.generate().public, OfficerEncryptionKey.generate().public
        await store.redeem_enrollment_code(
            digest, T0, lambda desks: OfficerRow("off-1", sign.raw, sign.key_id, enc.raw,
                                                 enc.key_id, b"b", T0, T0 + DAY, None, desks),
            lambda row, desk: operator_admission(GW, "vn-mps", row, desk, T0))
        await notices.catch_up(before)  # a reload that began before the join: left for later
        assert store.ledger_size() == 0 and checkpoints == []
        directory = await directory_of(store)
        await asyncio.gather(*(notices.catch_up(directory) for _ in range(5)))
        assert checkpoints == [1]
        assert [(n.desk, n.kind, n.data["kind"], n.data["officer"]) for n in published] == [
            ("border-liaison@vn-mps", "membership", "joined", "off-1")]
        await store.revoke_officer("off-1", T0 + 5)  # the gateway stops before it ledgers
    finally:
        await store.close()
    store = await SqliteStore.open(path)
    try:
        feed = StoredNotices(store, "vn-mps", published.append)
        again = MembershipNotices(store, "vn-mps", feed, lambda: "gw-key-id", checkpoint)
        await again.catch_up(await directory_of(store))  # at the next start
        await again.catch_up(await directory_of(store))
        entries = [json.loads(row.entry) async for row in store.ledger_rows()]
        assert checkpoints == [1, 2]
    finally:
        await store.close()
    text = admission_text("border-liaison@vn-mps", "off-1", sign.b64(), enc.b64(), OPERATOR, T0)
    assert entries == [
        {"actor": "gw-key-id", "digest": hashlib.sha256(text).hexdigest(), "msg": "off-1",
         "recipient": "border-liaison@vn-mps", "ref": OPERATOR, "seq": 0, "t": T0,
         "type": "admitted", "v": 1},
        {"msg": "off-1", "reason": "revoked", "recipient": "border-liaison@vn-mps", "seq": 1,
         "t": T0 + 5, "type": "departed", "v": 1}]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT kind, ledger_seq FROM desk_notices ORDER BY seq").fetchall() == [
            ("joined", 0), ("left", 1)]


async def directory_of(store: SqliteStore) -> Any:
    return build_directory("vn-mps", await store.desks(), await store.officers(), T0 + 1)


async def test_a_join_the_reload_does_not_know_yet_holds_back_later_entries(
        tmp_path: Path) -> None:
    """Entries keep the order of the changes: a departure is never ledgered before the
    join it ends, even when a reload's directory predates that join."""
    store = await SqliteStore.open(tmp_path / "gateway.sqlite3")
    try:
        async def checkpoint() -> None:
            pass
        notices = MembershipNotices(store, "vn-mps", None, lambda: "gw-key-id",
                                    checkpoint)
        await store.add_desk("border-liaison", None, T0)
        before = await directory_of(store)
        digest = code_hash("FPG-BBBB-BBBB-BBBB-BBBB-BBBB")
        await store.add_enrollment_code(digest, ["border-liaison"], T0, T0 + DAY)
        sign, enc = OfficerSigningKey.generate().public, OfficerEncryptionKey.generate().public
        await store.redeem_enrollment_code(
            digest, T0, lambda desks: OfficerRow("off-2", sign.raw, sign.key_id, enc.raw,
                                                 enc.key_id, b"b", T0, T0 + DAY, None, desks),
            lambda row, desk: operator_admission(GW, "vn-mps", row, desk, T0))
        await store.revoke_officer("off-2", T0 + 5)
        await notices.catch_up(before)
        assert store.ledger_size() == 0
        await notices.catch_up(await directory_of(store))
        types = [json.loads(row.entry)["type"] async for row in store.ledger_rows()]
        assert types == ["admitted", "departed"]
    finally:
        await store.close()

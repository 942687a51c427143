"""Membership proofs (issue 20, item 2; docs/PROTOCOL.md 7.8), between a real store and
ledger and the client's check: every way a gateway could show a member the ledger does
not hold, or a ledger that does not extend what the client saw, is refused."""

from __future__ import annotations

import base64
import copy
import json
import re
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from gateway.clock import ManualClock
from gateway.crypto.keys import GatewaySigningKey, OfficerEncryptionKey, OfficerSigningKey
from gateway.crypto.note import NoteSigner, NoteVerifier, sign_note
from gateway.errors import ClientError
from gateway.ledger.events import LedgerEvent
from gateway.ledger.ledger import Ledger
from gateway.officers.admission import operator_admission
from gateway.officers.directory import DirectoryService
from gateway.officers.membership import MembershipNotices
from gateway.officers.proofs import membership_proofs
from gateway.protocol.admission import OPERATOR, Admission, admission_text
from gateway.protocol.checkpoint import Checkpoint
from gateway.protocol.membership import (
    ADMITTED,
    DEPARTED,
    LogState,
    admission_digest,
    check_extends,
    check_membership,
    check_relayed_log,
    open_log,
    open_membership,
    proofs_answer,
)
from gateway.protocol.merkle import consistency_proof, inclusion_proof, leaf_hash, root_from_leaves
from gateway.protocol.officers import DirectoryEntry, code_hash, open_directory_history
from gateway.store import OfficerRow
from gateway.store.sqlite import SqliteStore

T0 = 1_767_225_600_000
DAY = 86_400_000
GW = GatewaySigningKey(b"\x41" * 32)
OTHER = GatewaySigningKey(b"\x42" * 32)
ORIGIN = "fpg/vn-mps"
DESK = "border-liaison@vn-mps"


@dataclass
class Gateway:
    store: SqliteStore
    ledger: Ledger
    directories: DirectoryService
    path: Path
    enrolled: int = 0

    async def enroll(self, desk: str) -> str:
        """An officer enrolled on ``desk`` (admitted by the operator if it has nobody)."""
        self.enrolled += 1
        code = "FPG-AAAA-AAAA-AAAA-AAAA-" + "ABCDEFGH"[self.enrolled] * 4
        await self.store.add_enrollment_code(code_hash(code), [desk], T0, T0 + DAY)
        sign, enc = OfficerSigningKey.generate().public, OfficerEncryptionKey.generate().public
        officer = f"off-{self.enrolled:016x}"
        await self.store.redeem_enrollment_code(
            code_hash(code), T0, lambda desks: OfficerRow(
                officer, sign.raw, sign.key_id, enc.raw, enc.key_id, b"b", T0, T0 + DAY, None,
                desks),
            lambda row, d: operator_admission(GW, "vn-mps", row, d, T0))
        await self.directories.reload()  # ledgers the join
        return officer

    async def desk(self, address: str = DESK) -> DirectoryEntry:
        """The desk as a client sees it in the signed directory."""
        note = (await self.directories.get()).signed(GW)
        return open_directory_history(note, "vn-mps", GW.public).desks[address]

    async def proofs(self, known: int = 0, address: str = DESK) -> dict[str, Any]:
        return await membership_proofs(self.ledger, self.store, self.directories, address,
                                       known)


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    path = tmp_path / "gateway.sqlite3"
    store = await SqliteStore.open(path)
    clock = ManualClock(T0 + 1000)
    ledger = Ledger(store, ORIGIN, [NoteVerifier(ORIGIN, GW.public)], NoteSigner(ORIGIN, GW),
                    clock)
    directories = DirectoryService(store, "vn-mps", clock)
    notices = MembershipNotices(store, "vn-mps", None, lambda: GW.public.key_id,
                                ledger.make_checkpoint)
    directories.listeners.append(notices.catch_up)
    for desk in ("border-liaison", "trafficking"):
        await store.add_desk(desk, None, T0)
    try:
        yield Gateway(store, ledger, directories, path)
    finally:
        await store.close()


def refused(answer: Any, desk: DirectoryEntry, known: LogState | None = None, *,
            key: GatewaySigningKey = GW) -> ClientError:
    with pytest.raises(ClientError) as caught:
        check_membership(answer, desk, [key.public], known)
    return caught.value


async def test_members_are_proven_and_the_remembered_checkpoint_moves_forward(gw) -> None:
    officer = await gw.enroll("border-liaison")
    desk = await gw.desk()
    assert [m["officer"] for m in desk.members] == [officer]
    first = check_membership(await gw.proofs(), desk, [GW.public], None)
    assert first == LogState(ORIGIN, 1, await gw.ledger.root(1))
    assert check_membership(await gw.proofs(first.size), desk, [GW.public], first) == first
    await gw.enroll("trafficking")  # the ledger grows by another desk's join
    later = check_membership(await gw.proofs(first.size), desk, [GW.public], first)
    assert later == LogState(ORIGIN, 2, await gw.ledger.root(2))


async def test_a_member_without_a_ledger_entry_is_refused(gw) -> None:
    officer = await gw.enroll("border-liaison")
    desk, answer = await gw.desk(), await gw.proofs()
    answer["members"] = []
    assert refused(answer, desk).code == "unproven_member"
    assert officer in refused(answer, desk).message
    assert "no ledger entry" in refused(answer, desk).message


async def test_an_entry_for_another_admission_is_refused(gw) -> None:
    await gw.enroll("border-liaison")
    desk, answer = await gw.desk(), await gw.proofs()
    member = dict(desk.members[0])
    member["enc_key"] = OfficerEncryptionKey.generate().public.b64()  # not the keys logged
    shown = replace(desk, members=(member,))
    assert "not this admission" in refused(answer, shown).message


async def test_an_admission_logged_as_another_kind_of_entry_is_refused(gw) -> None:
    """The digest matches, but an auditor looking for joins would not find it."""
    await gw.enroll("border-liaison")
    desk, answer = await gw.desk(), await gw.proofs()
    logged = LedgerEvent("accepted", desk.members[0]["officer"], T0,
                         digest=_json(answer["members"][0]["entry"])["digest"], recipient=DESK)
    (seq,) = await gw.store.ledger_notices([(_notice_seq(gw.path), logged)])
    answer = await gw.proofs()
    assert answer["members"][0]["seq"] == seq
    assert "not this admission" in refused(answer, desk).message


async def test_a_proof_that_does_not_lead_to_the_root_is_refused(gw) -> None:
    await gw.enroll("trafficking")
    await gw.enroll("border-liaison")
    desk, answer = await gw.desk(), await gw.proofs()
    bent = copy.deepcopy(answer)
    bent["members"][0]["proof"][0] = base64.b64encode(b"\x00" * 32).decode()
    assert "does not match the root" in refused(bent, desk).message


async def test_a_checkpoint_not_signed_by_the_gateway_is_refused(gw) -> None:
    await gw.enroll("border-liaison")
    desk, answer = await gw.desk(), await gw.proofs()
    error = refused(answer, desk, key=OTHER)
    assert error.code == "unproven_member" and "checkpoint" in error.message


async def test_a_checkpoint_is_remembered_only_if_the_gateway_signed_it(gw) -> None:
    await gw.enroll("border-liaison")
    note = (await gw.proofs())["checkpoint"]
    assert open_log(note, [OTHER.public, GW.public]) == LogState(
        ORIGIN, 1, await gw.ledger.root(1))
    for bad in (note, None, "fpg/vn-mps\n1\n"):
        with pytest.raises(ClientError) as refused:
            open_log(bad, [OTHER.public])
        assert refused.value.code == "bad_checkpoint"


async def test_a_ledger_that_does_not_extend_the_remembered_one_is_a_fork(gw) -> None:
    await gw.enroll("border-liaison")
    desk = await gw.desk()
    seen = check_membership(await gw.proofs(), desk, [GW.public], None)
    await gw.enroll("trafficking")
    answer = await gw.proofs(seen.size)
    other_root = LogState(ORIGIN, seen.size, b"\x07" * 32)  # the client saw another tree
    assert refused(answer, desk, other_root).code == "ledger_fork"
    same_size = await gw.proofs(2)
    assert refused(same_size, desk, LogState(ORIGIN, 2, b"\x07" * 32)).code == "ledger_fork"
    larger = LogState(ORIGIN, 5, b"\x07" * 32)  # the ledger shrank since
    assert refused(await gw.proofs(5), desk, larger).code == "ledger_fork"
    renamed = LogState("fpg/elsewhere", seen.size, seen.root)
    assert refused(answer, desk, renamed).code == "ledger_fork"
    bent = copy.deepcopy(answer)
    bent["consistency"] = [base64.b64encode(b"\x00" * 32).decode()] * len(answer["consistency"])
    assert bent["consistency"] and refused(bent, desk, seen).code == "ledger_fork"


async def test_a_proof_from_another_size_is_a_fork(gw) -> None:
    await gw.enroll("border-liaison")
    desk = await gw.desk()
    seen = check_membership(await gw.proofs(), desk, [GW.public], None)
    await gw.enroll("trafficking")
    assert refused(await gw.proofs(0), desk, seen).code == "ledger_fork"


async def test_a_partners_kept_proofs_are_checked_apart_from_their_consistency(gw) -> None:
    """A home gateway passes on a partner's proofs asked from size 0: the members are
    proven by the checkpoint alone; whether it extends what the client saw is a separate
    proof, from the older of the two sizes to the newer."""
    await gw.enroll("border-liaison")
    desk = await gw.desk()
    seen = open_membership(await gw.proofs(), desk, [GW.public])
    await gw.enroll("trafficking")
    kept = await gw.proofs(0)
    later = open_membership(kept, desk, [GW.public])
    check_extends(seen, later, await gw.ledger.consistency_proof(seen.size, later.size))
    with pytest.raises(ClientError) as forked:
        check_extends(seen, LogState(ORIGIN, later.size, b"\x07" * 32),
                      await gw.ledger.consistency_proof(seen.size, later.size))
    assert forked.value.code == "ledger_fork"
    with pytest.raises(ClientError) as renamed:
        check_extends(seen, replace(later, origin="fpg/elsewhere"), [])
    assert renamed.value.code == "ledger_fork"
    kept["members"] = []
    with pytest.raises(ClientError) as unproven:
        open_membership(kept, desk, [GW.public])
    assert unproven.value.code == "unproven_member"
    assert open_membership(await gw.proofs(0), desk, [OTHER.public, GW.public]) == later


async def test_a_partners_log_is_followed_only_from_the_size_the_client_knows(gw) -> None:
    await gw.enroll("border-liaison")
    desk = await gw.desk()
    seen = open_membership(await gw.proofs(), desk, [GW.public])
    await gw.enroll("trafficking")
    grown = await gw.proofs(seen.size)
    later = open_membership(grown, desk, [GW.public])
    assert check_relayed_log(grown, None, later) and check_relayed_log(grown, later, later)
    assert check_relayed_log(grown, seen, later)
    kept = await gw.proofs(0)  # passed on while the partner did not answer
    assert not check_relayed_log(kept, seen, later)
    forks = [
        (grown, LogState(ORIGIN, seen.size, b"\x07" * 32)),  # another tree of that size
        (kept, LogState(ORIGIN, later.size, b"\x07" * 32)),  # the same size, another root
        ({**grown, "consistency": ["%%%"]}, seen),
        ({**grown, "consistency": [base64.b64encode(b"\x00" * 32).decode()]}, seen),
    ]
    for answer, known in forks:
        with pytest.raises(ClientError) as forked:
            check_relayed_log(answer, known, later)
        assert forked.value.code == "ledger_fork"


async def test_a_join_made_behind_the_gateway_is_ledgered_before_its_proof(gw) -> None:
    """An operator's command writes the join in its own process: the proof request
    ledgers it and signs a checkpoint that covers it."""
    await gw.enroll("border-liaison")
    gw.directories.listeners.clear()  # as if the reload had not happened yet
    late = await gw.enroll("trafficking")
    assert gw.store.ledger_size() == 1
    gw.directories.listeners.append(MembershipNotices(
        gw.store, "vn-mps", None, lambda: GW.public.key_id,
        gw.ledger.make_checkpoint).catch_up)
    address = "trafficking@vn-mps"
    desk = await gw.desk(address)
    answer = await gw.proofs(0, address)
    assert [m["officer"] for m in answer["members"]] == [late]
    assert check_membership(answer, desk, [GW.public], None).size == 2


def _json(text: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(text)
    assert doc["type"] == ADMITTED
    return doc


def _notice_seq(path: Path) -> int:
    """Point the desk's join at a new entry, as a dishonest operator could."""
    with sqlite3.connect(path) as db:
        (seq,) = db.execute("SELECT seq FROM desk_notices WHERE kind = 'joined'").fetchone()
    return int(seq)


# --- the test vector of docs/PROTOCOL.md 7.8 --------------------------------------------

VECTOR_DESK = "border-liaison@vn-mps"
VECTOR_T = 1_767_225_600_000


def membership_vector() -> tuple[list[bytes], bytes, dict[str, Any], DirectoryEntry, LogState]:
    """Keys from seeds as 7.6's vector (new officer 0x01/0x02, its admitter 0x03 with
    encryption key 0x06, the gateway 0x04): the admitter joins by the operator a day
    before, admits the new officer, and is revoked an hour later. The ledger's entries,
    its checkpoint of size 3, the proofs answer for a client that saw size 2, the desk as
    the directory lists it, and that client's remembered checkpoint."""
    desk, by = VECTOR_DESK, "off-fedcba9876543210"
    new_s, new_e = OfficerSigningKey(b"\x01" * 32), OfficerEncryptionKey(b"\x02" * 32)
    old_s, old_e = OfficerSigningKey(b"\x03" * 32), OfficerEncryptionKey(b"\x06" * 32)
    gateway = GatewaySigningKey(b"\x04" * 32)
    first_at, at = VECTOR_T - DAY, VECTOR_T
    first = Admission(OPERATOR, first_at, gateway.sign(admission_text(
        desk, by, old_s.public.b64(), old_e.public.b64(), OPERATOR, first_at)))
    second = Admission(by, at, old_s.sign(admission_text(
        desk, "off-0123456789abcdef", new_s.public.b64(), new_e.public.b64(), by, at)))
    entries = [event.encode(seq) for seq, event in enumerate([
        LedgerEvent(ADMITTED, by, first_at, recipient=desk, actor=gateway.public.key_id,
                    ref=OPERATOR, digest=admission_digest(desk, by, old_s.public.b64(),
                                                          old_e.public.b64(), first)),
        LedgerEvent(ADMITTED, "off-0123456789abcdef", at, recipient=desk,
                    actor=old_s.public.key_id, ref=by,
                    digest=admission_digest(desk, "off-0123456789abcdef",
                                            new_s.public.b64(), new_e.public.b64(), second)),
        LedgerEvent(DEPARTED, by, at + 3_600_000, recipient=desk, reason="revoked"),
    ])]
    leaves = [leaf_hash(e) for e in entries]
    root = root_from_leaves(leaves)
    note = sign_note(Checkpoint(ORIGIN, 3, root).text(), [NoteSigner(ORIGIN, gateway)])
    answer = proofs_answer(desk, note, 2, consistency_proof(2, 3, leaves),
                           [("off-0123456789abcdef", 1, entries[1],
                             inclusion_proof(1, 3, leaves))])
    member = {"officer": "off-0123456789abcdef", "sign_key": new_s.public.b64(),
              "enc_key": new_e.public.b64(), "admission": second.to_json()}
    return (entries, note, answer, DirectoryEntry(desk, (member,)),
            LogState(ORIGIN, 2, root_from_leaves(leaves[:2])))


def test_the_protocol_documents_vector_is_what_the_code_makes() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md").read_text("utf-8")
    section = doc[doc.index("### 7.8 Membership in the ledger"):doc.index("## 8. The client")]
    blocks = re.findall(r"```(?:json)?\n(.*?)\n```", section, flags=re.S)
    entries, note, answer, desk, seen = membership_vector()
    assert blocks[-3:] == [b"\n".join(entries).decode(), note.decode().rstrip("\n"),
                           json.dumps(answer, indent=1)]
    gateway = GatewaySigningKey(b"\x04" * 32)
    assert check_membership(json.loads(blocks[-1]), desk, [gateway.public], seen) == LogState(
        ORIGIN, 3, root_from_leaves([leaf_hash(e) for e in entries]))

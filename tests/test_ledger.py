"""The ledger over a real store: proofs, checkpoints, full verification, tamper cases."""

from __future__ import annotations

import base64
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from gateway.clock import ManualClock
from gateway.crypto.keys import GatewaySigningKey
from gateway.crypto.note import NoteSigner, NoteVerifier, split_note
from gateway.errors import LedgerError
from gateway.ledger.events import READ, LedgerEvent
from gateway.ledger.ledger import CheckpointSchedule, Ledger
from gateway.protocol.checkpoint import open_checkpoint, parse_checkpoint_text
from gateway.protocol.merkle import (
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)
from gateway.store.sqlite import SqliteStore
from tests.helpers import GATEWAY_KEY, T0, Officer, db_path, incoming, make_envelope

ORIGIN = "fpg/vn-mps"


def event(i: int) -> LedgerEvent:
    return LedgerEvent(READ, f"{i:032x}", T0 + i, actor="0123456789abcdef")


async def open_ledger(path: Path, key: GatewaySigningKey = GATEWAY_KEY,
                      clock: ManualClock | None = None) -> Ledger:
    store = await SqliteStore.open(path)
    return Ledger(store, ORIGIN, [NoteVerifier(ORIGIN, key.public)], NoteSigner(ORIGIN, key),
                  clock or ManualClock())


@pytest.fixture
async def ledger(tmp_path):
    lg = await open_ledger(db_path(tmp_path))
    yield lg
    await lg.store.close()


def leaves_on_disk(path: Path) -> list[bytes]:
    with sqlite3.connect(path) as db:
        return [leaf_hash(r[0]) for r in db.execute("SELECT entry FROM ledger ORDER BY seq")]


async def test_roots_and_proofs_match_the_reference_for_every_size(ledger, tmp_path) -> None:
    for i in range(70):
        await ledger.store.append_events([event(i)])
    leaves = leaves_on_disk(db_path(tmp_path))
    for size in range(0, 71):
        root = await ledger.root(size)
        assert root == root_from_leaves(leaves[:size])
        for index in range(size):
            proof = await ledger.inclusion_proof(index, size)
            assert proof == inclusion_proof(index, size, leaves)
            verify_inclusion(leaves[index], index, size, proof, root)
        everyone = list(range(size))[::-1]  # many proofs from one read, in any order
        assert await ledger.inclusion_proofs(everyone, size) == [
            inclusion_proof(index, size, leaves) for index in everyone]
        for old in range(0, size + 1):
            proof = await ledger.consistency_proof(old, size)
            assert proof == consistency_proof(old, size, leaves)
            verify_consistency(old, size, await ledger.root(old), root, proof)
    with pytest.raises(LedgerError):
        await ledger.inclusion_proof(70, 70)
    with pytest.raises(LedgerError):
        await ledger.inclusion_proofs([0, 70], 70)
    with pytest.raises(LedgerError):
        await ledger.root(71)


async def test_checkpoint_is_a_signed_note_of_origin_size_root(ledger) -> None:
    await ledger.store.append_events([event(i) for i in range(5)])
    cp = await ledger.make_checkpoint()
    text, sigs = split_note(cp.note)
    assert text == f"{ORIGIN}\n5\n{base64.b64encode(cp.root).decode()}\n"
    assert sigs[0].name == ORIGIN and len(sigs[0].key_id) == 4
    opened = open_checkpoint(cp.note, ORIGIN, ledger.verifiers)
    assert (opened.size, opened.root) == (5, await ledger.root())
    assert (await ledger.make_checkpoint()).size == 5  # unchanged tree: same checkpoint
    other = GatewaySigningKey.generate()
    with pytest.raises(LedgerError, match="signature"):
        open_checkpoint(cp.note, ORIGIN, [NoteVerifier(ORIGIN, other.public)])
    with pytest.raises(LedgerError, match="origin"):
        open_checkpoint(cp.note, "fpg/kh-cnp", ledger.verifiers)


@pytest.mark.parametrize("text", ["o\n01\nAAAA\n", "o\nx\nAAAA\n", "o\n1\n!!\n", "o\n1\n",
                                  "o\n1\nAAAA\n"])
def test_malformed_checkpoint_text(text: str) -> None:
    with pytest.raises(LedgerError):
        parse_checkpoint_text(text)


async def test_prove_message_output_verifies_independently(ledger) -> None:
    sender, readers = Officer(), [Officer()]
    env = make_envelope(sender, readers)
    await ledger.store.accept(incoming(env))
    await ledger.store.append_events([event(1)])
    with pytest.raises(LedgerError, match="no checkpoint covers"):
        await ledger.prove_message(env.header.id)
    await ledger.make_checkpoint()
    doc = json.loads(json.dumps(await ledger.prove_message(env.header.id)))
    cp = open_checkpoint(doc["checkpoint"]["note"].encode(), ORIGIN, ledger.verifiers)
    assert [json.loads(e["entry"])["type"] for e in doc["events"]] == ["accepted", "delivered"]
    for e in doc["events"]:
        proof = [base64.b64decode(p) for p in e["inclusion_proof"]]
        verify_inclusion(leaf_hash(e["entry"].encode()), e["seq"], cp.size, proof, cp.root)
    with pytest.raises(LedgerError, match="no event"):
        await ledger.prove_message("f" * 32)


async def test_schedule_checkpoints_by_count_and_by_time(tmp_path) -> None:
    import asyncio

    clock = ManualClock()
    lg = await open_ledger(db_path(tmp_path), clock=clock)
    schedule = CheckpointSchedule(lg, every=10, interval=60.0)
    lg.store.on_commit.append(schedule.notify)  # type: ignore[attr-defined]
    task = asyncio.create_task(schedule.run())

    async def size_becomes(size: int) -> None:
        for _ in range(500):
            if (cp := await lg.store.latest_checkpoint()) and cp.size == size:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"no checkpoint of size {size}")

    try:
        await lg.store.append_events([event(i) for i in range(10)])
        await size_becomes(10)
        await lg.store.append_events([event(99)])  # 1 new entry: below the count
        await asyncio.sleep(0.05)
        assert (await lg.store.latest_checkpoint()).size == 10
        for _ in range(500):  # time moved while the schedule works would not wake it
            if clock.asleep():  # the schedule's timer, the only sleeper on this clock
                break
            await asyncio.sleep(0.01)
        clock.advance(61)  # ... but the interval passes
        await size_becomes(11)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await lg.store.close()


# --- tampering ---------------------------------------------------------------------------

async def build_ledger(path: Path, entries: int = 40, checkpoint_every: int = 10) -> None:
    lg = await open_ledger(path)
    for i in range(entries):
        await lg.store.append_events([event(i)])
        if (i + 1) % checkpoint_every == 0:
            await lg.make_checkpoint()
    await lg.store.close()


def tamper(path: Path, *statements: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER ledger_no_update")
        db.execute("DROP TRIGGER ledger_no_delete")
        for sql in statements:
            db.execute(sql)


async def verify_fails(path: Path) -> str:
    lg = await open_ledger(path)
    try:
        with pytest.raises(LedgerError) as info:
            await lg.verify()
    finally:
        await lg.store.close()
    return info.value.message


@pytest.fixture
async def built(tmp_path) -> Path:
    path = db_path(tmp_path)
    await build_ledger(path)
    return path


async def test_untouched_ledger_verifies(built) -> None:
    lg = await open_ledger(built)
    try:
        seen: list[tuple[int, int]] = []
        assert await lg.verify(lambda d, t: seen.append((d, t))) == 40
        assert seen[-1] == (40, 40)
    finally:
        await lg.store.close()


async def test_one_byte_changed_in_one_entry(built) -> None:
    with sqlite3.connect(built) as db:
        entry = db.execute("SELECT entry FROM ledger WHERE seq = 17").fetchone()[0]
    changed = entry.replace(b'"read"', b'"reaD"')
    assert len(changed) == len(entry) and changed != entry
    tamper(built, f"UPDATE ledger SET entry = x'{changed.hex()}' WHERE seq = 17")
    assert "ledger entry 17" in await verify_fails(built)


async def test_one_byte_changed_with_hashes_recomputed(built) -> None:
    # A careful forger also rewrites the leaf hash: the stored tree no longer matches.
    with sqlite3.connect(built) as db:
        entry = db.execute("SELECT entry FROM ledger WHERE seq = 22").fetchone()[0]
    forged = entry.replace(f'"t":{T0 + 22}'.encode(), f'"t":{T0 + 99}'.encode())
    assert len(forged) == len(entry) and forged != entry
    tamper(built, f"UPDATE ledger SET entry = x'{forged.hex()}', leaf_hash = "
                  f"x'{leaf_hash(forged).hex()}' WHERE seq = 22")
    message = await verify_fails(built)
    assert "ledger entry 2" in message  # 22 or its sibling 23: the first hash that breaks


async def test_one_row_deleted(built) -> None:
    tamper(built, "DELETE FROM ledger WHERE seq = 25")
    assert "ledger entry 25 is missing" in await verify_fails(built)


async def test_two_rows_swapped(built) -> None:
    with sqlite3.connect(built) as db:
        a = db.execute("SELECT entry, leaf_hash, nodes FROM ledger WHERE seq = 5").fetchone()
        b = db.execute("SELECT entry, leaf_hash, nodes FROM ledger WHERE seq = 6").fetchone()
    tamper(
        built,
        "DELETE FROM ledger WHERE seq IN (5, 6)",
        f"INSERT INTO ledger VALUES (5, NULL, x'{b[0].hex()}', x'{b[1].hex()}', x'{b[2].hex()}')",
        f"INSERT INTO ledger VALUES (6, NULL, x'{a[0].hex()}', x'{a[1].hex()}', x'{a[2].hex()}')",
    )
    assert "ledger entry 5 holds the entry of position 6" in await verify_fails(built)


async def test_tail_cut(built) -> None:
    tamper(built, "DELETE FROM ledger WHERE seq >= 33")
    assert "ledger entry 33 is missing" in await verify_fails(built)


async def test_checkpoint_note_rewritten_by_another_key(built) -> None:
    forger = GatewaySigningKey.generate()
    lg = await open_ledger(built)
    root = await lg.root(40)
    await lg.store.close()
    from gateway.crypto.note import sign_note
    from gateway.protocol.checkpoint import Checkpoint

    note = sign_note(Checkpoint(ORIGIN, 40, root).text(), [NoteSigner(ORIGIN, forger)])
    with sqlite3.connect(built) as db:
        db.execute("DROP TRIGGER checkpoints_no_delete")
        db.execute("DELETE FROM checkpoints WHERE size = 40")
        db.execute("INSERT INTO checkpoints VALUES (40, ?, ?, 0)", (root, note))
    assert "checkpoint signature" in await verify_fails(built)


async def test_copies_are_independent(built, tmp_path) -> None:
    copy = tmp_path / "copy.sqlite3"
    shutil.copy(built, copy)
    tamper(copy, "DELETE FROM ledger WHERE seq = 3")
    assert "entry 3" in await verify_fails(copy)
    lg = await open_ledger(built)
    try:
        assert await lg.verify() == 40
    finally:
        await lg.store.close()


async def test_checkpoints_under_concurrent_reads_and_writes(tmp_path) -> None:
    """Reads overlapping on the reader connection must not leave it on an old snapshot
    (a checkpoint would then miss rows the store has already committed)."""
    import asyncio

    lg = await open_ledger(db_path(tmp_path))
    stop = asyncio.Event()

    async def writer() -> None:
        i = 0
        while not stop.is_set():
            await asyncio.gather(*(lg.store.append_events([event(i + k)]) for k in range(20)))
            i += 20

    async def reader() -> None:
        while not stop.is_set():
            await asyncio.gather(lg.store.inbox("a@vn-mps", 0, 10), lg.store.checkpoints(),
                                 lg.store.events_of_message("0" * 32))

    tasks = [asyncio.create_task(writer()), *(asyncio.create_task(reader()) for _ in range(3))]
    try:
        for _ in range(60):
            await asyncio.sleep(0.01)
            await lg.make_checkpoint()  # raises if a stored node is not visible
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await lg.verify()
        await lg.store.close()

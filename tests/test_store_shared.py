"""Two stores, or two processes, writing to one SQLite file.

Each store keeps the Merkle tree's right edge and the next message number in memory and
plans a batch on them before writing it. When another connection has committed since
(``PRAGMA data_version`` changed), the batch is planned again on the tip read inside the
write transaction. These tests check that nothing is lost, numbered twice or hashed on a
stale tree, and that deduplication holds across the stores.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.crypto.note import NoteSigner, NoteVerifier
from gateway.ledger.events import READ, LedgerEvent
from gateway.ledger.ledger import Ledger
from gateway.store import ACCEPTED, CONFLICT, DUPLICATE, READ_RECORDED, ReadAck
from gateway.store.sqlite import SqliteStore
from tests.crash_driver import ORIGIN
from tests.helpers import GATEWAY_KEY, T0, Officer, db_path, incoming, make_envelope

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def pair(tmp_path):
    a = await SqliteStore.open(db_path(tmp_path))
    b = await SqliteStore.open(db_path(tmp_path))
    yield a, b
    await a.close()
    await b.close()


@pytest.fixture(scope="module")
def people() -> tuple[Officer, list[Officer]]:
    return Officer(), [Officer(), Officer()]


async def verify_ledger(path: Path) -> int:
    """Recompute the whole tree from the stored entries (and check every checkpoint)."""
    store = await SqliteStore.open(path)
    try:
        ledger = Ledger(store, ORIGIN, [NoteVerifier(ORIGIN, GATEWAY_KEY.public)],
                        NoteSigner(ORIGIN, GATEWAY_KEY), None)  # type: ignore[arg-type]
        return await ledger.verify()
    finally:
        await store.close()


def message_numbers(path: Path) -> list[int]:
    with sqlite3.connect(path) as db:
        return [r[0] for r in db.execute("SELECT mseq FROM messages ORDER BY mseq")]


async def test_alternating_stores_extend_one_tree(pair, tmp_path, people) -> None:
    a, b = pair
    sender, readers = people
    seqs: list[int] = []
    for i in range(20):
        store = (a, b)[i % 2]
        outcome = await store.accept(incoming(make_envelope(sender, readers)))
        assert outcome.status == ACCEPTED
        seqs.extend(outcome.seqs)
    # Each store learned the other's entries when it next committed: positions follow on.
    assert seqs == list(range(40))
    assert await verify_ledger(db_path(tmp_path)) == 40
    assert message_numbers(db_path(tmp_path)) == list(range(1, 21))


async def test_a_message_accepted_by_one_store_is_a_duplicate_for_the_other(pair, people) -> None:
    a, b = pair
    sender, readers = people
    env = make_envelope(sender, readers)
    assert (await a.accept(incoming(env))).status == ACCEPTED
    assert (await b.accept(incoming(env))).status == DUPLICATE
    other = make_envelope(sender, readers, message_id=env.header.id, payload=b"different")
    assert (await b.accept(incoming(other))).status == CONFLICT


async def test_a_read_recorded_by_the_other_store(pair, tmp_path, people) -> None:
    a, b = pair
    sender, readers = people
    env = make_envelope(sender, readers)
    await a.accept(incoming(env))
    ack = ReadAck(env.header.id, "0" * 16, "k1", T0 + 5, b"ack")
    assert await b.record_read(ack) == READ_RECORDED
    await a.append_events([LedgerEvent(READ, env.header.id, T0 + 6, actor="1" * 16)])
    assert await verify_ledger(db_path(tmp_path)) == 4  # accepted, delivered, read, read


async def test_concurrent_crowds_on_both_stores(pair, tmp_path, people) -> None:
    a, b = pair
    sender, readers = people
    envs = [make_envelope(sender, readers) for _ in range(400)]
    shared = envs[:50]  # offered to both stores at once: each accepted exactly once
    outcomes = await asyncio.gather(
        *(a.accept(incoming(e)) for e in envs[50:225]),
        *(b.accept(incoming(e)) for e in envs[225:]),
        *(a.accept(incoming(e)) for e in shared),
        *(b.accept(incoming(e)) for e in shared),
    )
    statuses = [o.status for o in outcomes]
    assert statuses.count(ACCEPTED) == 400 and statuses.count(DUPLICATE) == 50
    seqs = sorted(s for o in outcomes for s in o.seqs)
    assert seqs == list(range(800))
    assert await verify_ledger(db_path(tmp_path)) == 800
    assert message_numbers(db_path(tmp_path)) == list(range(1, 401))


async def create(path: Path) -> None:
    await (await SqliteStore.open(path)).close()


def test_two_processes_accepting_into_one_file(tmp_path) -> None:
    """Two real processes, each its own store with checkpoints, race on one database."""
    path = db_path(tmp_path)
    path.parent.mkdir(parents=True)
    asyncio.run(create(path))  # both drivers then open a migrated file
    drivers = [
        subprocess.Popen([sys.executable, "-m", "tests.crash_driver", str(path), "600", "64"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    acked: set[str] = set()
    deadline = time.monotonic() + 120
    try:
        for proc in drivers:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert proc.returncode == 0, err[-2000:]
            lines = out.splitlines()
            assert lines[-1] == "DONE"
            acked |= {line[4:] for line in lines if line.startswith("ACK ")}
    finally:
        for proc in drivers:  # a driver stuck on a failing store must not outlive the test
            proc.kill()
            proc.wait(timeout=30)
    assert len(acked) == 1200
    # 600 flash messages delivered (two events each) and 600 routine ones queued (one).
    assert asyncio.run(verify_ledger(path)) == 1800
    assert message_numbers(path) == list(range(1, 1201))
    with sqlite3.connect(path) as db:
        assert {r[0] for r in db.execute("SELECT id FROM messages")} == acked
        assert db.execute("SELECT count(*) FROM checkpoints").fetchone()[0] > 0

"""SIGKILL during 1,000 concurrent accepts loses no acknowledged message (real processes)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.crypto.note import NoteSigner, NoteVerifier
from gateway.ledger.ledger import Ledger
from gateway.store.sqlite import SqliteStore
from tests.crash_driver import ORIGIN
from tests.helpers import GATEWAY_KEY

ROOT = Path(__file__).resolve().parent.parent


def run_and_kill(db: Path, kill_after: int) -> set[str]:
    """Start the driver, SIGKILL it after ``kill_after`` acks; return the acked ids."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.crash_driver", str(db), "4000", "1000"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    acked: set[str] = set()
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            assert time.monotonic() < deadline, "driver too slow"
            if line.startswith("ACK "):
                acked.add(line[4:].strip())
                if len(acked) >= kill_after:
                    proc.send_signal(signal.SIGKILL)
                    break
            elif line.startswith("DONE"):
                break
        # Acks already written before the kill landed are acknowledged too: read them all.
        for line in proc.stdout:
            if line.startswith("ACK "):
                acked.add(line[4:].strip())
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the driver finished before it was killed"
    return acked


async def check(db: Path, acked: set[str]) -> int:
    store = await SqliteStore.open(db)
    try:
        ledger = Ledger(store, ORIGIN, [NoteVerifier(ORIGIN, GATEWAY_KEY.public)],
                        NoteSigner(ORIGIN, GATEWAY_KEY), None)  # type: ignore[arg-type]
        entries = await ledger.verify()
    finally:
        await store.close()
    with sqlite3.connect(db) as conn:
        stored = {r[0] for r in conn.execute("SELECT id FROM messages")}
        inbox = {r[0] for r in conn.execute("SELECT message_id FROM inbox")}
        outbox = {r[0] for r in conn.execute("SELECT message_id FROM outbox")}
        accepted_events = conn.execute(
            "SELECT count(*) FROM ledger WHERE json_extract(entry, '$.type') = 'accepted'"
        ).fetchone()[0]
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    lost = acked - stored
    assert not lost, f"{len(lost)} acknowledged messages lost"
    assert inbox | outbox == stored and not inbox & outbox  # each routed exactly once
    assert accepted_events == len(stored)  # one accept event per stored message, no more
    return entries


@pytest.mark.slow
def test_sigkill_during_concurrent_accepts_loses_nothing(tmp_path) -> None:
    db = tmp_path / "crash.sqlite3"
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    all_acked: set[str] = set()
    for _ in range(3):
        acked = run_and_kill(db, kill_after=rng.randint(200, 2500))
        assert len(acked) >= 200
        all_acked |= acked
        entries = asyncio.run(check(db, all_acked))
        assert entries >= len(all_acked)

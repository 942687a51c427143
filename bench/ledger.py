"""Ledger benchmark: durable appends with group commit next to raw SQLite inserts.

Prints, in one run, on real files under a temporary directory:

1. **raw SQLite batched inserts** (``sqlite3`` executemany, WAL, ``synchronous=FULL``, one
   commit per batch) of rows shaped like ledger rows, at the batch size the ledger's group
   commit actually reached in this run and at 1,000 rows per batch;
2. **ledger appends with group commit**: ``--writers`` concurrent tasks, each appending one
   event at a time and waiting for its durable commit (entry encoding, Merkle hashing and
   the async store included), and the ratio to (1);
3. **proof generation** at ``--entries`` (default 1,000,000) entries: inclusion and
   consistency proofs, median and worst of ``--proofs`` random proofs;
4. **full verification** of those entries (what ``gateway ledger verify`` and the start-up
   check do).

Targets on 2 cores (issue 3): appends >= 50 % of the raw batched-insert rate; a proof in
under 5 ms at 1,000,000 entries; full verify of 1,000,000 entries in under 60 s.

    python bench/ledger.py [--entries 1000000] [--append-events 100000] [--writers 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gateway.clock import SystemClock
from gateway.crypto.envelope import Envelope, EnvelopeHeader
from gateway.crypto.keys import GatewaySigningKey
from gateway.crypto.note import NoteSigner, NoteVerifier
from gateway.ledger.events import READ, LedgerEvent
from gateway.ledger.ledger import Ledger
from gateway.store import IncomingMessage
from gateway.store.sqlite import SqliteStore

ORIGIN = "fpg/bench"
KEY = GatewaySigningKey(b"\x42" * 32)
T0 = 1_767_225_600_000


def event(i: int) -> LedgerEvent:
    return LedgerEvent(READ, f"{i:032x}", T0 + i, actor="0123456789abcdef",
                       recipient="anti-trafficking@kh-cnp", priority="flash", kind="hotline")


def stored_message(i: int) -> IncomingMessage:
    """A message row for event ``i`` to refer to. The store does not verify envelopes (the
    gateway does, before), so unsigned bytes of realistic size stand in for one here."""
    mid = f"{i:032x}"
    header = EnvelopeHeader(id=mid, kind="hotline", priority="flash",
                            sender="border-liaison@vn-mps", recipient="anti-trafficking@vn-mps",
                            created=T0, expires=T0 + 86_400_000, thread=mid,
                            recipients=("0123456789abcdef",))
    raw = os.urandom(1500)
    envelope = Envelope(raw, header, header.encode(), "fedcba9876543210", (), b"", b"", b"")
    return IncomingMessage(envelope, T0, "local", "fedcba9876543210",
                           deliver_to="anti-trafficking@vn-mps")


def ledger_rows_written(path: Path, first_seq: int) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT seq, msg, entry, leaf_hash, nodes FROM ledger WHERE seq >= ?"
                            " ORDER BY seq", (first_seq,)).fetchall()


def raw_insert_rate(path: Path, rows: list[tuple[object, ...]], batch: int) -> float:
    """Rows per second of plain executemany + commit (fsync) per batch, WAL, FULL sync.

    ``path`` is a copy of the ledger's database as it was before the appends, and the rows
    are exactly those the ledger then wrote: what SQLite itself costs for the same data in
    the same database, without our machinery.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    for trigger in ("ledger_no_update", "ledger_no_delete"):
        conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    start = time.perf_counter()
    for i in range(0, len(rows), batch):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO ledger VALUES (?,?,?,?,?)", rows[i : i + batch])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return len(rows) / elapsed


async def append_rate(path: Path, events: int, writers: int) -> tuple[float, float, int]:
    """Durable single-event appends per second from concurrent writers; mean batch size.

    Each event is about a message stored beforehand (as read acknowledgements are), and
    each writer waits for its own commit before appending the next.
    """
    store = await SqliteStore.open(path)
    chunk = 1000
    for start in range(0, events, chunk):
        await asyncio.gather(*(store.accept(stored_message(i))
                               for i in range(start, min(start + chunk, events))))
    per_writer = events // writers
    todo = [event(i) for i in range(per_writer * writers)]
    random.Random(1).shuffle(todo)
    counter = iter(todo)
    commits_before, ops_before = store.commits, store.committed_ops
    first_seq = store.ledger_size()
    await store.checkpoint_wal()
    for suffix in ("", "-wal"):
        shutil.copyfile(f"{path}{suffix}", f"{path}.before{suffix}")

    async def writer() -> None:
        for _ in range(per_writer):
            await store.append_events([next(counter)])

    start = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    elapsed = time.perf_counter() - start
    mean_batch = (store.committed_ops - ops_before) / max(store.commits - commits_before, 1)
    await store.close()
    return per_writer * writers / elapsed, mean_batch, first_seq


async def build(path: Path, entries: int) -> None:
    store = await SqliteStore.open(path)
    ledger = Ledger(store, ORIGIN, [NoteVerifier(ORIGIN, KEY.public)], NoteSigner(ORIGIN, KEY),
                    SystemClock())
    chunk = 10_000
    for start in range(0, entries, chunk):
        await store.append_events([event(i) for i in range(start, min(start + chunk, entries))])
        if (start // chunk) % 10 == 9:
            await ledger.make_checkpoint()
    await ledger.make_checkpoint()
    await store.close()


async def proofs_and_verify(path: Path, count: int) -> dict[str, float]:
    store = await SqliteStore.open(path)
    ledger = Ledger(store, ORIGIN, [NoteVerifier(ORIGIN, KEY.public)], None, SystemClock())
    size = ledger.size
    rng = random.Random(7)
    inclusion, consistency = [], []
    for _ in range(count):
        index = rng.randrange(size)
        t = time.perf_counter()
        await ledger.inclusion_proof(index, size)
        inclusion.append(time.perf_counter() - t)
        old = rng.randrange(1, size)
        t = time.perf_counter()
        await ledger.consistency_proof(old, size)
        consistency.append(time.perf_counter() - t)
    t = time.perf_counter()
    verified = await ledger.verify()
    verify_s = time.perf_counter() - t
    await store.close()
    assert verified == size
    def p99(values: list[float]) -> float:
        return sorted(values)[int(len(values) * 0.99) - 1]

    return {
        "entries": size,
        "inclusion_median_ms": statistics.median(inclusion) * 1000,
        "inclusion_p99_ms": p99(inclusion) * 1000,
        "inclusion_max_ms": max(inclusion) * 1000,
        "consistency_median_ms": statistics.median(consistency) * 1000,
        "consistency_p99_ms": p99(consistency) * 1000,
        "consistency_max_ms": max(consistency) * 1000,
        "verify_seconds": verify_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ledger appends, proofs and verification")
    parser.add_argument("--entries", type=int, default=1_000_000, help="ledger size for proofs")
    parser.add_argument("--append-events", type=int, default=100_000)
    parser.add_argument("--writers", type=int, default=1000, help="concurrent appenders")
    parser.add_argument("--proofs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="alternating append/raw rounds")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="fpg-bench-") as tmp:
        d = Path(tmp)
        # Rounds alternate ledger and raw runs so that machine noise hits both alike; the
        # figures are the medians.
        ledger_rates, raw_same_rates, raw_1000_rates, batches = [], [], [], []
        for r in range(args.rounds):
            db = d / f"append{r}.db"
            appends, mean_batch, first_seq = asyncio.run(
                append_rate(db, args.append_events, args.writers)
            )
            rows = ledger_rows_written(db, first_seq)
            batch = max(1, round(mean_batch))
            for name in ("raw1.db", "raw2.db"):
                for suffix in ("", "-wal"):
                    shutil.copyfile(f"{db}.before{suffix}", d / f"{name}{suffix}")
            ledger_rates.append(appends)
            batches.append(mean_batch)
            raw_same_rates.append(raw_insert_rate(d / "raw1.db", rows, batch))
            raw_1000_rates.append(raw_insert_rate(d / "raw2.db", rows, 1000))
            for f in d.iterdir():
                if f.name.startswith(("append", "raw")):
                    f.unlink()
        appends = statistics.median(ledger_rates)
        mean_batch = statistics.median(batches)
        batch = max(1, round(mean_batch))
        raw_same = statistics.median(raw_same_rates)
        raw_1000 = statistics.median(raw_1000_rates)
        t = time.perf_counter()
        asyncio.run(build(d / "big.db", args.entries))
        build_s = time.perf_counter() - t
        big = asyncio.run(proofs_and_verify(d / "big.db", args.proofs))

    results = {
        "append_per_second": round(appends),
        "mean_group_commit_batch": round(mean_batch, 1),
        "raw_insert_per_second_same_batch": round(raw_same),
        "raw_insert_per_second_batch_1000": round(raw_1000),
        "append_ratio_same_batch": round(appends / raw_same, 3),
        "append_ratio_batch_1000": round(appends / raw_1000, 3),
        "build_seconds": round(build_s, 1),
        **{k: round(v, 3) for k, v in big.items()},
    }
    met = {
        "append >= 50% of raw batched insert": results["append_ratio_same_batch"] >= 0.5,
        "proof < 5 ms (p99) at 1M": max(big["inclusion_p99_ms"], big["consistency_p99_ms"]) < 5
        and args.entries >= 1_000_000,
        "verify 1M < 60 s": big["verify_seconds"] < 60 and args.entries >= 1_000_000,
    }
    if args.json:
        print(json.dumps({"benchmark": "ledger", "results": results, "met": met}))
        return 0
    print(f"ledger benchmark ({args.writers} concurrent writers, {args.append_events:,} appends,"
          f" median of {args.rounds} alternating rounds; proofs and verify at"
          f" {big['entries']:,} entries)")
    print(f"  raw SQLite insert, batch {batch:>4} (= group commit): {raw_same:>10,.0f} rows/s")
    print(f"  raw SQLite insert, batch 1000:                  {raw_1000:>10,.0f} rows/s")
    print(f"  ledger append, group commit (mean batch {mean_batch:.0f}): {appends:>10,.0f} "
          f"events/s  = {appends / raw_same:.0%} of raw same batch, "
          f"{appends / raw_1000:.0%} of raw batch 1000")
    for kind in ("inclusion", "consistency"):
        print(f"  {kind + ' proof:':19} median {big[kind + '_median_ms']:.2f} ms, "
              f"p99 {big[kind + '_p99_ms']:.2f} ms, max {big[kind + '_max_ms']:.2f} ms "
              f"({args.proofs} random proofs)")
    print(f"  full verify: {big['verify_seconds']:.1f} s (building it took {build_s:.1f} s)")
    for name, ok in met.items():
        print(f"target: {name}: {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

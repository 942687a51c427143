"""The floor under bench/accept.py: the least work a verifying, durable accept does.

A gateway accepting a message must at least read the HTTP request, check an Ed25519
signature over the envelope, write the envelope and a ledger leaf to disk with fsync, and
answer. This server does only that, on the same stack as the gateway (aiohttp, the
gateway's own signature worker thread, SQLite WAL with ``synchronous=FULL``, group commit
on one writer thread), so its rate is a ceiling the gateway's accept cannot pass on the
same machine in one process. It leaves out everything else the gateway does for an
accept: the officer's session and rate limit, parsing the envelope header, the checks on
sender, recipient desk and recipients, the second ledger event (delivery), the Merkle
tree's interior hashes, the inbox row, notifications and metrics.

``POST /``: the body is an envelope followed by a 64-byte Ed25519 signature over it, by
the key given on the command line. Each request gets a fresh row id (the process id
times 10^9 plus a counter, so that processes sharing one database never collide); the
envelope and ``SHA-256(0x00 || envelope)`` are committed, then ``201`` is answered.

With ``--port P`` the server binds port P with ``SO_REUSEPORT`` beside another one, and
both write to the same database file (``BEGIN IMMEDIATE``, ``busy_timeout``): the kernel
spreads the connections over the processes, and SQLite's lock orders their commits. That
measures what the same work can do with two processes instead of one.

    python bench/floor.py --serve PORT_FILE DATABASE KEY_HEX [--port P]

Bench-only: nothing here is used by the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import os
import sqlite3
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp import web

from gateway import interpreter
from gateway.cliutil import until_stopped
from gateway.crypto.keys import OfficerSigningKey, VerifyKey
from gateway.crypto.worker import CryptoWorker
from gateway.files import write_port_file
from gateway.store.sqlite import _write_batch

SIGNATURE_SIZE = 64
MAX_BODY = 64 * 1024
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS envelopes (id INTEGER PRIMARY KEY, envelope BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS leaves (seq INTEGER PRIMARY KEY, id INTEGER NOT NULL,"
    " leaf_hash BLOB NOT NULL)",
)
Pending = tuple[int, bytes, bytes, "asyncio.Future[None]"]


def signed_body(envelope: bytes, key: OfficerSigningKey) -> bytes:
    """What a client of the floor sends: the envelope, then its signature."""
    return envelope + key.sign(envelope)


def command(port_file: Path, database: Path, key: VerifyKey, port: int | None = None
            ) -> list[str]:
    """The command line of one floor server process."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", str(port_file),
           str(database), key.raw.hex()]
    return cmd if port is None else [*cmd, "--port", str(port)]


def _open(database: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("BEGIN IMMEDIATE")
    for statement in SCHEMA:
        conn.execute(statement)
    conn.execute("COMMIT")
    return conn


def _commit(conn: sqlite3.Connection, batch: list[Pending]) -> None:
    # The gateway's own transaction runner: BEGIN IMMEDIATE, the statements, COMMIT.
    _write_batch(conn, [
        ("INSERT INTO envelopes (id, envelope) VALUES (?, ?)",
         [(i, envelope) for i, envelope, _, _ in batch], True),
        ("INSERT INTO leaves (id, leaf_hash) VALUES (?, ?)",
         [(i, leaf) for i, _, leaf, _ in batch], True),
    ])


async def serve(port_file: Path, database: Path, key: VerifyKey, port: int) -> None:
    """Serve ``POST /`` on 127.0.0.1 until SIGTERM."""
    loop = asyncio.get_running_loop()
    conn = _open(database)
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="floor-writer")
    worker = CryptoWorker()
    pending: list[Pending] = []
    wake = asyncio.Event()
    next_id = os.getpid() * 10**9

    async def committer() -> None:
        # Group commit: everything that arrived while the last batch was being written
        # goes in the next transaction, with one fsync.
        while True:
            while not pending:
                wake.clear()
                await wake.wait()
            batch = pending[:]
            del pending[:]
            try:
                await loop.run_in_executor(writer, _commit, conn, batch)
            except sqlite3.Error as exc:
                for *_, future in batch:
                    future.set_exception(exc)
                continue
            for *_, future in batch:
                future.set_result(None)

    async def post(request: web.Request) -> web.Response:
        nonlocal next_id
        body = await request.read()
        if len(body) <= SIGNATURE_SIZE:
            return web.json_response({"error": "too_short"}, status=400)
        envelope, signature = body[:-SIGNATURE_SIZE], body[-SIGNATURE_SIZE:]
        (ok,) = await worker.check_all([(key, envelope, signature)])
        if not ok:
            return web.json_response({"error": "bad_signature"}, status=400)
        next_id += 1
        row = next_id
        future: asyncio.Future[None] = loop.create_future()
        pending.append((row, envelope, hashlib.sha256(b"\x00" + envelope).digest(),
                        future))
        wake.set()
        await future
        return web.json_response({"status": "accepted", "id": row}, status=201)

    task = asyncio.create_task(committer())
    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/", post)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", port, reuse_port=True)
        await site.start()
        await until_stopped(functools.partial(write_port_file, port_file, runner.addresses[0][1]))
    finally:
        await runner.cleanup()
        task.cancel()
        worker.close()
        writer.shutdown(wait=True)
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the floor server of bench/accept.py")
    parser.add_argument("--serve", nargs=3, required=True,
                        metavar=("PORT_FILE", "DATABASE", "KEY_HEX"))
    parser.add_argument("--port", type=int, default=0,
                        help="bind this port beside another floor server (SO_REUSEPORT)")
    args = parser.parse_args(argv)
    port_file, database, key_hex = args.serve
    key = VerifyKey(bytes.fromhex(key_hex), OfficerSigningKey.ROLE)
    interpreter.tune()  # as `gateway run` does, so that the two compare like for like
    asyncio.run(serve(Path(port_file), Path(database), key, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())

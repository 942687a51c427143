"""bench/floor.py, the yardstick under bench/accept.py: it must really check signatures
and really store what it answers 201 for, or its rate would flatter the floor."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp

from gateway.cli.process import ServerProcess
from gateway.crypto.keys import OfficerSigningKey

FLOOR = Path(__file__).resolve().parent.parent / "bench" / "floor.py"


@contextmanager
def floor_server(port_file: Path, database: Path, key: OfficerSigningKey,
                 port: int | None = None) -> Iterator[int]:
    cmd = [sys.executable, str(FLOOR), "--serve", str(port_file), str(database),
           key.public.raw.hex()]
    if port is not None:
        cmd += ["--port", str(port)]
    with ServerProcess(cmd, port_file=port_file, log=port_file.with_suffix(".log"),
                       name="the floor server") as server:
        yield server.port
    assert server.returncode == 0


async def post(port: int, body: bytes) -> int:
    # A new connection per request, so that SO_REUSEPORT may pick either process.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session, \
            session.post(f"http://127.0.0.1:{port}/", data=body) as answer:
        await answer.read()
        return answer.status


def rows(database: Path) -> tuple[int, int]:
    with sqlite3.connect(database) as conn:
        return (conn.execute("SELECT count(*) FROM envelopes").fetchone()[0],
                conn.execute("SELECT count(*) FROM leaves").fetchone()[0])


async def test_the_floor_stores_what_it_accepts_and_refuses_bad_signatures(
        tmp_path: Path) -> None:
    key = OfficerSigningKey.generate()
    envelope = b"sealed bytes " * 100
    good = envelope + key.sign(envelope)
    database = tmp_path / "floor.db"
    with floor_server(tmp_path / "port-0", database, key) as port, \
            floor_server(tmp_path / "port-1", database, key, port) as second:
        assert second == port
        assert await post(port, good[:-1] + bytes([good[-1] ^ 1])) == 400
        assert await post(port, good[:64]) == 400
        assert rows(database) == (0, 0)
        statuses = [await post(port, good) for _ in range(20)]
    assert statuses == [201] * 20
    assert rows(database) == (20, 20)

"""A process that accepts messages as fast as it can, for the SIGKILL test.

    python -m tests.crash_driver DB COUNT IN_FLIGHT

Opens the store at DB, keeps IN_FLIGHT accepts running at once until COUNT are done, and
prints ``ACK <message id>`` (flushed) for each accept the store acknowledged, i.e. after
its commit. Checkpoints are signed every 500 entries meanwhile. The parent kills it with
SIGKILL at a moment of its choosing and then checks the database.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from gateway.clock import SystemClock
from gateway.crypto.note import NoteSigner, NoteVerifier
from gateway.ledger.ledger import CheckpointSchedule, Ledger
from gateway.store.sqlite import SqliteStore
from tests.helpers import GATEWAY_KEY, Officer, incoming, make_envelope

ORIGIN = "fpg/crash"


async def main(path: Path, count: int, in_flight: int) -> None:
    store = await SqliteStore.open(path)
    ledger = Ledger(store, ORIGIN, [NoteVerifier(ORIGIN, GATEWAY_KEY.public)],
                    NoteSigner(ORIGIN, GATEWAY_KEY), SystemClock())
    schedule = CheckpointSchedule(ledger, every=500, interval=0.2)
    store.on_commit.append(schedule.notify)
    checkpoints = asyncio.create_task(schedule.run())
    sender, readers = Officer(), [Officer(), Officer()]
    envelopes = [make_envelope(sender, readers, priority=("flash", "routine")[i % 2])
                 for i in range(count)]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    print("READY", flush=True)

    async def worker() -> None:
        while not queue.empty():
            env = envelopes[queue.get_nowait()]
            relay = None if env.header.priority == "flash" else "kh-cnp"
            await store.accept(incoming(env, relay_to=relay))
            sys.stdout.write(f"ACK {env.header.id}\n")
            sys.stdout.flush()

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    print("DONE", flush=True)
    checkpoints.cancel()
    await asyncio.gather(checkpoints, return_exceptions=True)
    await store.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))

"""The crash suite's gateways: files made once, processes killed and started again.

Each gateway is a real ``gateway run`` process with its own directory: ``gateway init``'s
development key, a configuration written here (fixed port, every other gateway pinned by
URL and fingerprint, short federation intervals, frequent checkpoints, no metrics
listener), ``data/gateway.sqlite3`` and ``gateway.log`` (appended to by every start).
Ports are picked once, below the kernel's ephemeral range, so that the partners' pinned
URLs stay valid across restarts and no outgoing connection borrows a dead gateway's port.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from gateway.cli.admin import admin_request
from gateway.cli.process import ServerError, ServerExited, ServerProcess
from gateway.client.roster import Roster
from gateway.clock import SystemClock
from gateway.crypto.keyfile import read_public
from gateway.crypto.keys import ROLE_GATEWAY_SIGNING, VerifyKey
from gateway.officers.enrollment import new_code
from gateway.protocol.officers import code_hash
from gateway.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
DESKS = ("border-liaison", "anti-trafficking", "central-authority")
START_SECONDS = 30.0  # one start: the process listening (port file written)
START_ATTEMPTS = 8  # a start that fails (e.g. the port still busy) is tried again
STOP_SECONDS = 20.0  # a clean stop after SIGTERM


class ClusterError(AssertionError):
    """A gateway could not be made, started or stopped."""


def pick_ports(count: int, rng: random.Random) -> list[int]:
    """``count`` distinct free loopback ports, below the ephemeral range (where the kernel
    picks outgoing connections' ports), held together while checked, then released."""
    low, _ = _ephemeral_range()
    socks: list[socket.socket] = []
    try:
        for _ in range(2000):
            if len(socks) == count:
                break
            port = rng.randrange(20_000, max(20_001, min(low, 32_768)))
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((HOST, port))
            except OSError:
                s.close()
                continue
            socks.append(s)
        if len(socks) < count:
            raise ClusterError(f"could not find {count} free ports")
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999


@dataclass
class Node:
    """One gateway: its files and, while it runs, its process."""

    id: str
    home: Path
    port: int
    key: VerifyKey | None = None
    process: ServerProcess = field(init=False)  # ``gateway run``, started again and again
    starts: int = 0
    failed_starts: list[str] = field(default_factory=list)  # why a start did not listen
    start_seconds: list[float] = field(default_factory=list)  # spawn to listening
    ledger_size: int = 0  # entries, read after the run
    inflight: int = 0  # officers' requests to this gateway not answered yet
    members: Roster = field(default_factory=Roster)  # who admits whom to its desks

    def __post_init__(self) -> None:
        self.process = ServerProcess.gateway(
            self.config_path, log=self.log_path, name=self.id, cwd=ROOT,
            start_seconds=START_SECONDS, stop_seconds=STOP_SECONDS)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.home / "gateway.toml"

    @property
    def database(self) -> Path:
        return self.home / "data" / "gateway.sqlite3"

    @property
    def admin_socket(self) -> Path:
        return self.home / "data" / "admin.sock"

    @property
    def log_path(self) -> Path:
        return self.home / "gateway.log"

    @property
    def running(self) -> bool:
        return self.process.running

    @property
    def ready_at(self) -> float:
        """time.monotonic() when the current process started listening."""
        return self.process.ready_at

    # --- files -------------------------------------------------------------------------

    def init(self) -> None:
        """``gateway init`` with a development key; remembers the public key."""
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "init", str(self.home), "--id", self.id,
             "--port", str(self.port), "--insecure-dev-keys"],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise ClusterError(f"gateway init {self.id}: {done.stderr.strip()}")
        owner, public, _ = read_public(self.home / "keys" / "gateway.key")
        assert owner == self.id
        self.key = VerifyKey.from_b64(public[ROLE_GATEWAY_SIGNING], ROLE_GATEWAY_SIGNING)

    def write_config(self, partners: list[Node]) -> None:
        pinned = "".join(
            f'\n[[partners]]\nid = "{p.id}"\nurl = "{p.url}"\n'
            f'fingerprint = "{p.key.fingerprint if p.key else ""}"\n' for p in partners)
        self.config_path.write_text(f"""\
# Crash-suite gateway {self.id} (tests/chaos): development key, loopback only.

[gateway]
id = "{self.id}"
public_url = "{self.url}"
data_dir = "data"

[keys]
file = "keys/gateway.key"
insecure_dev_mode = true

[server]
host = "{HOST}"
port = {self.port}

[ledger]
checkpoint_interval = 0.2

[limits]
requests_per_second = 100000
burst = 1000000
anonymous_per_second = 100000
enroll_per_second = 100000
enroll_burst = 1000000
anonymous_burst = 1000000
signin_address_per_second = 100000
signin_address_burst = 1000000

[log]
level = "warning"
format = "json"

[federation]
retry_first_seconds = 0.05
retry_max_seconds = 0.3
health_seconds = 0.1
request_timeout_seconds = 5.0
directory_max_age_seconds = 1.0
witness_seconds = 0.3

[metrics]
enabled = false
{pinned}""", encoding="utf-8")

    async def add_desks(self, officers: list[str]) -> dict[str, str]:
        """The desks, and one enrollment code per desk in ``officers`` (desk -> code),
        written into the database before the first start, as an operator does."""
        with structlog.testing.capture_logs():  # the store's migration lines: not here
            store = await SqliteStore.open(self.database)
        try:
            now = SystemClock().now_ms()
            existing = {d.name for d in await store.desks()}
            for desk in DESKS:
                if desk not in existing:
                    await store.add_desk(desk, None, now)
            codes = {}
            for desk in officers:
                code = new_code()
                await store.add_enrollment_code(code_hash(code), [desk], now, now + 3_600_000)
                codes[desk] = code
            return codes
        finally:
            await store.close()

    # --- processes ---------------------------------------------------------------------

    async def spawn(self) -> None:
        """Start ``gateway run`` (output appended to the log); does not wait."""
        self.process.spawn()
        self.starts += 1

    def listening(self) -> bool:
        return self.process.listening

    async def start(self) -> None:
        """Start and wait until it listens; a start that ends at once (a busy port just
        after a kill, say) is tried again, a bounded number of times."""
        for attempt in range(START_ATTEMPTS):
            await self.spawn()
            try:
                await self.process.wait_ready_async()
            except ServerExited:
                self.failed_starts.append(f"status {self.process.returncode}: "
                                          f"{self.log_tail(2).strip()}")
                await asyncio.sleep(0.1 * (attempt + 1))
                continue
            except ServerError as exc:
                raise ClusterError(exc.message) from None
            self.start_seconds.append(self.process.ready_at - self.process.spawned_at)
            return
        raise ClusterError(f"{self.id} failed to start {START_ATTEMPTS} times; "
                           f"see {self.log_path}:\n{self.log_tail()}")

    async def kill(self) -> None:
        """SIGKILL the process and reap it."""
        await self.process.kill_async()

    async def stop(self) -> int | None:
        """SIGTERM and wait (killed after STOP_SECONDS); the exit status."""
        try:
            return await self.process.stop_async()
        except ServerError as exc:
            raise ClusterError(exc.message) from None

    def log_tail(self, lines: int = 8) -> str:
        return self.process.log_tail(lines)

    # --- looking inside ----------------------------------------------------------------

    async def partners_report(self) -> dict[str, Any]:
        report: dict[str, Any] = await admin_request(self.admin_socket, "GET", "/partners")
        return report

    def snapshot(self) -> dict[str, int]:
        """Counts read from the database of a stopped (killed) gateway, read-only: what it
        had relayed, received from partners and checkpointed. {} if it cannot be read."""
        queries = {
            "messages": "SELECT count(*) FROM messages",
            "relayed_in": "SELECT count(*) FROM messages WHERE origin != 'local'",
            "receipts": "SELECT count(*) FROM receipts",
            "outbox": "SELECT count(*) FROM outbox",
            "checkpoints": "SELECT count(*) FROM checkpoints",
            "ledger": "SELECT count(*) FROM ledger",
        }
        try:
            with contextlib.closing(sqlite3.connect(f"file:{self.database}?mode=ro",
                                                    uri=True, timeout=5)) as db:
                return {k: int(db.execute(q).fetchone()[0]) for k, q in queries.items()}
        except sqlite3.Error:
            return {}

    def inbox_rows(self) -> list[tuple[str, str]]:
        """(desk address, message id) of every inbox row (the gateway is stopped)."""
        with contextlib.closing(sqlite3.connect(f"file:{self.database}?mode=ro",
                                                uri=True, timeout=5)) as db:
            return [(str(d), str(m)) for d, m in
                    db.execute("SELECT desk, message_id FROM inbox ORDER BY seq")]

    def integrity(self) -> str:
        with contextlib.closing(sqlite3.connect(f"file:{self.database}?mode=ro",
                                                uri=True, timeout=5)) as db:
            self.ledger_size = int(db.execute("SELECT count(*) FROM ledger").fetchone()[0])
            return str(db.execute("PRAGMA integrity_check").fetchone()[0])

    async def verify_ledger(self) -> tuple[int, str]:
        """``gateway ledger verify``: its exit status and output."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "ledger", "verify", "--config",
            str(self.config_path), cwd=ROOT, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 120)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return -1, "gateway ledger verify did not end within 120 s"
        assert proc.returncode is not None
        return proc.returncode, out.decode("utf-8", "replace").strip()


def make_cluster(root: Path, ids: tuple[str, ...], rng: random.Random) -> list[Node]:
    """Keys and configurations of the gateways ``ids`` in ``root`` (each pins the
    others)."""
    ports = pick_ports(len(ids), rng)
    nodes = [Node(gid, root / gid, port) for gid, port in zip(ids, ports, strict=True)]
    for node in nodes:
        node.init()
    for node in nodes:
        node.write_config([n for n in nodes if n is not node])
    return nodes


async def kill_all(nodes: list[Node]) -> None:
    """Whatever is still running (after a failure): SIGKILL, by pid."""
    for node in nodes:
        await node.kill()


"""Relay benchmark: officers' messages crossing from one gateway process to another.

Three gateway processes run on 127.0.0.1, each made the way an operator makes one
(``gateway init --insecure-dev-keys``, ``gateway desks add``, ``gateway officers invite``)
with its own data directory and SQLite file (WAL, ``synchronous=FULL``): ``vn-mps``
(where the officers send), ``kh-cnp`` (where the messages go) and ``la-mps`` (a third
partner of VN, used to play a dead partner). Their ports are chosen before any of them
starts, so that each configuration can pin the others (``[[partners]]``: id, URL, key
fingerprint from ``gateway keys show``). ``--senders`` officers of VN's ``trafficking``
desk sign in; one officer is enrolled on the ``anti-trafficking`` desk of KH and of LA.
VN must know KH's directory (``GET /v1/directory?gateway=kh-cnp`` through VN) before
anything is sealed: envelopes are sealed for KH's desk officer before the clocks start
(1 KiB hotline payload, about 1.5 KiB on the wire) and posted to VN's ``POST
/v1/messages`` by ``bench/http1.py``, the lean keep-alive client of ``bench/accept.py``.
Arrival is read from KH's SQLite file (read-only connections), never from KH's API.

It prints, in one run:

1. **end-to-end throughput**: ``--messages`` envelopes posted to VN by ``--senders``
   concurrent connections (closed loop, only ``201 accepted`` counts), timed from the
   first request to the moment KH's desk inbox holds all of them (each of them committed
   at VN before VN answered, and at KH before KH signed its receipt); plus how fast VN
   accepted them and when VN had recorded every receipt. The default is 64 senders, as
   many officers as ``bench/accept.py`` drives; with fewer, VN's costs per commit and per
   batch are shared by fewer messages (32 gave 2,050 msg/s against 2,258 and 2,495 for 64
   in runs of one hour on 2026-12-04);
2. **flash latency under load**: an open loop of ``--routine-rate`` routine messages a
   second to KH's desk and ``--flash-rate`` flash messages a second (100 by default: a
   p99 of the 300 flash messages a 15-second round held at 20/s was the third-slowest
   message, and rounds of the same condition differed by up to 24 %, more than the 10 %
   that (4) compares), each request started
   on a fixed schedule over a pool of connections; a flash message's latency is
   ``inbox.delivered_ms`` at KH (KH's wall clock, ms) minus the wall time this process
   started writing its request (same machine clock). ``delivered_ms`` is stamped when KH
   starts handling the relay batch, before it verifies and commits it, so the time at
   which the row was first seen committed in KH's database (polled every 10 ms) is shown
   next to it;
3. **backlog drain**: KH is stopped, ``--backlog`` messages (all four priorities) are
   queued at VN, KH is started again; the drain rate runs from KH listening to VN's
   outbox being empty with KH's inbox holding every one of them; then it checks that
   none was lost and none delivered twice;
4. **a dead partner**: the latency measurement of (2) in rounds (in the order up, down,
   down, up, up, down, ...) with LA up (configured, reachable, idle) and LA down (stopped
   after VN fetched its directory, ``--la-backlog`` messages queued for it at VN, so VN
   keeps retrying a partner whose port refuses connections), with the ratio of the flash
   p99s and how far apart rounds of the same condition were.

Everything shares the machine's cores (the three gateways and this load generator); the
cores each process used during each phase are printed from ``/proc`` (with the busiest
other processes, when something else ran), with each gateway's CPU time per message,
and the relay batches read back from the two databases (KH stamps all messages of a
batch with one ``delivered_ms``, VN each receipt with the time it verified it), with
where a batch's time went: from KH starting it until VN has checked its receipts (KH
checking, committing and signing, VN checking), and from then until KH starts the next
batch (negative when VN checks while the next batch is in flight). Benchmark configuration
(said in the output): ``[limits]`` raised as in ``bench/accept.py``, ``[log] level =
warning``, and a ``[federation]`` section with ``health_seconds`` 1 (a stopped partner
is noticed back within a second), ``retry_max_seconds`` 2 (VN keeps retrying a dead
partner every 1-2 s) and ``directory_max_age_seconds`` 1; batch size and the rest are
the gateway's defaults.

Targets on 2 cores: 2,000 messages/s end to end, flash p99 under 100 ms at 500 routine
messages/s, a backlog drain of 2,000 messages/s with none lost or duplicated, and a
flash p99 with a dead partner within 10 % of the one without.

    python bench/relay.py [--quick] [--messages 10000] [--backlog 100000] [--senders 64]
                          [--latency-seconds 15] [--rounds 2] [--flash-rate 100]
                          [--routine-rate 500] [--pool 64] [--la-backlog 2000] [--json]
                          [--keep DIR] [--profile DIR]

``--profile DIR`` records both gateways with py-spy during the throughput and drain
phases and prints where their time goes (those figures then include py-spy's cost).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp
import http1  # bench/http1.py: the lean load client
from accept import (
    LIFETIME_MS,
    REQUEST_TIMEOUT,
    START_TIMEOUT,
    STOP_TIMEOUT,
    Work,
    accepted,
    connections,
    cpu_seconds,
    gateway_command,
    hotline_payload,
    machine_busy_seconds,
    outcome,
    post,
    py_spy,
    raised_limits,
    summarize_profile,
)

from gateway.cli.process import ServerProcess
from gateway.client.api import ENVELOPE_TYPE, Credentials, GatewayClient, enroll
from gateway.client.roster import Roster
from gateway.crypto.envelope import EnvelopeHeader, new_message_id, seal_envelope
from gateway.crypto.keys import EncryptionPublicKey, OfficerEncryptionKey, OfficerSigningKey

VN, KH, LA = "vn-mps", "kh-cnp", "la-mps"
SENDER_DESK = "trafficking"
RECIPIENT_DESK = "anti-trafficking"
PRIORITIES = ("flash", "immediate", "priority", "routine")

TARGET_THROUGHPUT = 2000.0  # messages/s, accepted at VN -> in KH's inbox
TARGET_FLASH_P99_MS = 100.0  # with TARGET_ROUTINE_RATE routine messages/s besides
TARGET_ROUTINE_RATE = 500.0
TARGET_DRAIN = 2000.0  # messages/s
TARGET_DEAD_PARTNER = 0.10  # flash p99 with LA down at most 10 % above LA up

#: The [federation] keys this benchmark sets (everything else is the gateway's default).
FEDERATION = {"health_seconds": 1.0, "retry_max_seconds": 2.0,
              "directory_max_age_seconds": 1.0}
POLL_SECONDS = 0.01  # how often KH's inbox is read during the latency rounds
PROGRESS_POLL_SECONDS = 0.05  # during the throughput phase and the drain
SETTLE_SECONDS = 1.0  # between phases: checkpoints and WAL work settle


# --- gateway processes -----------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports nothing listens on now (bound once, then released)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


@dataclass
class Gateway:
    """One ``gateway run`` process with its own directory, port and SQLite file."""

    id: str
    directory: Path
    port: int
    fingerprint: str = ""
    process: ServerProcess = field(init=False)  # its ``gateway run``, once started
    listening_at: float = 0.0  # wall time the port file appeared
    start_seconds: float = 0.0  # from the command to listening (ledger check included)
    roster: Roster = field(default_factory=Roster)  # who admits whom to its desks

    def __post_init__(self) -> None:
        self.process = ServerProcess.gateway(self.config, name=self.id,
                                             start_seconds=START_TIMEOUT,
                                             stop_seconds=STOP_TIMEOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config(self) -> Path:
        return self.directory / "gateway.toml"

    @property
    def database(self) -> Path:
        return self.directory / "data" / "gateway.sqlite3"

    @property
    def pid(self) -> int:
        return self.process.pid

    def init(self) -> None:
        """``gateway init`` on the chosen port; read the key fingerprint back."""
        gateway_command("init", str(self.directory), "--id", self.id, "--port",
                        str(self.port), "--metrics-port", "0", "--insecure-dev-keys")
        shown = gateway_command("keys", "show", "--config", str(self.config))
        self.fingerprint = shown.split("fingerprint: ", 1)[1].splitlines()[0].strip()

    def configure(self, partners: Sequence[Gateway]) -> None:
        """Quiet logs, raised limits, the benchmark's [federation] keys, pinned partners."""
        text = self.config.read_text()
        tuned = text.replace('[log]\nlevel = "info"', '[log]\nlevel = "warning"')
        if tuned == text:
            raise RuntimeError(f"{self.config}: cannot find the [log] level that init writes")
        tuned += ("\n# bench/relay.py: no rate limiter may cap the measurement or the setup\n"
                  "[limits]\n"
                  + "".join(f"{k} = {v}\n" for k, (v, _) in raised_limits().items())
                  + "\n[federation]\n" + "".join(f"{k} = {v}\n" for k, v in FEDERATION.items()))
        for p in partners:
            tuned += (f'\n[[partners]]\nid = "{p.id}"\nurl = "{p.url}"\n'
                      f'fingerprint = "{p.fingerprint}"\n')
        self.config.write_text(tuned)
        gateway_command("config", "check", "--config", str(self.config))

    def start(self) -> None:
        began = time.time()
        port = self.process.start()
        self.listening_at = time.time()
        self.start_seconds = self.listening_at - began
        if port != self.port:
            raise RuntimeError(f"{self.id} listens on {port}, not on its pinned port {self.port}")

    def stop(self) -> None:
        self.process.stop()

    def running(self) -> bool:
        return self.process.running

    def check_running(self) -> None:
        if not self.running():
            raise RuntimeError(f"{self.id} exited during the run:\n{self.process.log_tail()}")

    def read(self) -> Database:
        return Database(self.database)


class Database:
    """A read-only connection to a gateway's SQLite file (WAL: it never blocks the writer)."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10,
                                    isolation_level=None)

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()

    def rows(self, sql: str, *params: Any) -> list[Any]:
        return self.conn.execute(sql, params).fetchall()

    def one(self, sql: str, *params: Any) -> Any:
        return self.conn.execute(sql, params).fetchone()[0]

    def inbox_seq(self) -> int:
        return int(self.one("SELECT coalesce(max(seq), 0) FROM inbox"))

    def inbox_count(self, after: int) -> int:
        """Rows added to the inbox after row ``after``, from the largest row number: the
        inbox only grows and its AUTOINCREMENT numbers leave no gaps (a rolled-back insert
        rolls its number back too), so this is a count without a scan."""
        return self.inbox_seq() - after

    def outbox(self, partner: str) -> int:
        return int(self.one("SELECT COUNT(*) FROM outbox WHERE partner = ?", partner))

    def failures(self, partner: str) -> int:
        rows = self.rows("SELECT failures FROM partner_state WHERE partner = ?", partner)
        return int(rows[0][0]) if rows else 0


class Processes:
    """Every process this benchmark starts, stopped at exit whatever happens."""

    def __init__(self) -> None:
        self.gateways: list[Gateway] = []
        self.others: list[subprocess.Popen[bytes]] = []

    def stop_all(self) -> None:
        for proc in self.others:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for gw in self.gateways:
            with contextlib.suppress(Exception):
                gw.stop()


PROCESSES = Processes()


# --- CPU ---------------------------------------------------------------------------------


def process_times() -> dict[int, float]:
    """CPU seconds so far of every process on the machine (Linux; empty elsewhere)."""
    out: dict[int, float] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                seconds = cpu_seconds(int(entry.name))
                if seconds is not None:
                    out[int(entry.name)] = seconds
    return out


def command_of(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return f"pid {pid}"
    words = [Path(w.decode(errors="replace")).name if i == 0 else w.decode(errors="replace")
             for i, w in enumerate(argv) if w]
    text = " ".join(words) or f"pid {pid}"
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class Meter:
    """Cores used over a window by each gateway (and its event-loop thread), by this
    process and by everything else on the machine; the busiest other processes (of those
    alive at both ends of the window) are named."""

    gateways: Sequence[Gateway]
    cores: dict[str, float | None] = field(default_factory=dict)
    _start: dict[str, float | None] = field(default_factory=dict)
    _procs: dict[int, float] = field(default_factory=dict)
    _t: float = 0.0

    def _sample(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for gw in self.gateways:
            out[gw.id] = cpu_seconds(gw.pid)
            out[f"{gw.id} loop"] = cpu_seconds(gw.pid, gw.pid)
        out["generator"] = time.process_time()
        out["machine"] = machine_busy_seconds()
        return out

    def begin(self) -> None:
        self._procs = process_times()
        self._start, self._t = self._sample(), time.perf_counter()

    def end(self) -> dict[str, float | None]:
        end, seconds = self._sample(), max(1e-9, time.perf_counter() - self._t)
        procs = process_times()
        used: dict[str, float | None] = {}
        for k, v in end.items():
            s = self._start.get(k)
            used[k] = None if v is None or s is None else round((v - s) / seconds, 2)
        machine = used.pop("machine")
        if machine is not None:
            known = sum(v or 0.0 for k, v in used.items() if not k.endswith(" loop"))
            used["others"] = round(max(0.0, machine - known), 2)
        ours = {os.getpid(), *(gw.pid for gw in self.gateways),
                *(p.pid for p in PROCESSES.others)}
        busy = sorted(((t - self._procs[pid]) / seconds, pid) for pid, t in procs.items()
                      if pid in self._procs and pid not in ours)
        for share, pid in reversed(busy[-3:]):
            if share >= 0.05:
                used[f"other: {command_of(pid)}"] = round(share, 2)
        self.cores = used
        return used


def show_cores(cores: dict[str, float | None]) -> str:
    parts, named = [], []
    for k, v in cores.items():
        if v is None or k.endswith(" loop"):
            continue
        if k.startswith("other: "):
            named.append(f"{k[7:]} {v:.2f}")
            continue
        loop = cores.get(f"{k} loop")
        parts.append(f"{k} {v:.2f}" + (f" (loop thread {loop:.2f})" if loop is not None else ""))
    return "cores: " + ", ".join(parts) + (f" [busiest others: {'; '.join(named)}]"
                                           if named else "")


class Spy:
    """py-spy on some processes for an open-ended window (``--profile``)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.running: list[tuple[str, Path, subprocess.Popen[bytes]]] = []
        self.summaries: dict[str, Any] = {}

    def start(self, phase: str, gateways: Sequence[Gateway]) -> None:
        spy = py_spy()
        if self.directory is None or spy is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        for gw in gateways:
            path = self.directory / f"{phase}-{gw.id}.txt"
            path.unlink(missing_ok=True)
            proc = subprocess.Popen(
                [spy, "record", "-p", str(gw.pid), "-f", "raw", "--threads", "--nonblocking",
                 "-r", "100", "-o", str(path)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            PROCESSES.others.append(proc)
            self.running.append((f"{phase} {gw.id}", path, proc))

    def stop(self) -> None:
        for name, path, proc in self.running:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # py-spy writes its file and exits
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
            self.summaries[name] = ({"file": str(path), **summarize_profile(path, top=12)}
                                    if path.exists() else {"error": f"py-spy wrote no {path}"})
        self.running = []


# --- officers and envelopes ---------------------------------------------------------------


@dataclass
class Sender:
    creds: Credentials
    headers: dict[str, str]  # Authorization and Content-Type, built once

    @property
    def desk(self) -> str:
        return self.creds.desks[0]


@dataclass
class Target:
    """A partner desk, with the keys its envelopes are sealed for."""

    address: str
    recipients: list[EncryptionPublicKey]


def invite(gw: Gateway, desk: str, count: int) -> list[str]:
    return [gateway_command("officers", "invite", "--desk", desk, "--config",
                            str(gw.config)).strip() for _ in range(count)]


async def join(http: aiohttp.ClientSession, gw: Gateway, code: str) -> Credentials:
    creds, answer = await enroll(http, gw.url, code, OfficerSigningKey.generate(),
                                 OfficerEncryptionKey.generate(), fingerprint=gw.fingerprint)
    await gw.roster.join(http, creds, answer)  # the desk's first officer admits the others
    return creds


async def partner_desk(client: GatewayClient, gateway: str, seconds: float = 30.0) -> Target:
    """Wait until the officer's home gateway answers the partner's directory with an
    enrolled officer on the recipient desk (``GET /v1/directory?gateway=...``)."""
    address = f"{RECIPIENT_DESK}@{gateway}"
    deadline = time.monotonic() + seconds
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            desk = (await client.directory(refresh=True, gateway=gateway)).get(address)
            if desk is not None and desk.members:
                return Target(address, desk.encryption_keys())
        except Exception as exc:  # not known yet (503), partner not answered yet
            last = exc
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{client.creds.gateway_id} did not learn the directory of {gateway} "
                       f"within {seconds:g} s (last error: {last})")


def seal(sender: Sender, body: bytes, target: Target, priority: str, port: int) -> Work:
    """One complete ``POST /v1/messages`` request with a fresh envelope, and its id."""
    mid = new_message_id()
    now = int(time.time() * 1000)
    header = EnvelopeHeader(id=mid, kind="hotline", priority=priority, sender=sender.desk,
                            recipient=target.address, created=now, expires=now + LIFETIME_MS,
                            thread=mid)
    envelope = seal_envelope(header, body, sender.creds.signing, target.recipients)
    return http1.request_bytes("POST", "127.0.0.1", port, "/v1/messages", sender.headers,
                               envelope), mid


def seal_many(senders: Sequence[Sender], body: bytes, target: Target, priority: str,
              port: int, count: int) -> list[Work]:
    return [seal(senders[i % len(senders)], body, target, priority, port)
            for i in range(count)]


def lazily(sender: Sender, body: bytes, target: Target, port: int, count: int,
           offset: int) -> Iterator[Work]:
    """``count`` envelopes sealed as they are needed, all four priorities in turn."""
    for k in range(count):
        yield seal(sender, body, target, PRIORITIES[((offset + k) * 7) % 4], port)


def split(items: Sequence[Work], parts: int) -> list[list[Work]]:
    return [list(items[i::parts]) for i in range(parts)]


# --- load ----------------------------------------------------------------------------------


@dataclass
class Closed:
    ids: list[str] = field(default_factory=list)  # accepted, in answer order
    refused: Counter[str] = field(default_factory=Counter)
    first_send: float = 0.0  # wall time
    last_answer: float = 0.0  # wall time


async def closed_loop(port: int, work: Sequence[Iterable[Work]], bound: float) -> Closed:
    """Worker ``i`` posts ``work[i]`` one request after another on its own connection;
    every answer is checked. Ends when all work is answered, or fails after ``bound`` s."""
    result = Closed()
    conns = await connections(port, len(work))

    async def worker(i: int, items: Iterable[Work]) -> None:
        for request, mid in items:
            try:
                status, data = await post(conns, port, i, request)
            except (OSError, http1.ResponseError) as exc:
                result.refused[type(exc).__name__] += 1
                continue
            if accepted(status, data, mid):
                result.ids.append(mid)
            else:
                result.refused[outcome(status, data)] += 1

    result.first_send = time.time()
    tasks = [asyncio.create_task(worker(i, w)) for i, w in enumerate(work)]
    try:
        done, pending = await asyncio.wait(tasks, timeout=bound)
        if pending:
            raise RuntimeError(f"the closed loop did not finish within {bound:g} s")
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in conns:
            conn.close()
    result.last_answer = time.time()
    return result


async def until(check: Callable[[], bool], what: str, seconds: float,
                every: float = 0.05) -> float:
    """Poll ``check`` until true; the wall time it was; fail naming ``what`` after
    ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        if check():
            return time.time()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {seconds:g} s waiting for {what}")
        await asyncio.sleep(every)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else math.nan


def stats(values: Sequence[float]) -> dict[str, Any]:
    """p50, p99 and max of latencies in ms, with how many there were."""
    def r(v: float) -> float | None:
        return None if math.isnan(v) else round(v, 2)

    return {"n": len(values), "p50_ms": r(percentile(values, 0.50)),
            "p99_ms": r(percentile(values, 0.99)), "max_ms": r(max(values, default=math.nan))}


def relay_batches(kh_rows: Sequence[tuple[str, int]], vndb: Database) -> dict[str, Any]:
    """The relay batches that carried ``kh_rows`` (KH's inbox rows: message id,
    delivered_ms, in row order), and where each batch's time went.

    KH stamps every message of a batch with one time, taken when it starts handling the
    batch (after reading the body and checking the hop signature), so messages sharing a
    ``delivered_ms`` came in one batch. VN checks a batch's receipts together (one job on
    its signature workers) while its next batch is already on its way, and then stamps
    each receipt's ``received_ms``. Per batch (one machine, one clock): ``kh``: KH's start
    -> VN has stamped the first receipt (KH checks, stores and commits the batch, signs the
    receipts, answers; VN reads the answer and checks every receipt); ``vn_receipts``:
    first -> last receipt stamped at VN (near zero); ``vn_between``: last receipt stamped
    -> KH starts the next batch, negative when the next batch started first (VN checks the
    receipts while the next batch is in flight); positive values are idle time as well
    when VN's outbox was empty. The cycle is KH's start to KH's next start."""
    received = {mid: ms for mid, ms in vndb.rows(
        "SELECT message_id, received_ms FROM receipts WHERE partner = ?", KH)}
    groups: dict[int, list[str]] = {}
    for mid, delivered in kh_rows:
        groups.setdefault(delivered, []).append(mid)
    starts = sorted(groups)
    kh, verify, between = [], [], []
    for i, start in enumerate(starts):
        got = [received[m] for m in groups[start] if m in received]
        if not got:
            continue
        kh.append(min(got) - start)
        verify.append(max(got) - min(got))
        if i + 1 < len(starts):
            between.append(starts[i + 1] - max(got))
    sizes = [len(groups[t]) for t in starts]

    def mean(values: Sequence[float]) -> float | None:
        return round(sum(values) / len(values), 1) if values else None

    return {"batches": len(starts), "mean_size": mean(sizes), "max_size": max(sizes, default=0),
            "mean_cycle_ms": mean([b - a for a, b in pairwise(starts)]),
            "kh_ms": mean(kh), "vn_receipts_ms": mean(verify), "vn_between_ms": mean(between)}


def cpu_per_message(cores: dict[str, float | None], rate: float,
                    gateways: Sequence[str] = (VN, KH)) -> str:
    """CPU time each gateway spent per message carried (all its work in the window:
    accepting, relaying, receiving), over a window at ``rate`` messages/s."""
    parts = [f"{g} {(cores.get(g) or 0.0) / rate * 1e6:,.0f} us (event loop thread "
             f"{(cores.get(f'{g} loop') or 0.0) / rate * 1e6:,.0f} us)" for g in gateways]
    return "CPU per message carried: " + ", ".join(parts)


def show_batches(b: dict[str, Any]) -> str:
    if not b.get("batches"):
        return "relay batches: none seen"
    per = b["mean_size"] or 1.0

    def part(name: str, key: str) -> str:
        v = b[key]
        return "n/a" if v is None else f"{name} {v:,.0f} ms ({v / per * 1000:,.0f} us/msg)"

    return (f"relay batches: {b['batches']:,}, mean size {b['mean_size']:,.0f} (max "
            f"{b['max_size']}), one every {b['mean_cycle_ms'] or 0:,.0f} ms on average; "
            + ", ".join((part("KH starts -> VN has checked the receipts", "kh_ms"),
                         part("VN stamps receipts", "vn_receipts_ms"),
                         part("then KH starts the next batch (negative: it started while "
                              "VN checked)", "vn_between_ms"))))


# --- 1. throughput -------------------------------------------------------------------------


async def throughput(vn: Gateway, kh: Gateway, la: Gateway, senders: Sequence[Sender],
                     body: bytes, target: Target, count: int, spy: Spy) -> dict[str, Any]:
    t = time.perf_counter()
    work = split(seal_many(senders, body, target, "routine", vn.port, count), len(senders))
    seal_seconds = time.perf_counter() - t
    gc.collect()
    with kh.read() as khdb, vn.read() as vndb:
        base = khdb.inbox_seq()
        arrived = {"kh": 0.0, "vn": 0.0}
        sending = True
        expected = count  # until the closed loop has ended: then the number accepted

        async def watch() -> None:
            deadline = time.monotonic() + 120 + count / 100
            while time.monotonic() < deadline:
                now = time.time()
                if not arrived["kh"] and khdb.inbox_count(base) >= expected:
                    arrived["kh"] = now
                if not sending and not arrived["vn"] and vndb.outbox(KH) == 0:
                    arrived["vn"] = now
                if arrived["kh"] and arrived["vn"]:
                    return
                await asyncio.sleep(PROGRESS_POLL_SECONDS)

        meter = Meter([vn, kh, la])
        meter.begin()
        spy.start("throughput", [vn, kh])
        watcher = asyncio.create_task(watch())
        try:
            loop = await closed_loop(vn.port, work, bound=120 + count / 100)
            expected, sending = len(loop.ids), False
            await watcher  # bounded by its own deadline
        finally:
            spy.stop()
            watcher.cancel()
            cores = meter.end()
        del work
        if not arrived["kh"] or not arrived["vn"]:
            raise RuntimeError("the throughput phase did not complete in its time bound")
        rows = khdb.rows("SELECT message_id, delivered_ms FROM inbox WHERE seq > ? ORDER BY seq",
                         base)
        batches = relay_batches(rows, vndb)
    delivered = dict(rows)
    lost = len(set(loop.ids) - delivered.keys())
    end_to_end = arrived["kh"] - loop.first_send
    accept_seconds = loop.last_answer - loop.first_send
    return {
        "messages": count, "accepted": len(loop.ids), "refused": dict(loop.refused),
        "seal_seconds_before_clock": round(seal_seconds, 1),
        "end_to_end_per_second": round(len(loop.ids) / end_to_end),
        "end_to_end_seconds": round(end_to_end, 2),
        "vn_accept_per_second": round(len(loop.ids) / accept_seconds),
        "vn_accept_seconds": round(accept_seconds, 2),
        "kh_all_in_after_last_accept_s": round(arrived["kh"] - loop.last_answer, 2),
        "vn_receipts_all_recorded_s": round(arrived["vn"] - loop.first_send, 2),
        "lost": lost, "extra_in_kh_inbox": len(delivered.keys() - set(loop.ids)),
        "cores": cores, "relay": batches,
    }


# --- 2 and 4. flash latency, with LA up and with LA down -----------------------------------


@dataclass
class Round:
    condition: str
    flash: list[float] = field(default_factory=list)  # delivered_ms - send start, ms
    flash_seen: list[float] = field(default_factory=list)  # first seen committed - send start
    flash_http: list[float] = field(default_factory=list)  # VN's answer - send start
    routine: list[float] = field(default_factory=list)  # delivered_ms - send start
    sent: int = 0
    accepted: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    late_starts: list[float] = field(default_factory=list)  # s after schedule
    seconds: float = 0.0
    cores: dict[str, float | None] = field(default_factory=dict)
    la_failures: tuple[int, int] = (0, 0)  # VN's failure count for LA at start and end
    la_queued: int = 0
    relay: dict[str, Any] = field(default_factory=dict)


async def latency_round(condition: str, vn: Gateway, kh: Gateway, la: Gateway,
                        routine: list[Work],
                        flash: list[Work], seconds: float, routine_rate: float,
                        flash_rate: float, pool: int) -> Round:
    """Open loop: routine ``i`` starts at ``t0 + i / routine_rate``, flash ``j`` at
    ``t0 + (j + 0.5) / flash_rate``, each on the first free connection of ``pool``."""
    result = Round(condition)
    schedule = sorted([(i / routine_rate, False, w) for i, w in enumerate(routine)]
                      + [((j + 0.5) / flash_rate, True, w) for j, w in enumerate(flash)],
                      key=lambda s: s[0])
    loop = asyncio.get_running_loop()
    conns = await connections(vn.port, pool)
    free: asyncio.Queue[int] = asyncio.Queue()
    for i in range(pool):
        free.put_nowait(i)
    started: dict[str, float] = {}  # wall ms when its request started, accepted ones
    answered: dict[str, float] = {}
    flash_ids: set[str] = set()
    seen: dict[str, float] = {}  # wall ms this process first saw it committed at KH

    async def one(request: bytes, mid: str, scheduled: float, is_flash: bool) -> None:
        i = await free.get()
        result.late_starts.append(loop.time() - scheduled)
        start = time.time() * 1000
        try:
            status, data = await post(conns, vn.port, i, request)
        except (OSError, http1.ResponseError) as exc:
            result.refused[type(exc).__name__] += 1
            return
        finally:
            free.put_nowait(i)
        if accepted(status, data, mid):
            result.accepted += 1
            started[mid] = start
            answered[mid] = time.time() * 1000
            if is_flash:
                flash_ids.add(mid)
        else:
            result.refused[outcome(status, data)] += 1

    with kh.read() as khdb, vn.read() as vndb:
        base = last = khdb.inbox_seq()

        async def poll() -> None:
            nonlocal last
            while True:
                rows = khdb.rows("SELECT seq, message_id FROM inbox WHERE seq > ?", last)
                now = time.time() * 1000
                for seq, mid in rows:
                    seen.setdefault(mid, now)
                    last = max(last, seq)
                await asyncio.sleep(POLL_SECONDS)

        poller = asyncio.create_task(poll())
        tasks: set[asyncio.Task[None]] = set()
        la_before = vndb.failures(LA)
        meter = Meter([g for g in (vn, kh, la) if g.running()])
        meter.begin()
        t0 = loop.time() + 0.05
        try:
            for offset, is_flash, (request, mid) in schedule:
                scheduled = t0 + offset
                delay = scheduled - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(one(request, mid, scheduled, is_flash))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                result.sent += 1
            if tasks:
                await asyncio.wait(set(tasks), timeout=REQUEST_TIMEOUT + 5)
            result.seconds = loop.time() - t0
            result.cores = meter.end()
            result.la_failures = (la_before, vndb.failures(LA))
            result.la_queued = vndb.outbox(LA)
            with contextlib.suppress(RuntimeError):  # what is missing then counts as lost
                await until(lambda: started.keys() <= seen.keys(), "the round's messages at KH",
                            60 + len(schedule) / 100)
        finally:
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
            for conn in conns:
                conn.close()
        await until(lambda: vndb.outbox(KH) == 0, "VN's receipts from KH",
                    60 + len(schedule) / 100)
        rows = khdb.rows("SELECT message_id, delivered_ms FROM inbox WHERE seq > ? ORDER BY seq",
                         base)
        result.relay = relay_batches(rows, vndb)
    delivered = dict(rows)
    for mid, start in started.items():
        if mid not in delivered:
            result.lost += 1
            continue
        latency = delivered[mid] - start
        if mid in flash_ids:
            result.flash.append(latency)
            result.flash_http.append(answered[mid] - start)
            if mid in seen:
                result.flash_seen.append(seen[mid] - start)
        else:
            result.routine.append(latency)
    return result


async def la_down(vn: Gateway, la: Gateway, senders: Sequence[Sender], body: bytes,
                  target: Target, count: int) -> int:
    """Stop LA, queue ``count`` messages for it at VN, wait until VN has failed to reach
    it; how many are queued."""
    la.stop()
    work = split(seal_many(senders, body, target, "routine", vn.port, count), len(senders))
    with vn.read() as vndb:
        failures = vndb.failures(LA)
        loop = await closed_loop(vn.port, work, bound=120 + count / 100)
        if loop.refused:
            raise RuntimeError(f"VN refused messages for the stopped LA: {dict(loop.refused)}")
        await until(lambda: vndb.failures(LA) > failures, "VN's failed attempt at LA", 30.0)
        return vndb.outbox(LA)


async def la_up(vn: Gateway, la: Gateway) -> None:
    """Start LA again and wait until VN has relayed it everything queued."""
    la.start()
    with vn.read() as vndb:
        await until(lambda: vndb.outbox(LA) == 0, "VN's outbox for LA to drain", 120.0)


def summarize_rounds(rounds: Sequence[Round], condition: str) -> dict[str, Any]:
    mine = [r for r in rounds if r.condition == condition]
    flash = [x for r in mine for x in r.flash]
    return {
        "rounds": len(mine),
        "seconds": round(sum(r.seconds for r in mine), 1),
        "sent": sum(r.sent for r in mine), "accepted": sum(r.accepted for r in mine),
        "refused": dict(sum((r.refused for r in mine), Counter())),
        "lost": sum(r.lost for r in mine),
        "flash": stats(flash),
        "flash_seen_committed": stats([x for r in mine for x in r.flash_seen]),
        "flash_vn_answer": stats([x for r in mine for x in r.flash_http]),
        "routine": stats([x for r in mine for x in r.routine]),
        "flash_p99_per_round_ms": [stats(r.flash)["p99_ms"] for r in mine],
        "generator_lag_p99_ms": round(percentile(
            [x for r in mine for x in r.late_starts], 0.99) * 1000, 2),
        "cores_per_round": [r.cores for r in mine],
        "la_failures_during": [r.la_failures[1] - r.la_failures[0] for r in mine],
        "la_queued": [r.la_queued for r in mine],
        "relay_per_round": [r.relay for r in mine],
    }


async def latency(vn: Gateway, kh: Gateway, la: Gateway, senders: Sequence[Sender],
                  body: bytes, kh_desk: Target, la_desk: Target,
                  args: argparse.Namespace) -> dict[str, Any]:
    n_routine = round(args.routine_rate * args.latency_seconds)
    n_flash = max(1, round(args.flash_rate * args.latency_seconds))
    rounds: list[Round] = []
    seal_seconds = 0.0
    # A B B A B A A B ...: every pair of rounds has both conditions, and the order flips
    # from one pair to the next, so a drift of the machine's speed over the run does not
    # fall on one condition only.
    order = [c for k in range(args.rounds)
             for c in (("la-up", "la-down") if k % 2 == 0 else ("la-down", "la-up"))]
    for i, condition in enumerate(order):
        k = sum(1 for c in order[:i + 1] if c == condition)
        if condition == "la-down" and la.running():
            queued = await la_down(vn, la, senders, body, la_desk, args.la_backlog)
            if queued < args.la_backlog:
                raise RuntimeError(f"only {queued} messages queued for LA at VN")
        elif condition == "la-up" and not la.running():
            await la_up(vn, la)
        await asyncio.sleep(SETTLE_SECONDS)
        t = time.perf_counter()
        routine = seal_many(senders, body, kh_desk, "routine", vn.port, n_routine)
        flash = seal_many(senders, body, kh_desk, "flash", vn.port, n_flash)
        seal_seconds += time.perf_counter() - t
        gc.collect()
        await asyncio.sleep(SETTLE_SECONDS / 2)
        vn.check_running()
        kh.check_running()
        rounds.append(await latency_round(condition, vn, kh, la, routine, flash,
                                          args.latency_seconds, args.routine_rate,
                                          args.flash_rate, args.pool))
        print(f"  round {k} {condition}: flash p99 "
              f"{_ms(stats(rounds[-1].flash)['p99_ms'])}", file=sys.stderr, flush=True)
    if not la.running():
        await la_up(vn, la)  # leave LA up and drained for what follows
    up, down = summarize_rounds(rounds, "la-up"), summarize_rounds(rounds, "la-down")
    return {"routine_rate": args.routine_rate, "flash_rate": args.flash_rate,
            "seconds_per_round": args.latency_seconds, "pool": args.pool,
            "la_backlog": args.la_backlog, "seal_seconds_before_clock": round(seal_seconds, 1),
            "order": order, "la_up": up, "la_down": down}


# --- 3. backlog drain ----------------------------------------------------------------------


async def backlog(vn: Gateway, kh: Gateway, la: Gateway, senders: Sequence[Sender],
                  body: bytes, target: Target, count: int, spy: Spy) -> dict[str, Any]:
    with kh.read() as khdb:
        base = khdb.inbox_seq()
        mbase = int(khdb.one("SELECT coalesce(max(mseq), 0) FROM messages"))
    kh.stop()
    per = [count // len(senders) + (1 if i < count % len(senders) else 0)
           for i in range(len(senders))]
    offsets = [sum(per[:i]) for i in range(len(senders))]
    work = [lazily(s, body, target, vn.port, n, o)
            for s, n, o in zip(senders, per, offsets, strict=True)]
    loop = await closed_loop(vn.port, work, bound=300 + count / 50)
    queue_seconds = loop.last_answer - loop.first_send
    ids = set(loop.ids)
    with vn.read() as vndb:
        queued = vndb.outbox(KH)
    if queued != len(ids):
        raise RuntimeError(f"VN's outbox for KH holds {queued}, not the {len(ids)} accepted")
    await asyncio.sleep(SETTLE_SECONDS)

    kh.start()  # the clock starts when KH listens again
    meter = Meter([vn, kh, la])
    meter.begin()
    spy.start("drain", [vn, kh])
    progress: list[tuple[float, int]] = []
    try:
        with vn.read() as vndb, kh.read() as khdb:
            def drained() -> bool:
                inbox = khdb.inbox_count(base)
                progress.append((time.time(), inbox))
                return inbox >= len(ids) and vndb.outbox(KH) == 0  # (counted only at the end)

            done = await until(drained, "the backlog to drain", 120 + count / 50,
                               every=PROGRESS_POLL_SECONDS)
            cores = meter.end()
    finally:
        spy.stop()
    with kh.read() as khdb, vn.read() as vndb:
        rows = khdb.rows("SELECT message_id, delivered_ms FROM inbox WHERE seq > ? ORDER BY seq",
                         base)
        stored = [r[0] for r in khdb.rows("SELECT id FROM messages WHERE mseq > ?", mbase)]
        batches = relay_batches(rows, vndb)
        receipts = Counter(outcome for mid, outcome in vndb.rows(
            "SELECT message_id, outcome FROM receipts WHERE partner = ?", KH) if mid in ids)
    arrived = [r[0] for r in rows]
    delivered_ms = [r[1] for r in rows if r[0] in ids]
    first, last = min(delivered_ms, default=0) / 1000, max(delivered_ms, default=0) / 1000
    drain_seconds = done - kh.listening_at
    half = next((t for t, n in progress if n >= len(ids) / 2), done)
    return {
        "messages": count, "queued": len(ids), "refused_while_queueing": dict(loop.refused),
        "queue_per_second": round(len(ids) / queue_seconds),
        "queue_seconds": round(queue_seconds, 1),
        "kh_start_seconds": round(kh.start_seconds, 2),
        "drain_per_second": round(len(ids) / drain_seconds),
        "drain_seconds": round(drain_seconds, 2),
        "first_delivery_after_listening_s": round(first - kh.listening_at, 2),
        "first_to_last_delivery_per_second": round(len(ids) / max(1e-3, last - first)),
        "half_drained_after_s": round(half - kh.listening_at, 2),
        "arrived": len(arrived), "distinct_arrived": len(set(arrived)),
        "kh_messages_rows": len(stored), "kh_messages_missing": len(ids - set(stored)),
        "lost": len(ids - set(arrived)), "duplicated": len(arrived) - len(set(arrived)),
        "unexpected": len(set(arrived) - ids),
        "vn_receipts": dict(receipts), "vn_outbox_left": 0,
        "cores": cores, "relay": batches,
    }


# --- setup and main ------------------------------------------------------------------------


async def setup(vn: Gateway, kh: Gateway, la: Gateway,
                senders_count: int) -> tuple[list[Sender], Target, Target]:
    for gw in (vn, kh, la):
        for desk in (SENDER_DESK, RECIPIENT_DESK):
            gateway_command("desks", "add", desk, "--config", str(gw.config))
    codes = invite(vn, SENDER_DESK, senders_count)
    kh_code, la_code = invite(kh, RECIPIENT_DESK, 1)[0], invite(la, RECIPIENT_DESK, 1)[0]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) \
            as http:
        kh.start()
        la.start()
        await join(http, kh, kh_code)
        await join(http, la, la_code)
        vn.start()
        # One at a time: each enrollment reloads the gateway's directory.
        enrolled = [await join(http, vn, code) for code in codes]
        clients = [GatewayClient(http, creds) for creds in enrolled]
        await asyncio.gather(*(c.sign_in() for c in clients))
        kh_desk = await partner_desk(clients[0], KH)
        la_desk = await partner_desk(clients[0], LA)
        # The whole path once through the client library, before anything is timed.
        with kh.read() as khdb, la.read() as ladb:
            kh_base, la_base = khdb.inbox_seq(), ladb.inbox_seq()
            for client, address in ((clients[0], kh_desk.address), (clients[-1],
                                                                     la_desk.address)):
                answer = await client.send("hotline", address,
                                           {"type": "hotline", "text": "bench: path check"},
                                           priority="flash")
                if answer.get("status") != "accepted":
                    raise RuntimeError(f"the check message was not accepted: {answer}")
            await until(lambda: khdb.inbox_count(kh_base) == 1, "the check message at KH", 30)
            await until(lambda: ladb.inbox_count(la_base) == 1, "the check message at LA", 30)
        senders = []
        for client in clients:
            token = client._token  # the session the library just opened
            assert token is not None
            senders.append(Sender(client.creds, {"Authorization": f"Bearer {token}",
                                                 "Content-Type": ENVELOPE_TYPE}))
    return senders, kh_desk, la_desk


async def measure_all(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    ports = free_ports(3)
    vn, kh, la = (Gateway(name, root / name, port)
                  for name, port in zip((VN, KH, LA), ports, strict=True))
    PROCESSES.gateways += [vn, kh, la]
    for gw in (vn, kh, la):
        gw.init()
    vn.configure([kh, la])
    kh.configure([vn])
    la.configure([vn])
    spy = Spy(args.profile)
    t = time.perf_counter()
    senders, kh_desk, la_desk = await setup(vn, kh, la, args.senders)
    body = hotline_payload()
    results: dict[str, Any] = {
        "cpu_cores": os.cpu_count(), "senders": args.senders,
        "envelope_bytes": len(seal(senders[0], body, kh_desk, "flash", vn.port)[0])
        - len(http1.request_bytes("POST", "127.0.0.1", vn.port, "/v1/messages",
                                  senders[0].headers, b"")),
        "federation": dict(FEDERATION), "limits": {k: v for k, (v, _) in raised_limits().items()},
        "setup_seconds": round(time.perf_counter() - t, 1),
    }
    await asyncio.sleep(SETTLE_SECONDS)
    progress("end-to-end throughput")
    results["throughput"] = await throughput(vn, kh, la, senders, body, kh_desk, args.messages,
                                             spy)
    for gw in (vn, kh, la):
        gw.check_running()
    await asyncio.sleep(SETTLE_SECONDS)
    progress("flash latency, LA up and LA down in turn")
    results["latency"] = await latency(vn, kh, la, senders, body, kh_desk, la_desk, args)
    await asyncio.sleep(SETTLE_SECONDS)
    progress(f"backlog of {args.backlog:,} while KH is stopped, then its drain")
    results["backlog"] = await backlog(vn, kh, la, senders, body, kh_desk, args.backlog, spy)
    for gw in (vn, kh, la):
        gw.check_running()
    results["profiles"] = spy.summaries
    up, down = results["latency"]["la_up"], results["latency"]["la_down"]
    tp, bl = results["throughput"], results["backlog"]
    p99_up, p99_down = up["flash"]["p99_ms"], down["flash"]["p99_ms"]
    ratio = p99_down / p99_up if p99_up and p99_down else math.nan
    results["dead_partner_p99_ratio"] = None if math.isnan(ratio) else round(ratio, 3)
    results["met"] = {
        "throughput": tp["end_to_end_per_second"] >= TARGET_THROUGHPUT and not tp["lost"]
        and not tp["refused"],
        "flash_p99": p99_up is not None and p99_up < TARGET_FLASH_P99_MS and not up["lost"]
        and not up["refused"],
        "drain": bl["drain_per_second"] >= TARGET_DRAIN,
        "drain_integrity": bl["lost"] == 0 and bl["duplicated"] == 0 and bl["unexpected"] == 0,
        "dead_partner": not math.isnan(ratio) and ratio <= 1 + TARGET_DEAD_PARTNER
        and not down["lost"] and not down["refused"],
    }
    return results


def progress(what: str) -> None:
    print(f"relay bench: {what} ...", file=sys.stderr, flush=True)


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.1f} ms"


def report(r: dict[str, Any], args: argparse.Namespace) -> None:
    tp, lat, bl = r["throughput"], r["latency"], r["backlog"]
    up, down = lat["la_up"], lat["la_down"]

    def refusals(d: dict[str, int]) -> str:
        return ", ".join(f"{n} x {k}" for k, n in d.items()) or "none"

    def dist(s: dict[str, Any]) -> str:
        return f"p50 {_ms(s['p50_ms'])}, p99 {_ms(s['p99_ms'])}, max {_ms(s['max_ms'])}"

    fed = ", ".join(f"{k} = {v:g}" for k, v in r["federation"].items())
    print(f"relay benchmark: {VN} -> {KH} (and {LA}), three gateway processes on 127.0.0.1, "
          f"SQLite WAL synchronous=FULL each; {r['senders']} officers of {VN} sending, "
          f"{r['envelope_bytes']:,}-byte envelopes (1 KiB hotline payload, 1 recipient)")
    print(f"  the machine has {r['cpu_cores']} cores, SHARED by the three gateways and this "
          "load generator (bench/http1.py, pre-built requests); every figure includes the "
          "generator's cost")
    print(f"  benchmark config: [federation] {fed} (the rest default: batch_size 256, one "
          "batch in flight per partner); [limits] raised as in bench/accept.py; "
          "[log] level = warning")
    print()
    print(f"1. end to end, closed loop, {tp['messages']:,} messages over {r['senders']} "
          f"connections (sealed before the clock, {tp['seal_seconds_before_clock']} s):")
    print(f"   accepted at VN -> all in KH's inbox: {tp['end_to_end_per_second']:>7,} msg/s "
          f"({tp['end_to_end_seconds']} s; refused {refusals(tp['refused'])}; lost "
          f"{tp['lost']})")
    print(f"   VN accepted them at {tp['vn_accept_per_second']:,} msg/s "
          f"({tp['vn_accept_seconds']} s); KH had the last one "
          f"{tp['kh_all_in_after_last_accept_s']} s after VN's last answer; VN had every "
          f"receipt after {tp['vn_receipts_all_recorded_s']} s")
    print(f"   {show_cores(tp['cores'])}")
    print(f"   {cpu_per_message(tp['cores'], tp['end_to_end_per_second'])}")
    print(f"   {show_batches(tp['relay'])}")
    print()
    print(f"2. flash latency, open loop: {lat['routine_rate']:,.0f} routine/s + "
          f"{lat['flash_rate']:g} flash/s to {KH}, {lat['seconds_per_round']:g} s per round, "
          f"{lat['pool']} connections; latency = KH inbox.delivered_ms - send start; rounds "
          f"in the order {', '.join(lat['order'])}")
    for name, s in (("LA up (baseline)", up), ("LA down, backlog queued", down)):
        print(f"   {name}: {s['rounds']} rounds, {s['seconds']} s, sent {s['sent']:,}, "
              f"accepted {s['accepted']:,}, refused {refusals(s['refused'])}, lost "
              f"{s['lost']}")
        print(f"     flash ({s['flash']['n']}):        {dist(s['flash'])}   "
              f"(per round p99: {', '.join(_ms(x) for x in s['flash_p99_per_round_ms'])})")
        print(f"     flash, first seen committed in KH's db (polled every "
              f"{POLL_SECONDS * 1000:g} ms): {dist(s['flash_seen_committed'])}")
        print(f"     flash, VN's 201 answer: {dist(s['flash_vn_answer'])}")
        print(f"     routine ({s['routine']['n']:,}):   {dist(s['routine'])}")
        print(f"     generator start lag p99 {s['generator_lag_p99_ms']:.2f} ms")
        for i, (c, b) in enumerate(zip(s["cores_per_round"], s["relay_per_round"],
                                       strict=True)):
            print(f"     round {i + 1}: {show_cores(c)}")
            print(f"       {show_batches(b)}")
        if name.startswith("LA down"):
            print(f"     LA: {', '.join(str(q) for q in s['la_queued'])} messages queued at VN "
                  f"during the rounds, VN's failed attempts at LA per round: "
                  f"{', '.join(str(f) for f in s['la_failures_during'])}")
    print()
    print(f"3. backlog: {bl['queued']:,} messages queued at VN while KH was stopped "
          f"({bl['queue_per_second']:,} msg/s, {bl['queue_seconds']} s, sealed as sent; "
          f"refused {refusals(bl['refused_while_queueing'])}); KH took "
          f"{bl['kh_start_seconds']} s to start (ledger check included)")
    print(f"   drain, KH listening -> VN's outbox empty and all in KH's inbox: "
          f"{bl['drain_per_second']:>7,} msg/s ({bl['drain_seconds']} s; first delivery "
          f"{bl['first_delivery_after_listening_s']} s after KH listened, half after "
          f"{bl['half_drained_after_s']} s; first-to-last delivery "
          f"{bl['first_to_last_delivery_per_second']:,} msg/s)")
    print(f"   arrived {bl['arrived']:,} ({bl['distinct_arrived']:,} distinct; KH messages "
          f"rows {bl['kh_messages_rows']:,}, missing {bl['kh_messages_missing']}): lost "
          f"{bl['lost']}, duplicated {bl['duplicated']}, unexpected {bl['unexpected']}; "
          "VN's receipts: "
          + ", ".join(f"{k} {v:,}" for k, v in sorted(bl["vn_receipts"].items())))
    print(f"   {show_cores(bl['cores'])}")
    print(f"   {cpu_per_message(bl['cores'], bl['drain_per_second'])}")
    print(f"   {show_batches(bl['relay'])}")
    for name, prof in r.get("profiles", {}).items():
        if "error" in prof:
            print(f"profile {name}: {prof['error']}")
            continue
        print(f"profile {name} (py-spy, {prof['samples']} samples, {prof['file']}):")
        for title in ("threads", "self", "total"):
            print(f"  by {title}: " + "; ".join(f"{share:.1%} {fn}"
                                               for fn, share in prof.get(title, [])[:8]))
    print()
    ratio = r["dead_partner_p99_ratio"]
    rows = [
        ("end-to-end throughput VN -> KH", f"{tp['end_to_end_per_second']:,} msg/s",
         f">= {TARGET_THROUGHPUT:,.0f} msg/s", r["met"]["throughput"]),
        (f"flash p99 at {lat['routine_rate']:,.0f} routine/s", _ms(up["flash"]["p99_ms"]),
         f"< {TARGET_FLASH_P99_MS:g} ms", r["met"]["flash_p99"]),
        (f"backlog drain ({bl['queued']:,})", f"{bl['drain_per_second']:,} msg/s",
         f">= {TARGET_DRAIN:,.0f} msg/s", r["met"]["drain"]),
        ("backlog lost / duplicated", f"{bl['lost']} / {bl['duplicated']}", "0 / 0",
         r["met"]["drain_integrity"]),
        ("flash p99, LA down / LA up",
         "n/a" if ratio is None else f"{ratio:.2f} ({_ms(down['flash']['p99_ms'])} / "
         f"{_ms(up['flash']['p99_ms'])})", f"<= {1 + TARGET_DEAD_PARTNER:.2f}",
         r["met"]["dead_partner"]),
    ]
    print(f"{'measure':<38} {'measured':<30} {'target':<16} result")
    for name, value, target, ok in rows:
        print(f"{name:<38} {value:<30} {target:<16} {'met' if ok else 'NOT met'}")
    spread = [max(p) / min(p) - 1 for p in (
        [x for x in s["flash_p99_per_round_ms"] if x] for s in (up, down)) if len(p) > 1]
    if spread:
        print(f"note: rounds of the same condition gave flash p99s up to {max(spread):.0%} "
              "apart (see the per-round p99s above): the LA down / LA up ratio is only as "
              "precise as that")
    if args.quick:
        print("(--quick: small counts, a smoke run; the figures are not the benchmark's)")
    busy = [c.get("others") for c in [tp["cores"], bl["cores"], *up["cores_per_round"],
                                      *down["cores_per_round"]]]
    if any(b is not None and b >= 0.15 for b in busy):
        print("WARNING: other processes were busy on this machine during the run (up to "
              f"{max(b for b in busy if b is not None):.2f} cores); the figures are lower "
              "than on a quiet machine")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="federation relay benchmark: end-to-end "
                                     "throughput, flash latency, backlog drain, dead partner")
    parser.add_argument("--quick", action="store_true",
                        help="small counts for a smoke run (well under a minute)")
    parser.add_argument("--messages", type=int, help="throughput phase (default 10000)")
    parser.add_argument("--backlog", type=int, help="backlog phase (default 100000)")
    parser.add_argument("--senders", type=int, help="officers/connections at VN (default 64)")
    parser.add_argument("--latency-seconds", type=float, help="per round (default 15)")
    parser.add_argument("--rounds", type=int,
                        help="rounds of each condition, LA up and LA down (default 2)")
    parser.add_argument("--routine-rate", type=float, default=TARGET_ROUTINE_RATE,
                        help="background routine messages/s during the latency rounds")
    parser.add_argument("--flash-rate", type=float, default=100.0, help="flash messages/s")
    parser.add_argument("--pool", type=int, default=64,
                        help="connections of the latency open loop")
    parser.add_argument("--la-backlog", type=int,
                        help="messages queued for the dead LA (default 2000)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="make the gateways in DIR (must not exist) and keep them")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="py-spy profiles of both gateways in the throughput and drain "
                        "phases, into DIR")
    args = parser.parse_args(argv)
    defaults = ({"messages": 1000, "backlog": 2000, "senders": 8, "latency_seconds": 3.0,
                 "rounds": 1, "la_backlog": 300} if args.quick else
                {"messages": 10_000, "backlog": 100_000, "senders": 64,
                 "latency_seconds": 15.0, "rounds": 2, "la_backlog": 2000})
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if not (1 <= args.senders <= 1000 and 1 <= args.messages <= 10_000_000
            and 1 <= args.backlog <= 10_000_000 and 1 <= args.rounds <= 20
            and 0 < args.latency_seconds <= 600 and 0 < args.routine_rate <= 10_000
            and 0 < args.flash_rate <= 1000 and 1 <= args.pool <= 1000
            and 1 <= args.la_backlog <= 1_000_000):
        parser.error("a size or rate is out of range")
    if args.profile is not None and py_spy() is None:
        parser.error("--profile needs py-spy")

    def terminated(signum: int, _frame: FrameType | None) -> None:
        print(f"relay bench: signal {signum}, stopping the gateways", file=sys.stderr)
        raise SystemExit(128 + signum)  # unwinds through the finally below

    signal.signal(signal.SIGTERM, terminated)
    try:
        if args.keep is not None:
            if args.keep.exists():
                parser.error(f"--keep {args.keep}: already exists")
            args.keep.mkdir(parents=True)
            results = asyncio.run(measure_all(args, args.keep))
        else:
            with tempfile.TemporaryDirectory(prefix="fpg-relay-") as tmp:
                try:
                    results = asyncio.run(measure_all(args, Path(tmp)))
                finally:
                    PROCESSES.stop_all()
    finally:
        PROCESSES.stop_all()
    if args.json:
        print(json.dumps({"benchmark": "relay", "results": results}))
    else:
        report(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Accept benchmark: officers uploading envelopes to one gateway process, over HTTP.

One gateway runs as its own process (``python -m gateway run``), made the way an operator
makes one (``gateway init --insecure-dev-keys``, ``gateway desks add``, ``gateway officers
invite``), on its embedded SQLite store (WAL, ``synchronous=FULL``, group commit). This
process enrolls ``--officers`` officers through the client library (``enroll``), signs
each in (``GatewayClient.sign_in``), sends one message each with ``GatewayClient.send`` to
see the whole path work, and then drives ``POST /v1/messages`` on 127.0.0.1 with
envelopes sealed *before* any clock starts (1 KiB hotline payload for the one officer of
the recipient desk, a fresh message id each, about 1.5 KiB on the wire), so the client's
crypto never limits the gateway. It prints, in one run:

1. **accepted messages per second with durable commit**: a closed loop, each officer
   sending its next envelope as soon as the previous one is answered; only ``201``
   answers whose JSON names the envelope's message id as ``accepted`` count; every answer
   is checked (a gateway answers ``201`` only after the message, its ledger entries and
   its inbox row are committed and fsynced);
2. **accept latency at a fixed offered rate** (open loop): requests start on a fixed
   schedule (``--rate`` a second for ``--seconds``, round robin over the officers),
   whether or not earlier ones were answered; latency runs from the *scheduled* send
   time to the end of the answer, so queueing anywhere (generator, connection pool,
   gateway) counts; p50, p99 and max, with how many were sent, answered and refused;
3. **the raw limit**: the request rate of a trivial aiohttp handler (``POST /`` reads the
   same 1.5 KiB body and answers a small JSON object) in its own process, driven by the
   same closed loop code with the same client settings and concurrency, and the ratio of
   (1) to it.

The load generator is lean: one process, one keep-alive connection per officer (per
concurrent request in the open loop), complete HTTP requests built before the clock starts
and written by ``bench/http1.py``, a minimal HTTP/1.1 client that costs about a third of
what ``aiohttp``'s client does per request (the setup still uses the client library).
It shares the machine's cores with the server it drives, so every figure includes the
generator's own cost. Next to each rate it prints the cores used, from ``/proc``, by the
server (and by its event-loop thread alone), by the generator and by any other process
(a warning says when the machine was not quiet), and the server's CPU time per request,
which compares the gateway with the trivial handler whichever side limited the rate
(the trivial handler's rate is usually the generator's limit). The benchmark gateway's
rate limits (``[limits]``: per officer, and per client address for enrollment and
sign-in) are raised so that they cap neither the measurement nor the setup, and its log
level is ``warning``; both are said in the output.

Targets on 2 cores: 3,000 accepted messages/s or more; p99 under 50 ms at 1,000
messages/s offered.

    python bench/accept.py [--officers 64] [--seconds 10] [--rate 1000] [--json]
                           [--keep DIR] [--profile FILE]

``--profile FILE`` records the gateway process with ``py-spy record -f raw --threads``
during the closed-loop window (into FILE) and the open loop (into FILE-open) and prints
the functions where its time goes (that run's figures then include py-spy's sampling
cost).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from itertools import repeat
from pathlib import Path
from typing import Any

import aiohttp
import floor  # bench/floor.py: the least work of a verifying, durable accept
import http1  # bench/http1.py: the lean load client
from aiohttp import web

from gateway.cli.process import ServerProcess
from gateway.client import payload
from gateway.client.api import ENVELOPE_TYPE, Credentials, GatewayClient, enroll
from gateway.client.roster import Roster
from gateway.cliutil import until_stopped
from gateway.config import LimitsSection
from gateway.crypto.envelope import EnvelopeHeader, new_message_id, seal_envelope
from gateway.crypto.keys import EncryptionPublicKey, OfficerEncryptionKey, OfficerSigningKey
from gateway.files import write_port_file

GATEWAY_ID = "vn-mps"
SENDER_DESK = "trafficking"
RECIPIENT_DESK = "border-liaison"
PAYLOAD_SIZE = 1024
RAW_BODY_SIZE = 1536
TARGET_ACCEPTED = 3000.0  # messages/s, closed loop
TARGET_P99_MS = 50.0  # at TARGET_RATE offered
TARGET_RATE = 1000.0
# [limits] raised to the config's maxima so that no limiter caps the measurement: the
# per-officer one, and the per-address one of enrollment and sign-in (where the gateway
# has it), which setting up many officers from 127.0.0.1 would hit.
RAISED_LIMITS = {"requests_per_second": 100_000, "burst": 1_000_000,
                 "anonymous_per_second": 100_000, "anonymous_burst": 1_000_000,
                 "enroll_per_second": 100_000, "enroll_burst": 1_000_000}
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
COMMAND_TIMEOUT = 60.0
REQUEST_TIMEOUT = 30.0
LIFETIME_MS = 24 * 3600 * 1000

#: Frames under which everything runs: left out of the "total" profile list.
SCAFFOLDING = ("<frozen runpy>", "asyncio/runners.py", "asyncio/base_events.py",
               "threading.py", "gateway/cli/main.py", "gateway/cliutil.py", "gateway/__main__.py")

Check = Callable[[int, bytes, str], bool]
Work = tuple[bytes, str]  # complete HTTP request, message id


# --- processes -------------------------------------------------------------------------


def gateway_command(*args: str) -> str:
    """Run one ``gateway`` operator command; its standard output."""
    done = subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True,
                          text=True, timeout=COMMAND_TIMEOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"gateway {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def machine_busy_seconds() -> float | None:
    """CPU seconds all processes of the machine spent running so far (Linux), or None."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = ticks
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, thread: int | None = None) -> float | None:
    """User + system CPU time of process ``pid`` (or of one of its threads) so far (Linux),
    or None."""
    where = f"/proc/{pid}/task/{thread}/stat" if thread is not None else f"/proc/{pid}/stat"
    try:
        stat = Path(where).read_text().rsplit(")", 1)[1].split()
        return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    except (OSError, ValueError, IndexError):
        return None


def server(command: list[str], port_file: Path, log_file: Path, what: str) -> ServerProcess:
    """A server process that writes its port to ``port_file`` (started by ``with``, which
    waits until it listens and always stops it after)."""
    return ServerProcess(command, port_file=port_file, log=log_file, name=what,
                         start_seconds=START_TIMEOUT, stop_seconds=STOP_TIMEOUT)


def raised_limits() -> dict[str, tuple[int, Any]]:
    """The [limits] keys this gateway knows among RAISED_LIMITS: (value, its default)."""
    defaults = {f.name: f.default for f in fields(LimitsSection)}
    return {k: (v, defaults[k]) for k, v in RAISED_LIMITS.items() if k in defaults}


def init_benchmark_gateway(directory: Path, benchmark: str) -> Path:
    """``gateway init`` (development keys) with logs at warning and no rate limit that
    could cap a measurement or its setup; the checked config's path."""
    gateway_command("init", str(directory), "--id", GATEWAY_ID, "--port", "0",
                    "--insecure-dev-keys")
    config = directory / "gateway.toml"
    text = config.read_text()
    tuned = text.replace('[log]\nlevel = "info"', '[log]\nlevel = "warning"')
    if tuned == text:
        raise RuntimeError(f"{config}: cannot find the [log] level that init writes")
    tuned += (f"\n# {benchmark}: no rate limiter may cap the measurement or the setup\n"
              "[limits]\n" + "".join(f"{k} = {v}\n" for k, (v, _) in raised_limits().items()))
    config.write_text(tuned)
    gateway_command("config", "check", "--config", str(config))
    return config


def make_gateway(directory: Path, officers: int) -> tuple[Path, list[str], str]:
    """A gateway as an operator makes one; its config, enrollment codes, fingerprint.

    Codes: ``officers`` for the sending desk, then one for the recipient desk.
    """
    config = init_benchmark_gateway(directory, "bench/accept.py")
    for desk in (SENDER_DESK, RECIPIENT_DESK):
        gateway_command("desks", "add", desk, "--config", str(config))
    desks = [SENDER_DESK] * officers + [RECIPIENT_DESK]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        codes = list(pool.map(lambda desk: gateway_command(
            "officers", "invite", "--desk", desk, "--config", str(config)).strip(), desks))
    shown = gateway_command("keys", "show", "--config", str(config))
    fingerprint = shown.split("fingerprint: ", 1)[1].splitlines()[0].strip()
    return config, codes, fingerprint


# --- the trivial aiohttp server (the raw limit) ----------------------------------------


async def raw_server(port_file: Path) -> None:
    """``POST /``: read the whole body, answer a small JSON object. Until SIGTERM."""

    async def post(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({"status": "ok", "bytes": len(body)})

    app = web.Application()
    app.router.add_post("/", post)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        await until_stopped(functools.partial(write_port_file, port_file, runner.addresses[0][1]))
    finally:
        await runner.cleanup()


# --- the floor: the least work of a verifying, durable accept (bench/floor.py) --------


def floor_run(directory: Path, processes: int, envelope: bytes, connections_: int,
              warmup: float, seconds: float) -> ClosedLoop:
    """The closed loop against ``processes`` floor servers sharing one port and one
    database, each connection sending the same signed envelope (the floor stores it
    under a fresh id every time)."""
    key = OfficerSigningKey.generate()
    body = floor.signed_body(envelope, key)
    base = directory / f"floor-{processes}"
    base.mkdir()
    database = base / "floor.db"
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(server(
            floor.command(base / "port-0", database, key.public), base / "port-0",
            base / "floor-0.log", "the floor server"))
        port = first.port
        others = [stack.enter_context(server(
            floor.command(base / f"port-{k}", database, key.public, port),
            base / f"port-{k}", base / f"floor-{k}.log", "a floor server"))
            for k in range(1, processes)]
        request = http1.request_bytes("POST", "127.0.0.1", port, "/",
                                      {"Content-Type": "application/octet-stream"}, body)
        bound = 1_000_000  # requests per connection; the window ends long before
        return asyncio.run(closed_loop(
            port, [repeat((request, ""), bound) for _ in range(connections_)],
            floor_accepted, warmup, seconds,
            Usage(first.pid, also=tuple(p.pid for p in others))))


# --- officers and envelopes ------------------------------------------------------------


@dataclass
class Sender:
    creds: Credentials
    headers: dict[str, str]  # Authorization and Content-Type, built once
    recipients: list[EncryptionPublicKey]


async def prepare(url: str, codes: list[str], fingerprint: str) -> list[Sender]:
    """Enroll every officer, sign the senders in, send one message each via the library."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) \
            as http:
        roster = Roster()  # the first officer of a desk admits the others

        async def join(code: str) -> Credentials:
            creds, answer = await enroll(http, url, code, OfficerSigningKey.generate(),
                                         OfficerEncryptionKey.generate(),
                                         fingerprint=fingerprint)
            await roster.join(http, creds, answer)
            return creds

        # One at a time (each enrollment reloads the gateway's directory); the last code
        # is the recipient desk's officer, who only needs to exist.
        enrolled = [await join(code) for code in codes]
        officers = enrolled[:-1]

        async def sign_in(creds: Credentials) -> Sender:
            client = GatewayClient(http, creds)
            await client.sign_in()
            answer = await client.send("hotline", RECIPIENT_DESK,
                                       {"type": "hotline", "text": "bench: path check"},
                                       priority="flash")
            if answer.get("status") != "accepted":
                raise RuntimeError(f"the check message was not accepted: {answer}")
            desk = (await client.directory())[f"{RECIPIENT_DESK}@{creds.gateway_id}"]
            token = client._token  # the session the library just opened
            assert token is not None
            return Sender(creds, {"Authorization": f"Bearer {token}",
                                  "Content-Type": ENVELOPE_TYPE}, desk.encryption_keys())

        return list(await asyncio.gather(*(sign_in(c) for c in officers)))


def hotline_payload() -> bytes:
    text = "Khan cap: nghi van mua ban nguoi tai cua khau Moc Bai. "
    doc = {"type": "hotline", "text": ""}
    room = PAYLOAD_SIZE - len(payload.encode({**doc, "text": "x"}, "hotline")) + 1
    body = payload.encode({**doc, "text": (text * (room // len(text) + 1))[:room]}, "hotline")
    assert len(body) == PAYLOAD_SIZE
    return body


def seal(sender: Sender, body: bytes, count: int) -> list[tuple[bytes, str]]:
    """``count`` envelopes from ``sender``, each with a fresh message id."""
    out = []
    for _ in range(count):
        mid = new_message_id()
        now = int(time.time() * 1000)
        header = EnvelopeHeader(id=mid, kind="hotline", priority="flash",
                                sender=sender.creds.desks[0],
                                recipient=f"{RECIPIENT_DESK}@{sender.creds.gateway_id}",
                                created=now, expires=now + LIFETIME_MS, thread=mid)
        out.append((seal_envelope(header, body, sender.creds.signing, sender.recipients), mid))
    return out


def requests(port: int, sender: Sender, envelopes: list[tuple[bytes, str]]) -> list[Work]:
    """The complete ``POST /v1/messages`` request of each envelope, with its message id."""
    return [(http1.request_bytes("POST", "127.0.0.1", port, "/v1/messages", sender.headers,
                                 envelope), mid) for envelope, mid in envelopes]


def accepted(status: int, data: bytes, mid: str) -> bool:
    """A gateway answer counts if it is 201 and names this message as accepted."""
    if status != 201:
        return False
    doc = json.loads(data)
    return bool(doc.get("id") == mid and doc.get("status") == "accepted")


def raw_answered(status: int, data: bytes, _mid: str) -> bool:
    return status == 200 and json.loads(data).get("bytes") == RAW_BODY_SIZE


def floor_accepted(status: int, data: bytes, _mid: str) -> bool:
    return status == 201 and json.loads(data).get("status") == "accepted"


def outcome(status: int, data: bytes) -> str:
    """What a refusal is, for the error counts: status and stable error code."""
    try:
        code = json.loads(data).get("error")
    except (ValueError, AttributeError):
        code = None
    return f"HTTP {status}" + (f" {code}" if code else "")


# --- load ------------------------------------------------------------------------------


async def connections(port: int, count: int) -> list[http1.Connection]:
    return list(await asyncio.gather(*(http1.Connection.open("127.0.0.1", port)
                                       for _ in range(count))))


async def post(conns: list[http1.Connection], port: int, i: int,
               request: bytes) -> tuple[int, bytes]:
    """Send on connection ``i``, opening a new one if the server closed it."""
    if conns[i].closed:
        conns[i] = await http1.Connection.open("127.0.0.1", port)
    return await conns[i].send(request)


@dataclass
class Usage:
    """Cores used over a measured window by the server process, by this process and by
    everything else on the machine (other processes skew the figures: they are shown)."""

    pid: int
    also: tuple[int, ...] = ()  # more server processes, counted in ``server``
    server: float | None = None
    event_loop: float | None = None  # the main thread of ``pid``: its event loop
    generator: float | None = None
    others: float | None = None
    _start: tuple[float | None, float | None, float, float | None] = (None, None, 0.0, None)

    def _server_seconds(self) -> float | None:
        each = [cpu_seconds(pid) for pid in (self.pid, *self.also)]
        return None if None in each else sum(s for s in each if s is not None)

    def begin(self) -> None:
        self._start = (self._server_seconds(), cpu_seconds(self.pid, self.pid),
                       time.process_time(), machine_busy_seconds())

    def end(self, seconds: float) -> None:
        server, main, machine = (self._server_seconds(), cpu_seconds(self.pid, self.pid),
                                 machine_busy_seconds())
        if server is not None and self._start[0] is not None:
            self.server = (server - self._start[0]) / seconds
        if main is not None and self._start[1] is not None and not self.also:
            self.event_loop = (main - self._start[1]) / seconds
        self.generator = (time.process_time() - self._start[2]) / seconds
        if machine is not None and self._start[3] is not None and self.server is not None:
            busy = (machine - self._start[3]) / seconds
            self.others = max(0.0, busy - self.server - self.generator)


@dataclass
class ClosedLoop:
    per_second: float = 0.0
    window_seconds: float = 0.0
    ok: int = 0  # during the whole run, warm-up included
    refused: Counter[str] = field(default_factory=Counter)
    exhausted: bool = False
    usage: Usage | None = None


async def closed_loop(port: int, work: Sequence[Iterable[Work]],
                      check: Check, warmup: float, seconds: float, usage: Usage,
                      on_window: Callable[[], object] | None = None) -> ClosedLoop:
    """Worker ``i`` sends the requests of ``work[i]`` one after another on its connection.

    The rate is the number of checked answers that completed in the window after
    ``warmup``, over the window; the window ends early if a worker runs out of work.
    """
    result = ClosedLoop(usage=usage)
    stopping = False
    out_of_work = asyncio.Event()

    conns = await connections(port, len(work))
    try:
        async def worker(i: int, items: Iterable[Work]) -> None:
            for request, mid in items:
                if stopping:
                    return
                try:
                    status, data = await post(conns, port, i, request)
                except (OSError, http1.ResponseError) as exc:
                    result.refused[type(exc).__name__] += 1
                    continue
                if check(status, data, mid):
                    result.ok += 1
                else:
                    result.refused[outcome(status, data)] += 1
            out_of_work.set()

        tasks = [asyncio.create_task(worker(i, w)) for i, w in enumerate(work)]
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(out_of_work.wait(), warmup)
            before, start = result.ok, time.perf_counter()
            usage.begin()
            if on_window is not None:
                on_window()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(out_of_work.wait(), seconds)
            after, elapsed = result.ok, time.perf_counter() - start
            result.exhausted = out_of_work.is_set()
            usage.end(elapsed)
            stopping = True
            _, pending = await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT + 5)
            if pending:
                raise RuntimeError(f"{len(pending)} workers did not finish")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for conn in conns:
            conn.close()
    result.per_second = (after - before) / elapsed
    result.window_seconds = elapsed
    return result


@dataclass
class OpenLoop:
    sent: int = 0
    answered: int = 0
    ok: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # seconds, of the accepted ones
    late_starts: list[float] = field(default_factory=list)  # generator lag per request
    seconds: float = 0.0
    usage: Usage | None = None

    def percentile(self, values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else math.nan


async def open_loop(port: int, work: list[Work], rate: float, concurrency: int,
                    usage: Usage, on_start: Callable[[], object] | None = None) -> OpenLoop:
    """Start request ``i`` at ``t0 + i / rate`` whatever happened to earlier ones, on the
    first of ``concurrency`` connections that is free (waiting for one counts as latency).
    """
    result = OpenLoop(usage=usage)
    loop = asyncio.get_running_loop()
    conns = await connections(port, concurrency)
    free: asyncio.Queue[int] = asyncio.Queue()
    for i in range(concurrency):
        free.put_nowait(i)
    try:
        async def one(request: bytes, mid: str, scheduled: float) -> None:
            i = await free.get()
            try:
                status, data = await post(conns, port, i, request)
            except (OSError, http1.ResponseError) as exc:
                result.refused[type(exc).__name__] += 1
                return
            finally:
                free.put_nowait(i)
            done = loop.time()
            result.answered += 1
            if accepted(status, data, mid):
                result.ok += 1
                result.latencies.append(done - scheduled)
            else:
                result.refused[outcome(status, data)] += 1

        tasks: set[asyncio.Task[None]] = set()
        usage.begin()
        if on_start is not None:
            on_start()
        t0 = loop.time() + 0.01
        try:
            for i, (request, mid) in enumerate(work):
                scheduled = t0 + i / rate
                delay = scheduled - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                result.late_starts.append(loop.time() - scheduled)
                task = asyncio.create_task(one(request, mid, scheduled))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                result.sent += 1
            if tasks:
                await asyncio.wait(set(tasks), timeout=REQUEST_TIMEOUT + 5)
        finally:
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        result.seconds = loop.time() - t0
        usage.end(result.seconds)
    finally:
        for conn in conns:
            conn.close()
    return result


# --- the profile -----------------------------------------------------------------------


def py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


class Profiler:
    """py-spy on the gateway process, one recording at a time, for ``seconds``."""

    def __init__(self, pid: int, seconds: float) -> None:
        self.pid = pid
        self.seconds = max(1, math.floor(seconds))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, path: Path | None) -> None:
        spy = py_spy()
        if path is None or spy is None:
            return
        self.wait()
        path.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [spy, "record", "-p", str(self.pid), "-f", "raw", "--threads", "--nonblocking",
             "-r", "100", "-d", str(self.seconds), "-o", str(path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(self.seconds + 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)
        self.proc = None


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Share of samples per function: self (innermost frame) and total (anywhere on stack).

    ``py-spy -f raw --threads`` lines are ``thread;frame;...;frame count``, with frames as
    ``function (file:line)``; shares are of all samples of the gateway's threads.
    """
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        samples += n
        threads[frames[0]] += n
        names = [re.sub(r":\d+\)$", ")", f) for f in frames[1:]] or [frames[0]]
        own[names[-1]] += n
        for name in set(names):
            if not any(part in name for part in SCAFFOLDING):
                total[name] += n
    if not samples:
        return {"samples": 0}

    def share(counts: Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(v / samples, 4)) for k, v in counts.most_common(top)]

    return {"samples": samples, "threads": share(threads), "self": share(own),
            "total": share(total)}


# --- main ------------------------------------------------------------------------------


def measure(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    config, codes, fingerprint = make_gateway(directory, args.officers)
    body = hotline_payload()
    with ServerProcess.gateway(config, name="the gateway", start_seconds=START_TIMEOUT,
                               stop_seconds=STOP_TIMEOUT) as gw:
        port, url = gw.port, gw.url
        senders = asyncio.run(prepare(url, codes, fingerprint))
        sample = seal(senders[0], body, 1)[0][0]
        raw_body = (sample * 2)[:RAW_BODY_SIZE]

        # 3. the raw limit first: it also bounds how many envelopes the gateway can take.
        raw_cmd = [sys.executable, str(Path(__file__).resolve()), "--raw-server",
                   str(directory / "raw-port")]
        with server(raw_cmd, directory / "raw-port", directory / "raw.log",
                    "the raw aiohttp server") as raw_proc:
            raw_port = raw_proc.port
            bound = 1_000_000  # requests per worker; the window ends long before
            raw_request = http1.request_bytes("POST", "127.0.0.1", raw_port, "/",
                                              senders[0].headers, raw_body)
            raw = asyncio.run(closed_loop(
                raw_port, [repeat((raw_request, ""), bound) for _ in senders],
                raw_answered, args.warmup, args.seconds, Usage(raw_proc.pid)))

        # 4. the floor, in one process and in two (bench/floor.py).
        floors = {n: floor_run(directory, n, sample, len(senders), args.warmup,
                               args.seconds) for n in (1, 2)}

        # 1. closed loop on the gateway, envelopes sealed before the clock starts.
        per_officer = math.ceil(raw.per_second * (args.warmup + args.seconds) * 1.2
                                / len(senders)) + 20
        t = time.perf_counter()
        envelope_size = len(sample)
        pools = [requests(port, s, seal(s, body, per_officer)) for s in senders]
        # 2. the open loop's envelopes, round robin over the officers.
        count = round(args.rate * args.seconds)
        extra = [requests(port, s, seal(s, body, math.ceil(count / len(senders))))
                 for s in senders]
        scheduled = [extra[i % len(senders)][i // len(senders)] for i in range(count)]
        seal_seconds = time.perf_counter() - t
        del extra
        gc.collect()
        gc.freeze()  # the pools are long-lived: keep the collector from walking them

        profiler = Profiler(gw.pid, args.seconds)
        open_profile = None
        if args.profile is not None:
            open_profile = args.profile.with_name(f"{args.profile.stem}-open"
                                                  f"{args.profile.suffix}")
        try:
            accepted_run = asyncio.run(closed_loop(
                port, pools, accepted, args.warmup, args.seconds,
                Usage(gw.pid), lambda: profiler.start(args.profile)))
            del pools
            profiler.wait()
            time.sleep(1.0)  # let the gateway's checkpoint and WAL work settle between phases
            latency = asyncio.run(open_loop(port, scheduled, args.rate,
                                            args.officers, Usage(gw.pid),
                                            lambda: profiler.start(open_profile)))
        finally:
            profiler.wait()
        status = gw.returncode
    if status is not None:
        raise RuntimeError(f"the gateway exited during the run (status {status})")

    lat = latency
    p50 = lat.percentile(lat.latencies, 0.50)
    p99 = lat.percentile(lat.latencies, 0.99)
    results: dict[str, Any] = {
        "cpu_cores": os.cpu_count(),
        "officers": args.officers,
        "payload_bytes": PAYLOAD_SIZE,
        "envelope_bytes": envelope_size,
        "seal_seconds_before_clock": round(seal_seconds, 1),
        "limits": {k: v for k, (v, _) in raised_limits().items()},
        "raw_aiohttp_per_second": round(raw.per_second),
        "raw_cores": _cores(raw.usage, "server"),
        "raw_refused": dict(raw.refused),
        "accepted_per_second": round(accepted_run.per_second),
        "accepted_ratio_to_raw": round(accepted_run.per_second / raw.per_second, 3),
        "accepted_window_seconds": round(accepted_run.window_seconds, 2),
        "accepted_pool_exhausted": accepted_run.exhausted,
        "accepted_cores": _cores(accepted_run.usage, "gateway"),
        "accepted_refused": dict(accepted_run.refused),
        # Server CPU per answered request: what each request costs the server itself,
        # whatever limited the rate (the generator, the other core, the disk).
        "raw_server_cpu_us_per_request": _per_request(raw.usage, raw.per_second),
        "floor": {str(n): {"per_second": round(f.per_second), "cores": _cores(f.usage, "floor"),
                           "cpu_us_per_message": _per_request(f.usage, f.per_second),
                           "refused": dict(f.refused)} for n, f in floors.items()},
        "accepted_ratio_to_floor": round(accepted_run.per_second
                                         / max(floors[1].per_second, 1.0), 3),
        "gateway_cpu_us_per_message": _per_request(accepted_run.usage, accepted_run.per_second),
        "open_loop": {
            "offered_per_second": args.rate, "seconds": round(lat.seconds, 2),
            "sent": lat.sent, "answered": lat.answered, "accepted": lat.ok,
            "refused": dict(lat.refused),
            "p50_ms": _ms(p50), "p99_ms": _ms(p99),
            "max_ms": _ms(max(lat.latencies, default=math.nan)),
            "generator_lag_p99_ms": _ms(lat.percentile(lat.late_starts, 0.99)),
            "cores": _cores(lat.usage, "gateway"),
        },
    }
    results["met"] = {
        f"accepted >= {TARGET_ACCEPTED:,.0f}/s": accepted_run.per_second >= TARGET_ACCEPTED
        and not accepted_run.refused,
        f"p99 < {TARGET_P99_MS:g} ms at {args.rate:,.0f}/s offered"
        + ("" if args.rate == TARGET_RATE else f" (the target is at {TARGET_RATE:,.0f}/s)"):
            p99 * 1000 < TARGET_P99_MS and lat.ok == lat.sent,
    }
    for name, path in (("profile_closed_loop", args.profile), ("profile_open_loop",
                                                                 open_profile)):
        if path is not None:
            results[name] = ({"file": str(path), **summarize_profile(path)} if path.exists()
                             else {"error": f"py-spy wrote no {path}"})
    return results


def _ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds * 1000, 2)


def _per_request(usage: Usage | None, rate: float) -> float | None:
    if usage is None or usage.server is None or rate <= 0:
        return None
    return round(usage.server / rate * 1e6, 1)


def _cores(usage: Usage | None, server: str) -> dict[str, float | None]:
    def r(value: float | None) -> float | None:
        return None if value is None else round(value, 2)

    if usage is None:
        return {}
    return {server: r(usage.server), f"{server} event loop thread": r(usage.event_loop),
            "generator": r(usage.generator), "other processes": r(usage.others)}


def report(r: dict[str, Any], args: argparse.Namespace) -> None:
    o = r["open_loop"]

    def cores(d: dict[str, float | None]) -> str:
        parts = []
        for k, v in d.items():
            if v is None or k.endswith("event loop thread"):
                continue
            loop = d.get(f"{k} event loop thread")
            parts.append(f"{k} {v:.2f} cores" + (f" (event loop thread {loop:.2f})"
                                                  if loop is not None else ""))
        return ", ".join(parts)

    def refusals(d: dict[str, int]) -> str:
        return ", ".join(f"{n} x {k}" for k, n in d.items()) or "none"

    print(f"accept benchmark: one gateway process ({GATEWAY_ID}, SQLite WAL synchronous=FULL, "
          f"group commit) on 127.0.0.1, {r['officers']} officers, {PAYLOAD_SIZE}-byte hotline "
          f"payload ({r['envelope_bytes']:,}-byte envelopes for 1 recipient, "
          f"{r['seal_seconds_before_clock']} s of sealing done before the clock)")
    print(f"  the machine has {r['cpu_cores']} cores, SHARED by the server and this load "
          f"generator (one process, bench/http1.py: pre-built requests, "
          f"{r['officers']} keep-alive connections); every figure includes the generator's cost")
    raised = ", ".join(f"{k} = {v:,} (default {d:g})" for k, (v, d) in raised_limits().items())
    print(f"  benchmark gateway config: [limits] {raised}: raised so that no rate limiter caps "
          "the measurement or the setup; [log] level = warning")
    print(f"  closed loops: {args.warmup:g} s warm-up, then {args.seconds:g} s measured")
    print(f"raw aiohttp, trivial handler (reads {RAW_BODY_SIZE} B, small JSON): "
          f"{r['raw_aiohttp_per_second']:>8,} req/s   ({cores(r['raw_cores'])}; "
          f"refused: {refusals(r['raw_refused'])})")
    for n, f in r["floor"].items():
        what = ("floor (bench/floor.py), one process:" if n == "1" else
                f"floor, {n} processes on one port and one database:")
        print(f"{what:<55}{f['per_second']:>8,} msg/s   ({cores(f['cores'])}; "
              f"refused: {refusals(f['refused'])})")
    print("  (the floor reads the request, checks the signature on the gateway's worker "
          "thread and group-commits the envelope and a leaf hash; nothing else)")
    print(f"gateway accept, durable commit, closed loop:        "
          f"{r['accepted_per_second']:>8,} msg/s = {r['accepted_ratio_to_raw']:.0%} of raw, "
          f"{r['accepted_ratio_to_floor']:.0%} of the one-process floor  "
          f"({cores(r['accepted_cores'])}; refused: {refusals(r['accepted_refused'])})")
    raw_us, gw_us = r["raw_server_cpu_us_per_request"], r["gateway_cpu_us_per_message"]
    floor_us = r["floor"]["1"]["cpu_us_per_message"]
    if raw_us and gw_us and floor_us:
        print(f"  server CPU per request: trivial handler {raw_us:,.0f} us, floor "
              f"{floor_us:,.0f} us, gateway accept {gw_us:,.0f} us (x{gw_us / raw_us:.1f} "
              f"the trivial handler, x{gw_us / floor_us:.1f} the floor); "
              f"{TARGET_ACCEPTED:,.0f} msg/s on one core needs <= "
              f"{1e6 / TARGET_ACCEPTED:,.0f} us")
    if r["accepted_pool_exhausted"]:
        print(f"  (the pre-sealed envelopes ran out: window {r['accepted_window_seconds']} s)")
    print(f"gateway accept latency, open loop at {o['offered_per_second']:,.0f}/s offered for "
          f"{o['seconds']:g} s: sent {o['sent']:,}, answered {o['answered']:,}, "
          f"accepted {o['accepted']:,}, refused/failed: {refusals(o['refused'])}")
    def ms(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f} ms"

    print(f"  latency from scheduled send: p50 {ms(o['p50_ms'])}, p99 {ms(o['p99_ms'])}, "
          f"max {ms(o['max_ms'])}  (generator start lag p99 {ms(o['generator_lag_p99_ms'])}; "
          f"{cores(o['cores'])})")
    busy = [(what, d.get("other processes")) for what, d in (
        ("raw", r["raw_cores"]), *((f"floor {n}", f["cores"]) for n, f in r["floor"].items()),
        ("closed loop", r["accepted_cores"]), ("open loop", o["cores"]))]
    busy = [(what, v) for what, v in busy if v is not None and v >= 0.15]
    if busy:
        print("WARNING: other processes were busy on this machine during the run ("
              + ", ".join(f"{what}: {v:.2f} cores" for what, v in busy)
              + "); the figures are lower than on a quiet machine")
    figures = [f"{r['accepted_per_second']:,} msg/s", f"p99 {ms(o['p99_ms'])}"]
    for (name, ok), figure in zip(r["met"].items(), figures, strict=True):
        print(f"target: {name}: {'met' if ok else 'NOT met'} ({figure})")
    for name, what in (("profile_closed_loop", "closed loop"),
                       ("profile_open_loop", f"open loop at {o['offered_per_second']:,.0f}/s")):
        profile = r.get(name)
        if not profile:
            continue
        if "error" in profile:
            print(f"gateway profile, {what}: {profile['error']}")
            continue
        print(f"gateway profile, {what} (py-spy, {profile['samples']} samples; raw file "
              f"{profile['file']}):")
        for title in ("threads", "self", "total"):
            print(f"  by {title}:")
            for function, share in profile.get(title, []):
                print(f"    {share:6.1%}  {function}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="accepted messages/s and latency of one "
                                     "gateway process, next to a trivial aiohttp handler")
    parser.add_argument("--officers", type=int, default=64, help="concurrent officers")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="measured time of each closed loop and of the open loop")
    parser.add_argument("--warmup", type=float, default=2.0, help="closed-loop warm-up")
    parser.add_argument("--rate", type=float, default=TARGET_RATE,
                        help="open-loop offered rate, messages/s")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="make the gateway in DIR (must not exist) and keep it")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="py-spy raw profile of the gateway during the closed loop "
                        "(and FILE-open for the open loop)")
    parser.add_argument("--raw-server", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.raw_server is not None:
        asyncio.run(raw_server(args.raw_server))
        return 0
    if not 1 <= args.officers <= 10_000 or args.seconds <= 0 or args.rate <= 0:
        parser.error("--officers 1..10000, --seconds and --rate positive")
    if args.profile is not None and py_spy() is None:
        parser.error("--profile needs py-spy")

    if args.keep is not None:
        if args.keep.exists():
            parser.error(f"--keep {args.keep}: already exists")
        results = measure(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="fpg-accept-") as tmp:
            results = measure(args, Path(tmp) / "gw")
    if args.json:
        met = results.pop("met")
        print(json.dumps({"benchmark": "accept", "results": results, "met": met}))
    else:
        report(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Abuse benchmark: honest officers signing in and sending while the gateway is attacked.

The acceptance run of issue 21. One gateway runs as its own process (``python -m gateway
run``), made as an operator makes one (``gateway init --insecure-dev-keys``, ``gateway
desks add``, ``gateway officers invite``) and left at its DEFAULT limits and log level
(``info``): the defences are what is measured, so nothing is raised. Its metrics
listener is on a loopback port of its own.

Twenty honest officers (``--honest``) of desk ``trafficking`` each sign in with the
client library (``GatewayClient.sign_in``: a challenge, then the signed answer) from a
loopback address of their own (``127.30.0.N``, as each sits at a machine of their own),
and post envelopes sealed before any clock starts (a 1 KiB hotline alert for desk
``border-liaison``) with their session, one every ``--send-interval`` seconds each, and
sign in again every ``--signin-every`` seconds. That runs twice in the same run:

1. **unloaded**, for ``--unloaded-seconds``, nothing else happening;
2. **under attack**, for ``--seconds`` (20), while load generator processes of their own
   (``multiprocessing``, so that no attacker shares the honest clients' event loop) send
   from ``127.0.0.0/8`` addresses other than the honest ones (source addresses bound with
   ``local_addr``; loopback only):

   * an **anonymous flood**: from each of ``--addresses`` (400) addresses one keep-alive
     connection that sends, as fast as the answers come back, challenge requests
     (``POST /v1/session/challenge``) half for the honest officers' own ids and half for
     made-up ids, and enrollment guesses (``POST /v1/enroll`` with a made-up code and a
     valid proof of key possession), in turn; spread over ``--flood-processes``;
   * **stream attempts** from one compromised officer (desk ``victim-support``):
     ``--streams`` (600) ``GET /v1/stream`` with its session, ``--stream-concurrency`` at
     a time from ten addresses, each held open until the gateway ends it or the attack
     ends;
   * **idle connections**: ``--idle`` (300) connections from ten addresses that send
     nothing, each opened again when the gateway closes it (``header_timeout_seconds``).

It prints: the honest sign-ins that succeeded (target 100 %) in each phase; the honest
sends' p50/p99/max latency in each phase and the ratio of the p99s (target: at most 3x);
the peak descriptors (``/proc/PID/fd``) and resident memory (``/proc/PID/status``) of the
gateway in each phase, sampled every 50 ms; the bytes the gateway wrote to its log during
the attack; what the attackers achieved (requests a second, answers by status, streams
opened and ended); and the gateway's own counters (``fpg_rejected_requests_total``,
``fpg_refused_connections_total``). The machine has 2 cores, shared by the gateway, the
honest clients and the attackers: the attackers' CPU is taken from the gateway, which a
real attacker's is not; ``--nice`` lowers the generators' priority (default 0: not).

Every loop is bounded in time; the attack stops by itself at its deadline.

    python bench/abuse.py [--seconds 20] [--unloaded-seconds 10] [--honest 20]
                          [--addresses 400] [--streams 600] [--idle 300]
                          [--flood-processes 2] [--quick] [--json]

``--quick`` is a smoke run (a few seconds, small numbers): its figures mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import math
import multiprocessing
import os
import re
import secrets
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import http1  # bench/http1.py: the lean load client
from accept import (
    GATEWAY_ID,
    REQUEST_TIMEOUT,
    START_TIMEOUT,
    STOP_TIMEOUT,
    Sender,
    gateway_command,
    hotline_payload,
    seal,
)

from gateway.cli.process import ServerProcess
from gateway.client.api import ENVELOPE_TYPE, ApiError, Credentials, GatewayClient, enroll
from gateway.client.roster import Roster
from gateway.crypto.keys import OfficerEncryptionKey, OfficerSigningKey
from gateway.protocol.officers import enroll_text

HONEST_DESK, RECIPIENT_DESK, ATTACKER_DESK = "trafficking", "border-liaison", "victim-support"
TARGET_SIGNIN = 1.0
TARGET_P99_RATIO = 3.0
SAMPLE_SECONDS = 0.05
READY_TIMEOUT = 60.0  # for the load generators to start
RESULT_TIMEOUT = 60.0  # for their results after the deadline
SLOW_SEND = 0.1  # seconds: a send this slow is counted by when it started
RAMP_SECONDS = 5.0
SIDE_ADDRESSES = 10  # addresses the streams and the idle connections each come from


def flood_address(i: int) -> str:
    return f"127.10.{i // 250}.{i % 250 + 1}"


def honest_address(i: int) -> str:
    return f"127.30.0.{i + 1}"


def stream_address(i: int) -> str:
    return f"127.40.0.{i % SIDE_ADDRESSES + 1}"


def idle_address(i: int) -> str:
    return f"127.50.0.{i % SIDE_ADDRESSES + 1}"


# --- the gateway -----------------------------------------------------------------------


def make_gateway(directory: Path, honest: int, line_rate: float | None
                 ) -> tuple[Path, list[str], str]:
    """A gateway at its default limits (but ``line_rate``, if given); its config,
    enrollment codes (the honest officers', then the recipient's, then the attacker's)
    and its key's fingerprint."""
    gateway_command("init", str(directory), "--id", GATEWAY_ID, "--port", "0",
                    "--insecure-dev-keys")
    config = directory / "gateway.toml"
    text = config.read_text()
    tuned = text.replace("[metrics]", '[metrics]\nport_file = "metrics-port"', 1)
    if tuned == text:
        raise RuntimeError(f"{config}: cannot find the [metrics] table that init writes")
    if line_rate is not None:
        tuned += f"\n[limits]\nanonymous_line_per_second = {line_rate}\n"
    config.write_text(tuned)
    gateway_command("config", "check", "--config", str(config))
    for desk in (HONEST_DESK, RECIPIENT_DESK, ATTACKER_DESK):
        gateway_command("desks", "add", desk, "--config", str(config))
    codes = [gateway_command("officers", "invite", "--desk", desk, "--config",
                             str(config)).strip()
             for desk in [HONEST_DESK] * honest + [RECIPIENT_DESK, ATTACKER_DESK]]
    shown = gateway_command("keys", "show", "--config", str(config))
    fingerprint = shown.split("fingerprint: ", 1)[1].splitlines()[0].strip()
    return config, codes, fingerprint


class Watch:
    """Samples the gateway's descriptors and resident memory from /proc in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_fds = 0
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        try:
            fds = len(os.listdir(f"/proc/{self.pid}/fd"))
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        self.peak_fds = max(self.peak_fds, fds)
        if found:
            self.peak_rss = max(self.peak_rss, int(found.group(1)) * 1024)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self._sample()

    def __enter__(self) -> Watch:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def figures(self) -> dict[str, float]:
        return {"peak_descriptors": self.peak_fds,
                "peak_rss_mib": round(self.peak_rss / 2**20, 1)}


def scrape(metrics_port: int) -> dict[str, dict[str, float]]:
    """The gateway's refusal counters, by reason."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                timeout=REQUEST_TIMEOUT) as answer:
        text = answer.read().decode()
    out: dict[str, dict[str, float]] = {}
    for name in ("fpg_rejected_requests_total", "fpg_refused_connections_total"):
        out[name] = {reason: float(value) for reason, value in re.findall(
            rf'^{name}\{{reason="([^"]*)"\}} (\S+)$', text, re.M)}
    return out


# --- the attackers (processes of their own) ----------------------------------------------


def _json_request(port: int, path: str, doc: dict[str, str]) -> bytes:
    return http1.request_bytes("POST", "127.0.0.1", port, path,
                               {"Content-Type": "application/json"},
                               json.dumps(doc).encode())


def flood_requests(port: int, officer_ids: list[str], count: int) -> list[bytes]:
    """Challenge requests (half for the honest officers' ids, half made up) and
    enrollment guesses (a made-up code, a valid proof of possession), in turn."""
    out = []
    for k in range(count):
        if k % 2 == 0:
            claimed = (officer_ids[(k // 2) % len(officer_ids)] if k % 4 == 0
                       else "off-" + secrets.token_hex(8))
            out.append(_json_request(port, "/v1/session/challenge", {"officer": claimed}))
        else:
            code = "FPG-" + "-".join(base64.b32encode(os.urandom(15)).decode()[i:i + 4]
                                     for i in range(0, 20, 4))
            signing, enc = OfficerSigningKey.generate(), OfficerEncryptionKey.generate()
            sign_b64, enc_b64 = signing.public.b64(), enc.public.b64()
            proof = signing.sign(enroll_text(GATEWAY_ID, code, sign_b64, enc_b64))
            out.append(_json_request(port, "/v1/enroll", {
                "code": code, "sign_key": sign_b64, "enc_key": enc_b64,
                "signature": base64.b64encode(proof).decode()}))
    return out


async def _flood(port: int, addresses: list[str], requests: list[bytes],
                 deadline: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    counts: collections.Counter[str] = collections.Counter()

    async def one(address: str, offset: int) -> None:
        conn: http1.Connection | None = None
        k = offset
        while (left := deadline - time.monotonic()) > 0:
            if conn is None or conn.closed:
                try:
                    _, conn = await asyncio.wait_for(loop.create_connection(
                        http1.Connection, "127.0.0.1", port, local_addr=(address, 0)), left)
                    counts["connections"] += 1
                except (OSError, TimeoutError):
                    counts["connect_failed"] += 1
                    await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
                    continue
            request = requests[k % len(requests)]
            kind = "challenge" if b"/v1/session/challenge" in request[:64] else "enroll"
            k += 1
            try:
                status, _ = await asyncio.wait_for(conn.send(request), left)
            except (http1.ResponseError, TimeoutError):
                counts[f"{kind} no answer"] += 1
                conn.close()
                conn = None
                continue
            counts[f"{kind} {status}"] += 1
        if conn is not None:
            conn.close()

    started = time.monotonic()
    await asyncio.gather(*(one(a, i) for i, a in enumerate(addresses)))
    return {"counts": dict(counts), "seconds": time.monotonic() - started}


STREAM_HEAD_LIMIT = 16 * 1024


async def _streams(port: int, token: str, attempts: int, concurrency: int,
                   deadline: float) -> dict[str, Any]:
    """``attempts`` stream requests from one officer, ``concurrency`` at a time, each
    held until the gateway ends it or the deadline."""
    counts: collections.Counter[str] = collections.Counter()
    request = (f"GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n").encode()
    next_attempt = iter(range(attempts))

    async def one(i: int) -> None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.1", port, local_addr=(stream_address(i), 0)),
                max(0.01, deadline - time.monotonic()))
        except (OSError, TimeoutError):
            counts["connect_failed"] += 1
            return
        try:
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"),
                                          max(0.01, deadline - time.monotonic()))
            status = int(head.split(b" ", 2)[1])
            counts[f"status {status}"] += 1
            if status != 200:
                return
            counts["opened"] += 1
            while (left := deadline - time.monotonic()) > 0:
                data = await asyncio.wait_for(reader.read(65536), left)
                # The gateway ends a stream with an ``ended`` event and the last chunk; the
                # connection may stay open for another request, which this one never makes.
                if not data or b"event: ended" in data or data.endswith(b"0\r\n\r\n"):
                    counts["ended by the gateway"] += 1
                    return
            counts["held at the deadline"] += 1
        except TimeoutError:
            counts["held at the deadline"] += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError,
                IndexError):
            counts["closed before an answer"] += 1
        finally:
            writer.close()

    async def worker() -> None:
        for i in next_attempt:
            if time.monotonic() >= deadline:
                return
            counts["attempts"] += 1
            await one(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"counts": dict(counts)}


async def _idle(port: int, count: int, deadline: float) -> dict[str, Any]:
    """``count`` connections that send nothing, each opened again when closed."""
    counts: collections.Counter[str] = collections.Counter()

    async def one(i: int) -> None:
        while (left := deadline - time.monotonic()) > 0:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(
                    "127.0.0.1", port, local_addr=(idle_address(i), 0)), left)
            except (OSError, TimeoutError):
                counts["connect_failed"] += 1
                await asyncio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
                continue
            counts["opened"] += 1
            try:
                await asyncio.wait_for(reader.read(1), max(0.01, deadline - time.monotonic()))
                counts["closed by the gateway"] += 1
                await asyncio.sleep(0.05)  # before opening it again
            except TimeoutError:
                counts["held at the deadline"] += 1
            except OSError:
                counts["closed by the gateway"] += 1
            finally:
                writer.close()

    await asyncio.gather(*(one(i) for i in range(count)))
    return {"counts": dict(counts)}


def attacker(role: str, port: int, spec: dict[str, Any], inbox: Any, outbox: Any,
             nice: int) -> None:
    """One load generator process: prepares its requests, says it is ready, waits for
    the deadline (a ``time.monotonic()`` value, system-wide on Linux) and attacks."""
    if nice:
        os.nice(nice)
    try:
        requests = (flood_requests(port, spec["officer_ids"], spec["distinct"])
                    if role == "flood" else [])
        outbox.put((role, "ready", None))
        deadline = inbox.get(timeout=READY_TIMEOUT * 10)
        if deadline is None:
            return
        if role == "flood":
            result = asyncio.run(_flood(port, spec["addresses"], requests, deadline))
        elif role == "streams":
            result = asyncio.run(_streams(port, spec["token"], spec["attempts"],
                                          spec["concurrency"], deadline))
        else:
            result = asyncio.run(_idle(port, spec["count"], deadline))
        outbox.put((role, "done", result))
    except BaseException as exc:  # the parent reports it
        outbox.put((role, "failed", repr(exc)))


# --- the honest officers -----------------------------------------------------------------


@dataclass
class Phase:
    signins: int = 0
    signins_ok: int = 0
    signin_failures: collections.Counter[str] = field(default_factory=collections.Counter)
    signin_seconds: list[float] = field(default_factory=list)
    send_seconds: list[float] = field(default_factory=list)
    send_starts: list[float] = field(default_factory=list)  # seconds into the phase
    sends_failed: collections.Counter[str] = field(default_factory=collections.Counter)


@dataclass
class Honest:
    client: GatewayClient
    sender: Sender
    envelopes: list[bytes]


async def enroll_officers(url: str, codes: list[str], fingerprint: str
                          ) -> list[Credentials]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) \
            as http:
        roster = Roster()  # the first officer of a desk admits the others
        enrolled = []
        for code in codes:  # one at a time: each enrollment reloads the directory
            creds, answer = await enroll(http, url, code, OfficerSigningKey.generate(),
                                         OfficerEncryptionKey.generate(),
                                         fingerprint=fingerprint)
            await roster.join(http, creds, answer)
            enrolled.append(creds)
        return enrolled


async def honest_phase(officers: list[Honest], seconds: float, interval: float,
                       signin_every: float, used: list[int]) -> Phase:
    """Every officer signs in every ``signin_every`` seconds and, beside that, posts one
    envelope every ``interval`` seconds with the session it has, for ``seconds``; the
    officers' starts are spread over the first interval."""
    phase = Phase()
    begun = time.monotonic()
    end = begun + seconds

    async def sign_in(officer: Honest) -> None:
        phase.signins += 1
        t = time.perf_counter()
        try:
            await officer.client.sign_in()
        except ApiError as exc:
            phase.signin_failures[f"{exc.status} {exc.code}"] += 1
            return
        except (aiohttp.ClientError, TimeoutError) as exc:
            phase.signin_failures[type(exc).__name__] += 1
            return
        phase.signin_seconds.append(time.perf_counter() - t)
        phase.signins_ok += 1

    async def signing_in(k: int, officer: Honest) -> None:
        # Beside the sends, as a client renews its session while the old one still works.
        at = begun + interval * k / len(officers)
        while at < end:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            await sign_in(officer)
            at += signin_every

    async def sending(k: int, officer: Honest) -> None:
        # Spread over the first interval, so that the officers do not move in step.
        start = begun + interval * k / len(officers)
        n = 0
        while (at := start + n * interval) < end:
            n += 1
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            token = officer.client._token
            if token is None:
                phase.sends_failed["not signed in"] += 1
                continue
            body = officer.envelopes[used[k] % len(officer.envelopes)]
            used[k] += 1
            t = time.perf_counter()
            try:
                async with officer.client.http.post(
                        f"{officer.client.creds.gateway_url}/v1/messages", data=body,
                        headers={"Authorization": f"Bearer {token}",
                                 "Content-Type": ENVELOPE_TYPE}) as answer:
                    await answer.read()
                    status = answer.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                phase.sends_failed[type(exc).__name__] += 1
                continue
            if status != 201:
                phase.sends_failed[f"status {status}"] += 1
                continue
            took = time.perf_counter() - t
            phase.send_seconds.append(took)
            phase.send_starts.append(time.monotonic() - begun - took)

    await asyncio.gather(*(signing_in(k, o) for k, o in enumerate(officers)),
                         *(sending(k, o) for k, o in enumerate(officers)))
    return phase


# --- figures -----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def latency(values: list[float]) -> dict[str, Any]:
    def ms(v: float) -> float | None:
        return None if v != v else round(v * 1000, 2)

    return {"n": len(values), "p50_ms": ms(percentile(values, 0.5)),
            "p99_ms": ms(percentile(values, 0.99)),
            "max_ms": ms(max(values, default=math.nan))}


def phase_figures(phase: Phase, seconds: float, watch: Watch) -> dict[str, Any]:
    return {
        "seconds": seconds,
        "signins": phase.signins, "signins_ok": phase.signins_ok,
        "signin_success": round(phase.signins_ok / phase.signins, 4) if phase.signins else None,
        "signin_failures": dict(phase.signin_failures),
        "signin": latency(phase.signin_seconds),
        "send": latency(phase.send_seconds),
        "sends_failed": dict(phase.sends_failed),
        # The same sends without those started in the first RAMP_SECONDS of the phase
        # (when the attack starts: hundreds of connections and requests at once).
        "send_after_ramp": latency([took for took, at in zip(phase.send_seconds,
                                                             phase.send_starts, strict=True)
                                    if at >= RAMP_SECONDS]),
        # Sends slower than SLOW_SEND, counted by the second of the phase they started in.
        "slow_sends_by_second": dict(sorted(collections.Counter(
            str(int(at)) for took, at in zip(phase.send_seconds, phase.send_starts,
                                             strict=True)
            if took >= SLOW_SEND).items(), key=lambda kv: int(kv[0]))),
        **watch.figures(),
    }


# --- the run -----------------------------------------------------------------------------


def split(items: list[str], parts: int) -> list[list[str]]:
    return [items[k::parts] for k in range(parts)]


async def measure_phases(gw: ServerProcess, codes: list[str], fingerprint: str,
                         args: argparse.Namespace, start_attack: Any,
                         collect: Any) -> dict[str, Any]:
    url = gw.url
    t = time.perf_counter()
    creds = await enroll_officers(url, codes, fingerprint)
    honest_creds, attacker_creds = creds[:args.honest], creds[-1]
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    sessions = [aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(
        local_addr=(honest_address(k), 0))) for k in range(args.honest)]
    try:
        officers = []
        sends_per_phase = math.ceil(max(args.seconds, args.unloaded_seconds)
                                    / args.send_interval) + 2
        for k, c in enumerate(honest_creds):
            client = GatewayClient(sessions[k], c)
            await client.sign_in()
            desk = (await client.directory())[f"{RECIPIENT_DESK}@{c.gateway_id}"]
            sender = Sender(c, {}, desk.encryption_keys())
            envelopes = [e for e, _ in seal(sender, hotline_payload(), 2 * sends_per_phase)]
            officers.append(Honest(client, sender, envelopes))
        async with aiohttp.ClientSession(timeout=timeout) as http:
            bad = GatewayClient(http, attacker_creds)
            await bad.sign_in()
            assert bad._token is not None
            attacker_token = bad._token
        setup = time.perf_counter() - t
        used = [0] * len(officers)
        ids = [c.officer_id for c in honest_creds]

        quiet_log_before = gw.log.stat().st_size
        with Watch(gw.pid) as quiet:
            unloaded = await honest_phase(officers, args.unloaded_seconds,
                                          args.send_interval, args.signin_every, used)
        quiet_log_bytes = gw.log.stat().st_size - quiet_log_before
        await asyncio.sleep(0.5)
        metrics_port = int((gw.port_file.parent / "metrics-port").read_text())
        counters_before = scrape(metrics_port)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, start_attack, ids, attacker_token)
        log_before = gw.log.stat().st_size
        with Watch(gw.pid) as loud:
            attacked = await honest_phase(officers, args.seconds, args.send_interval,
                                          args.signin_every, used)
        attackers = await loop.run_in_executor(None, collect)
        await asyncio.sleep(1.0)  # what the gateway logs as the attack ends
        log_bytes = gw.log.stat().st_size - log_before
        counters_after = scrape(metrics_port)
    finally:
        for s in sessions:
            await s.close()
    counters = {name: {reason: v - counters_before[name].get(reason, 0.0)
                       for reason, v in values.items()
                       if v - counters_before[name].get(reason, 0.0)}
                for name, values in counters_after.items()}
    quiet_fig = phase_figures(unloaded, args.unloaded_seconds, quiet)
    loud_fig = phase_figures(attacked, args.seconds, loud)
    q99, l99 = quiet_fig["send"]["p99_ms"], loud_fig["send"]["p99_ms"]
    flood = attackers["flood"]
    flood_answers = sum(v for k, v in flood["counts"].items()
                        if k.startswith(("challenge ", "enroll ")) and "no answer" not in k)
    ratio = round(l99 / q99, 2) if q99 and l99 else None
    a99 = loud_fig["send_after_ramp"]["p99_ms"]
    ratio_after_ramp = round(a99 / q99, 2) if q99 and a99 else None
    return {
        "setup_seconds": round(setup, 1),
        "honest_officers": args.honest,
        "send_interval_seconds": args.send_interval,
        "signin_every_seconds": args.signin_every,
        "unloaded": quiet_fig,
        "attack": loud_fig,
        "send_p99_ratio": ratio,
        "send_p99_ratio_after_ramp": ratio_after_ramp,
        "gateway_log_bytes_during_attack": log_bytes,
        "gateway_log_bytes_unloaded": quiet_log_bytes,
        "attackers": {
            "flood_addresses": args.addresses,
            "flood_processes": args.flood_processes,
            "flood_answered_per_second": round(flood_answers / flood["seconds"], 1)
            if flood["seconds"] else None,
            "flood": flood["counts"],
            "stream_attempts_asked": args.streams,
            "streams": attackers["streams"]["counts"],
            "idle_connections_asked": args.idle,
            "idle": attackers["idle"]["counts"],
            "nice": args.nice,
        },
        "gateway_counters": counters,
        "targets": {"signin_success": TARGET_SIGNIN, "send_p99_ratio": TARGET_P99_RATIO},
        "met": {
            "signin_success": loud_fig["signin_success"] == TARGET_SIGNIN,
            "send_p99_ratio": ratio is not None and ratio <= TARGET_P99_RATIO,
        },
    }


def measure(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    config, codes, fingerprint = make_gateway(directory, args.honest, args.line_rate)
    ctx = multiprocessing.get_context("spawn")
    outbox = ctx.Queue()
    procs: list[tuple[Any, Any]] = []
    with ServerProcess.gateway(config, name="the gateway", start_seconds=START_TIMEOUT,
                               stop_seconds=STOP_TIMEOUT) as gw:
        addresses = [flood_address(i) for i in range(args.addresses)]

        def start_attack(ids: list[str], token: str) -> None:
            specs: list[tuple[str, dict[str, Any]]] = [
                ("flood", {"addresses": part, "officer_ids": ids, "distinct": 256})
                for part in split(addresses, args.flood_processes)]
            specs += [("streams", {"token": token, "attempts": args.streams,
                                   "concurrency": args.stream_concurrency}),
                      ("idle", {"count": args.idle})]
            for role, spec in specs:
                inbox = ctx.Queue()
                proc = ctx.Process(target=attacker, args=(role, gw.port, spec, inbox, outbox,
                                                          args.nice), daemon=True)
                proc.start()
                procs.append((proc, inbox))
            for _ in procs:
                role, what, detail = outbox.get(timeout=READY_TIMEOUT)
                if what != "ready":
                    raise RuntimeError(f"the {role} load generator failed: {detail}")
            deadline = time.monotonic() + args.seconds
            for _, inbox in procs:
                inbox.put(deadline)

        def collect() -> dict[str, Any]:
            results: dict[str, Any] = {"flood": {"counts": collections.Counter(),
                                                 "seconds": 0.0}}
            for _ in procs:
                role, what, detail = outbox.get(timeout=args.seconds + RESULT_TIMEOUT)
                if what != "done":
                    raise RuntimeError(f"the {role} load generator failed: {detail}")
                if role == "flood":
                    results["flood"]["counts"].update(detail["counts"])
                    results["flood"]["seconds"] = max(results["flood"]["seconds"],
                                                      detail["seconds"])
                else:
                    results[role] = detail
            results["flood"]["counts"] = dict(results["flood"]["counts"])
            return results

        try:
            results = asyncio.run(measure_phases(gw, codes, fingerprint, args, start_attack,
                                                 collect))
        finally:
            for proc, inbox in procs:
                if proc.is_alive():
                    inbox.put(None)
                proc.join(timeout=5)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
        status = gw.returncode
    if status is not None:
        raise RuntimeError(f"the gateway exited during the run (status {status})")
    limits = ("defaults" if args.line_rate is None
              else f"defaults but anonymous_line_per_second = {args.line_rate:g}")
    return {**results, "cpu_cores": os.cpu_count(), "limits": limits, "log_level": "info"}


def report(r: dict[str, Any]) -> None:
    def ms(d: dict[str, Any]) -> str:
        return f"p50 {d['p50_ms']} ms, p99 {d['p99_ms']} ms, max {d['max_ms']} ms (n={d['n']})"

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.1%}"

    a = r["attackers"]
    print(f"abuse benchmark: one gateway process ({GATEWAY_ID}) on 127.0.0.1, limits: "
          f"{r['limits']}, log level {r['log_level']}; {r['honest_officers']} honest officers each "
          f"from its own address, a send every {r['send_interval_seconds']} s and a sign-in "
          f"every {r['signin_every_seconds']} s; the machine has {r['cpu_cores']} cores, "
          "SHARED by the gateway, the honest clients and the attackers")
    print(f"  attack: anonymous flood (challenges and enrollment guesses) from "
          f"{a['flood_addresses']} addresses in {a['flood_processes']} processes, "
          f"{a['stream_attempts_asked']} stream attempts by one officer, "
          f"{a['idle_connections_asked']} idle connections")
    for name in ("unloaded", "attack"):
        p = r[name]
        print(f"  {name:>8} ({p['seconds']} s): sign-ins {p['signins_ok']}/{p['signins']} "
              f"({pct(p['signin_success'])}) {p['signin_failures'] or ''}; sends "
              f"{ms(p['send'])} {p['sends_failed'] or ''}; peak descriptors "
              f"{p['peak_descriptors']}, peak RSS {p['peak_rss_mib']} MiB")
    print(f"  honest sends under attack, without the first {RAMP_SECONDS:g} s: "
          f"{ms(r['attack']['send_after_ramp'])}; p99 / unloaded p99: "
          f"{r['send_p99_ratio_after_ramp']}; slow (>= {SLOW_SEND * 1000:g} ms) by second: "
          f"{r['attack']['slow_sends_by_second']}")
    print(f"  honest send p99 under attack / unloaded: {r['send_p99_ratio']} "
          f"(target <= {TARGET_P99_RATIO:g}); honest sign-in success under attack "
          f"{pct(r['attack']['signin_success'])} (target 100 %)")
    print(f"  gateway log written during the attack: {r['gateway_log_bytes_during_attack']:,} "
          f"bytes (unloaded: {r['gateway_log_bytes_unloaded']:,} bytes)")
    print(f"  flood: {a['flood_answered_per_second']:,} answers/s; {a['flood']}")
    print(f"  streams: {a['streams']}")
    print(f"  idle: {a['idle']}")
    print(f"  gateway counters during the attack: {r['gateway_counters']}")
    print(f"  targets met: {r['met']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="attack duration")
    parser.add_argument("--unloaded-seconds", type=float, default=10.0,
                        help="the honest officers alone, before the attack")
    parser.add_argument("--honest", type=int, default=20, help="honest officers")
    parser.add_argument("--send-interval", type=float, default=0.5,
                        help="seconds between two sends of one honest officer")
    parser.add_argument("--signin-every", type=float, default=5.0,
                        help="seconds between two sign-ins of one honest officer")
    parser.add_argument("--addresses", type=int, default=400,
                        help="loopback addresses of the anonymous flood")
    parser.add_argument("--flood-processes", type=int, default=2)
    parser.add_argument("--streams", type=int, default=600,
                        help="stream attempts by the compromised officer")
    parser.add_argument("--stream-concurrency", type=int, default=20)
    parser.add_argument("--idle", type=int, default=300, help="idle connections")
    parser.add_argument("--nice", type=int, default=0,
                        help="niceness added to the load generators")
    parser.add_argument("--line-rate", type=float, default=None,
                        help="[limits] anonymous_line_per_second (default: the gateway's)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 3 s attack, 2 s unloaded, 3 officers, 40 addresses, "
                        "30 streams, 20 idle, one flood process")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="make the gateway in DIR (must not exist) and keep it")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.unloaded_seconds, args.honest = 3.0, 2.0, 3
        args.addresses, args.streams, args.idle, args.flood_processes = 40, 30, 20, 1
        args.stream_concurrency = 5
    if not (0 < args.seconds <= 600 and 0 < args.unloaded_seconds <= 600
            and 1 <= args.honest <= 250 and 1 <= args.addresses <= 60_000
            and 1 <= args.flood_processes <= 16 and 0 <= args.streams <= 100_000
            and 1 <= args.stream_concurrency <= 1000 and 0 <= args.idle <= 10_000
            and args.send_interval > 0 and args.signin_every > 0 and 0 <= args.nice <= 19):
        parser.error("a figure out of range (see --help)")
    if args.keep is not None:
        if args.keep.exists():
            parser.error(f"--keep {args.keep}: already exists")
        results = measure(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="fpg-abuse-") as tmp:
            results = measure(args, Path(tmp) / "gw")
    if args.json:
        print(json.dumps({"benchmark": "abuse", "quick": args.quick, "results": results}))
    else:
        report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

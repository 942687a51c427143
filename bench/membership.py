"""Membership benchmark: what proving a desk's members costs an officer's every send.

Before it seals for a desk, the client asks the desk's gateway for membership proofs
(``GET /v1/desks/{desk}/proofs``) and checks them (docs/PROTOCOL.md 7.8: the checkpoint's
Ed25519 signature, a consistency proof from the checkpoint it remembers, and for every
member its ``admitted`` entry and inclusion proof). This benchmark measures that check
next to the rest of a send, for desks of several sizes, in one run.

One gateway process runs on 127.0.0.1, made as ``bench/accept.py`` makes one (``gateway
init --insecure-dev-keys``, ``gateway desks add``, ``gateway officers invite``, ``[limits]``
raised so that no rate limiter caps the run, ``[log] level = warning``): a ``trafficking``
desk with one officer who sends, and one desk ``desk-N`` of N officers for each size of
``--sizes``. Every officer enrolls through the client library; the first of a desk is
admitted by the operator at enrollment, each later one by a member
(``gateway.client.roster.Roster``), so every desk is a real admission chain with one
``admitted`` ledger entry per member. The sender's client keeps what it trusts in a
``trust.json`` as ``gateway-client`` does (``--trust memory`` keeps it in memory).

For each desk it times, in rounds that take turns (after ``--warmup`` rounds that do not
count), with the sender's directory already fetched and verified:

1. **the membership check**: ``GatewayClient._check_membership`` (the proofs request and
   ``check_membership`` on its answer), split into the request (with its JSON parsing)
   and the client's checking of the answer;
2. **a whole send**: ``GatewayClient.send`` of a small hotline alert (flash) to the desk,
   which proves the members by their admission chain (7.6) and by the ledger (1), seals
   and posts, and must come back ``accepted``;
3. **the same envelope without the check**: the same payload and header sealed with
   ``seal_envelope`` for the desk's members and posted to ``POST /v1/messages`` with the
   officer's session (``GatewayClient.request``), also ``accepted``;
4. for reference, the admission-chain check alone (``VerifiedDirectory.check_members``),
   the other proof ``send`` makes before sealing, which predates 7.8;

p50, p99 and mean of each, and the ratio of (1) to (3) and of (1) to (2): what share of a
send the check costs as desks grow. Every message is really accepted and stored, so the
gateway's ledger grows during the run and its checkpoints move on (every
``checkpoint_every`` entries or ``checkpoint_interval`` seconds); how many new checkpoints
the client saw is printed. The client and the gateway share the machine's cores; the
cores each used, and any other process's, are printed beside the figures.

    python bench/membership.py [--sizes 1,10,50] [--reps 500] [--warmup 20]
                               [--seconds 240] [--trust file|memory] [--quick] [--json]
                               [--keep DIR]

``--quick`` is a smoke run (desks of 1 and 3, few rounds): its figures mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from accept import (
    REQUEST_TIMEOUT,
    START_TIMEOUT,
    STOP_TIMEOUT,
    cpu_seconds,
    gateway_command,
    init_benchmark_gateway,
    machine_busy_seconds,
    raised_limits,
)

from gateway.cli.process import ServerProcess
from gateway.client import payload
from gateway.client.api import ENVELOPE_TYPE, Credentials, GatewayClient, enroll
from gateway.client.roster import Roster
from gateway.client.trust import TRUST_FILE, TrustMemory
from gateway.crypto.envelope import EnvelopeHeader, new_message_id, seal_envelope
from gateway.crypto.keys import OfficerEncryptionKey, OfficerSigningKey
from gateway.protocol import jsontext

GATEWAY_ID = "vn-mps"
SENDER_DESK = "trafficking"
SIZES = (1, 10, 50)
QUICK_SIZES = (1, 3)
ALERT = {"type": "hotline",
         "text": "Khan cap: nghi van mua ban nguoi tai cua khau Moc Bai, xe tai 51C-123.45"}
LIFETIME_MS = 24 * 3600 * 1000
READY_SECONDS = 30.0  # for the directory to list every admitted member
OPERATIONS = ("check", "send", "plain", "chain")


def desk_name(size: int) -> str:
    return f"desk-{size}"


# --- the gateway -----------------------------------------------------------------------


def make_gateway(directory: Path, sizes: list[int]) -> tuple[Path, dict[str, list[str]], str]:
    """A gateway as an operator makes one: its config, the enrollment codes by desk (the
    sender's desk first), and its key's fingerprint."""
    config = init_benchmark_gateway(directory, "bench/membership.py")
    desks = [SENDER_DESK, *(desk_name(n) for n in sizes)]
    for desk in desks:
        gateway_command("desks", "add", desk, "--config", str(config))
    wanted = [SENDER_DESK] + [desk_name(n) for n in sizes for _ in range(n)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        codes = list(pool.map(lambda desk: gateway_command(
            "officers", "invite", "--desk", desk, "--config", str(config)).strip(), wanted))
    by_desk: dict[str, list[str]] = {desk: [] for desk in desks}
    for desk, code in zip(wanted, codes, strict=True):
        by_desk[desk].append(code)
    shown = gateway_command("keys", "show", "--config", str(config))
    fingerprint = shown.split("fingerprint: ", 1)[1].splitlines()[0].strip()
    return config, by_desk, fingerprint


# --- the client side -------------------------------------------------------------------


class TimedClient(GatewayClient):
    """The library's client, recording how long its last ``get_json`` took (request and
    JSON parsing): in ``_check_membership`` that is the proofs request."""

    last_get: float = 0.0

    async def get_json(self, path: str) -> Any:
        started = time.perf_counter()
        try:
            return await super().get_json(path)
        finally:
            self.last_get = time.perf_counter() - started


@dataclass
class Samples:
    seconds: dict[str, list[float]] = field(
        default_factory=lambda: {k: [] for k in (*OPERATIONS, "check_request")})
    envelope_bytes: int = 0


async def enroll_all(http: aiohttp.ClientSession, url: str, codes: dict[str, list[str]],
                     fingerprint: str) -> Credentials:
    """Every officer enrolled and admitted (one at a time: each enrollment reloads the
    gateway's directory); the sender's credentials."""
    roster = Roster()
    sender: Credentials | None = None
    for desk, desk_codes in codes.items():
        for code in desk_codes:
            creds, answer = await enroll(http, url, code, OfficerSigningKey.generate(),
                                         OfficerEncryptionKey.generate(),
                                         fingerprint=fingerprint)
            await roster.join(http, creds, answer)
            if desk == SENDER_DESK:
                sender = creds
    assert sender is not None
    return sender


async def wait_for_members(client: GatewayClient, sizes: list[int]) -> None:
    """Until the sender's verified directory lists every member of every desk."""
    deadline = time.monotonic() + READY_SECONDS
    while True:
        desks = await client.directory(refresh=True)
        listed = {n: len(desks[client.address(desk_name(n))].members)
                  if client.address(desk_name(n)) in desks else 0 for n in sizes}
        if all(listed[n] == n for n in sizes):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the directory still lists {listed} members "
                               f"(desk size: members) after {READY_SECONDS:g} s")
        await asyncio.sleep(0.2)


def header_for(client: GatewayClient, to: str) -> EnvelopeHeader:
    """The header ``GatewayClient.send`` makes for a flash hotline alert to ``to``."""
    mid = new_message_id()
    now = client.clock.now_ms()
    return EnvelopeHeader(id=mid, kind="hotline", priority="flash", sender=client.creds.desks[0],
                          recipient=to, created=now, expires=now + LIFETIME_MS, thread=mid)


def accepted(answer: dict[str, Any], what: str) -> None:
    if answer.get("status") != "accepted":
        raise RuntimeError(f"{what} was not accepted: {answer}")


async def measure_desks(client: TimedClient, sizes: list[int], reps: int, warmup: int,
                        budget: float) -> tuple[dict[int, Samples], int, int, float]:
    """Rounds of every operation on every desk, taking turns; the samples by desk size,
    the rounds that counted, the new checkpoints the client saw and the measured time."""
    verified = await client.verified_directory()
    keys = await client.gateway_keys(client.creds.gateway_id)
    addresses = {n: client.address(desk_name(n)) for n in sizes}
    samples = {n: Samples() for n in sizes}

    def operations(n: int) -> dict[str, Callable[[], Awaitable[None]]]:
        address = addresses[n]
        desk = verified.desks[address]

        async def check() -> None:
            await client._check_membership(address, desk)

        async def send() -> None:
            accepted(await client.send("hotline", address, ALERT, priority="flash",
                                       lifetime_ms=LIFETIME_MS), "a send")

        async def plain() -> None:
            data = seal_envelope(header_for(client, address), payload.encode(ALERT, "hotline"),
                                 client.creds.signing, desk.encryption_keys())
            samples[n].envelope_bytes = len(data)
            _, answer, _ = await client.request("POST", "/v1/messages", data=data,
                                                headers={"Content-Type": ENVELOPE_TYPE})
            accepted(jsontext.loads(answer), "an envelope posted without the check")

        async def chain() -> None:
            verified.check_members(address, keys)

        return {"check": check, "send": send, "plain": plain, "chain": chain}

    ops = {n: operations(n) for n in sizes}
    gateway = client.creds.gateway_id
    checkpoints, last = 0, client.trust.log(gateway)
    counted = 0
    started = time.perf_counter()
    for rep in range(warmup + reps):
        if rep >= warmup and time.perf_counter() - started > budget:
            break
        # Take turns, so that a slow moment of the machine hits every operation alike.
        order = [OPERATIONS[(rep + k) % len(OPERATIONS)] for k in range(len(OPERATIONS))]
        turn = sizes[rep % len(sizes):] + sizes[:rep % len(sizes)]
        for n in turn:
            for what in order:
                t = time.perf_counter()
                await ops[n][what]()
                elapsed = time.perf_counter() - t
                if rep >= warmup:
                    samples[n].seconds[what].append(elapsed)
                    if what == "check":
                        samples[n].seconds["check_request"].append(client.last_get)
                seen = client.trust.log(gateway)
                if seen != last:
                    checkpoints += rep >= warmup
                    last = seen
        if rep == warmup - 1:
            started = time.perf_counter()  # the budget is for the rounds that count
        counted += rep >= warmup
    return samples, counted, checkpoints, time.perf_counter() - started


# --- figures ---------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def stats(values: list[float]) -> dict[str, float | int]:
    def ms(v: float) -> float:
        return round(v * 1000, 3)

    return {"n": len(values), "p50_ms": ms(percentile(values, 0.50)),
            "p99_ms": ms(percentile(values, 0.99)),
            "mean_ms": ms(statistics.fmean(values)) if values else math.nan,
            "max_ms": ms(max(values, default=math.nan))}


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def summarize(samples: Samples, members: int) -> dict[str, Any]:
    s = samples.seconds
    verify = [total - request for total, request in zip(s["check"], s["check_request"],
                                                          strict=True)]
    out: dict[str, Any] = {"members": members, "envelope_bytes": samples.envelope_bytes,
                           "check": stats(s["check"]),
                           "check_request": stats(s["check_request"]),
                           "check_verify": stats(verify),
                           "send": stats(s["send"]), "plain": stats(s["plain"]),
                           "chain": stats(s["chain"])}
    for q in ("p50", "p99"):
        key = f"{q}_ms"
        out[f"check_to_plain_{q}"] = ratio(out["check"][key], out["plain"][key])
        out[f"check_to_send_{q}"] = ratio(out["check"][key], out["send"][key])
        out[f"send_to_plain_{q}"] = ratio(out["send"][key], out["plain"][key])
    return out


class Cores:
    """CPU used during the measured rounds, in cores (None where /proc is not there)."""

    def __init__(self, gateway_pid: int) -> None:
        self.gateway_pid = gateway_pid
        self._start: list[float | None] = []

    def _now(self) -> list[float | None]:
        return [cpu_seconds(self.gateway_pid), cpu_seconds(os.getpid()),
                machine_busy_seconds(), time.perf_counter()]

    def start(self) -> None:
        self._start = self._now()

    def stop(self) -> dict[str, float | None]:
        now = self._now()
        wall = (now[3] or 0.0) - (self._start[3] or 0.0)
        gw, client, machine = (None if a is None or b is None or wall <= 0 else (b - a) / wall
                               for a, b in zip(self._start[:3], now[:3], strict=True))
        others = (None if gw is None or client is None or machine is None
                  else max(0.0, machine - gw - client))
        return {"gateway": _r(gw), "client (this process)": _r(client),
                "other processes": _r(others)}


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# --- the run ---------------------------------------------------------------------------


async def client_side(url: str, codes: dict[str, list[str]], fingerprint: str,
                      args: argparse.Namespace, sizes: list[int], directory: Path,
                      cores: Cores) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        t = time.perf_counter()
        sender = await enroll_all(http, url, codes, fingerprint)
        profile = directory / "client"  # where gateway-client would keep trust.json
        profile.mkdir()
        trust = TrustMemory(profile / TRUST_FILE if args.trust == "file" else None)
        client = TimedClient(http, sender, trust=trust)
        await client.sign_in()
        await wait_for_members(client, sizes)
        for n in sizes:  # the whole path works, once, before any clock
            accepted(await client.send("hotline", desk_name(n), ALERT, priority="flash"),
                     "the first send")
        enrolled = time.perf_counter() - t
        gc.collect()
        cores.start()
        samples, counted, checkpoints, seconds = await measure_desks(
            client, sizes, args.reps, args.warmup, args.seconds)
        used = cores.stop()
        log = client.trust.log(client.creds.gateway_id)
    return {
        "cpu_cores": os.cpu_count(),
        "sizes": sizes,
        "rounds": counted, "rounds_asked": args.reps, "warmup_rounds": args.warmup,
        "budget_seconds": args.seconds, "measured_seconds": round(seconds, 1),
        "enroll_seconds": round(enrolled, 1),
        "trust": args.trust,
        "alert_payload_bytes": len(payload.encode(ALERT, "hotline")),
        "limits": {k: v for k, (v, _) in raised_limits().items()},
        "new_checkpoints_seen": checkpoints,
        "checkpoint_size_at_end": log.size if log is not None else None,
        "cores": used,
        "desks": {str(n): summarize(samples[n], n) for n in sizes},
    }


def measure(args: argparse.Namespace, directory: Path, sizes: list[int]) -> dict[str, Any]:
    t = time.perf_counter()
    config, codes, fingerprint = make_gateway(directory, sizes)
    operator = time.perf_counter() - t
    with ServerProcess.gateway(config, name="the gateway", start_seconds=START_TIMEOUT,
                               stop_seconds=STOP_TIMEOUT) as gw:
        results = asyncio.run(client_side(gw.url, codes, fingerprint, args, sizes, directory,
                                          Cores(gw.pid)))
        status = gw.returncode
    if status is not None:
        raise RuntimeError(f"the gateway exited during the run (status {status})")
    return {**results, "operator_setup_seconds": round(operator, 1)}


def report(r: dict[str, Any]) -> None:
    def ms(d: dict[str, Any]) -> str:
        return f"{d['p50_ms']:7.2f} {d['p99_ms']:7.2f}"

    def pct(v: float | None) -> str:
        return "    -" if v is None else f"{v:5.0%}"

    print(f"membership benchmark: one gateway process ({GATEWAY_ID}) on 127.0.0.1, one officer "
          f"sending a {r['alert_payload_bytes']}-byte flash hotline alert to desks of "
          f"{', '.join(map(str, r['sizes']))} members (trust memory: {r['trust']})")
    print(f"  {r['rounds']} rounds measured ({r['warmup_rounds']} warm-up rounds before), "
          f"{r['measured_seconds']} s; setup: operator commands {r['operator_setup_seconds']} s, "
          f"enrollments and first sends {r['enroll_seconds']} s; the machine has "
          f"{r['cpu_cores']} cores, SHARED by the gateway and this client")
    print("  ms, p50 and p99: check = proofs request + check_membership "
          "(request incl. JSON parsing / client checking); send = GatewayClient.send; "
          "plain = seal + POST without any check; chain = admission-chain check")
    print(f"{'members':>7} | {'check':>15} | {'request':>15} | {'checking':>15} | "
          f"{'send':>15} | {'plain':>15} | {'chain':>15} | check/plain | check/send")
    for n, d in r["desks"].items():
        print(f"{n:>7} | {ms(d['check'])} | {ms(d['check_request'])} | "
              f"{ms(d['check_verify'])} | {ms(d['send'])} | {ms(d['plain'])} | "
              f"{ms(d['chain'])} | {pct(d['check_to_plain_p50'])} {pct(d['check_to_plain_p99'])}"
              f" | {pct(d['check_to_send_p50'])} {pct(d['check_to_send_p99'])}")
    print(f"  new checkpoints seen by the client while measuring: {r['new_checkpoints_seen']} "
          f"(the last one covers {r['checkpoint_size_at_end']} ledger entries)")
    print("  cores used while measuring: " + ", ".join(
        f"{k} {v:.2f}" for k, v in r["cores"].items() if v is not None))
    others = r["cores"].get("other processes")
    if others is not None and others >= 0.15:
        print(f"WARNING: other processes used {others:.2f} cores during the run; the figures "
              "are slower than on a quiet machine")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the membership check of a send, next to "
                                     "the whole send and to seal + POST without it")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="desk sizes, comma-separated (default %(default)s)")
    parser.add_argument("--reps", type=int, default=500, help="measured rounds")
    parser.add_argument("--warmup", type=int, default=20, help="rounds before the clock")
    parser.add_argument("--seconds", type=float, default=240.0,
                        help="stop measuring after this long, whatever --reps says")
    parser.add_argument("--trust", choices=("file", "memory"), default="file",
                        help="where the client keeps the checkpoints it saw (default: a "
                        "trust.json file, as gateway-client does)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: desks of {','.join(map(str, QUICK_SIZES))}, "
                        "30 rounds, 3 warm-up rounds")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="make the gateway in DIR (must not exist) and keep it")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.reps, args.warmup = ",".join(map(str, QUICK_SIZES)), 30, 3
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        parser.error("--sizes: comma-separated whole numbers")
    if (not sizes or len(set(sizes)) != len(sizes) or not all(1 <= n <= 500 for n in sizes)
            or args.reps < 1 or args.warmup < 0 or args.seconds <= 0):
        parser.error("--sizes: distinct sizes 1..500; --reps >= 1, --warmup >= 0, "
                     "--seconds > 0")
    if args.keep is not None:
        if args.keep.exists():
            parser.error(f"--keep {args.keep}: already exists")
        results = measure(args, args.keep, sizes)
    else:
        with tempfile.TemporaryDirectory(prefix="fpg-membership-") as tmp:
            results = measure(args, Path(tmp) / "gw", sizes)
    if args.json:
        print(json.dumps({"benchmark": "membership", "quick": args.quick, "results": results}))
    else:
        report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

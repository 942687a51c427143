"""The crash-suite driver: officers send mixed traffic through real gateways while one of
the gateways is killed with SIGKILL at random moments and started again.

    python -m tests.chaos.driver [--kills N] [--seconds S] [--seed SEED] [--dir DIR]

Phases, each bounded in time:

1. **setup**: two or three gateways (``cluster.py``), desks and enrollment codes written
   into their databases, started; one officer per desk enrolled through the officers' API
   (keys made here), each learning its own and its partners' signed directories.
2. **chaos**: every officer sends, one message after another: hotlines (flash, immediate,
   routine) and cases, to another desk of its own gateway or to a desk of a partner. Each
   envelope is sealed once; a send that failed (connection refused or reset, timeout, an
   error status) is not acknowledged and is posted again, the same bytes, until the
   gateway answers ``201 accepted`` or ``200 duplicate``: then it is acknowledged.
   Meanwhile the killer picks a gateway (seeded RNG), lets it serve 50-400 ms, kills it
   with SIGKILL and starts it again on the same port and data directory; now and then it
   also kills one while it is starting. It stops after ``kills`` kills (and ``seconds``).
   New messages are held back to about ``per_kill`` per kill: every start recomputes the
   whole ledger, so a long run must not let traffic outgrow the kills.
3. **drain**: no new messages; the senders get their last messages acknowledged; then
   every outbox must empty (read through each gateway's admin socket).
4. **check**: the gateways stop cleanly (SIGTERM, status 0), every inbox row is read from
   the SQLite files and compared with what was acknowledged (``checker.py``), every
   ledger is verified in full with ``gateway ledger verify``, every database passes
   ``PRAGMA integrity_check``, and the logs must hold no witness alarm (a partner's
   checkpoints forking or shrinking).

``run()`` returns a :class:`Report`; its ``summary`` is the one line the suite prints:
``kills=N acknowledged=A delivered=D lost=0 duplicated=0 unexpected=0 ledgers=ok``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import random
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from gateway.client import payload
from gateway.client.api import ENVELOPE_TYPE, ApiError, GatewayClient, enroll
from gateway.crypto.envelope import EnvelopeHeader, new_message_id, seal_envelope
from gateway.crypto.keys import EncryptionPublicKey, OfficerEncryptionKey, OfficerSigningKey
from gateway.errors import CryptoError, GatewayError
from gateway.logs import configure_logging
from tests.chaos.checker import Verdict, check
from tests.chaos.cluster import DESKS, ClusterError, Node, kill_all, make_cluster

GATEWAYS = ("vn-mps", "kh-cnp", "la-mps")
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10, connect=3)
SETUP_SECONDS = 60.0  # enrollment and directories
LIFETIME_MS = 86_400_000  # nothing expires during a run
#: Hotlines by priority, and cases: (kind, priority, weight).
MIX = (("hotline", "flash", 3), ("hotline", "immediate", 3), ("hotline", "routine", 3),
       ("case", "priority", 2), ("case", "immediate", 1))
#: Error-level log events that must never appear.
FORBIDDEN_EVENTS = ("partner_ledger_alarm",)


@dataclass
class Settings:
    kills: int = 100
    seconds: float = 0.0  # also keep killing at least this long
    seed: int = 0
    gateways: tuple[str, ...] = GATEWAYS
    senders_per_desk: int = 1
    pause: float = 0.08  # most seconds a sender waits between two messages
    retry_pause: float = 0.05  # seconds before a failed send is posted again
    per_kill: int = 110  # most new messages per kill, on average (see sender)
    uptime: tuple[float, float] = (0.05, 0.4)  # a victim serves this long before its kill
    aim_at_sends: float = 0.5  # share of kills that wait (<= 0.2 s) for a send in flight
    starting_kills: float = 0.15  # share of kills aimed at a gateway that is starting
    drain_seconds: float = 90.0  # last acknowledgements, then empty outboxes


@dataclass
class Officer:
    node: Node
    desk: str  # address
    client: GatewayClient


@dataclass
class Message:
    id: str
    sender: str
    recipient: str
    kind: str
    priority: str
    data: bytes
    attempts: int = 0
    outcome: str | None = None  # "accepted" or "duplicate" once acknowledged


@dataclass
class Kill:
    victim: str
    mode: str  # "serving", "starting" (not listening yet) or "started" (just listening)
    uptime: float  # seconds it had been listening (0 while starting)
    inflight: int  # officers' sends to it not answered at that moment
    life: dict[str, int]  # what it did since its previous kill (database counts)


@dataclass
class Report:
    settings: Settings
    root: Path
    kills: list[Kill]
    verdict: Verdict
    ledgers: dict[str, tuple[int, str]]
    integrity: dict[str, str]
    stops: dict[str, int | None]
    failures: Counter[str]  # failed send attempts by reason
    outcomes: Counter[str]  # acknowledged sends: accepted / duplicate
    receipts: Counter[str]  # partners' receipts recorded, by outcome
    log_errors: Counter[str]  # error-level log events by name
    unacknowledged: int
    anomalies: list[str]  # answers that must never happen (e.g. id_conflict)
    nodes: list[Node]
    throttled: float
    phases: dict[str, float]

    @property
    def failed_starts(self) -> int:
        return sum(len(n.failed_starts) for n in self.nodes)

    @property
    def ledgers_ok(self) -> bool:
        return all(status == 0 for status, _ in self.ledgers.values())

    @property
    def ok(self) -> bool:
        return (self.verdict.ok and self.ledgers_ok and not self.anomalies
                and all(v == "ok" for v in self.integrity.values())
                and all(s == 0 for s in self.stops.values())
                and not any(self.log_errors[e] for e in FORBIDDEN_EVENTS))

    @property
    def summary(self) -> str:
        return (f"kills={len(self.kills)} {self.verdict.counts()} "
                f"ledgers={'ok' if self.ledgers_ok else 'FAILED'}")

    def details(self) -> str:
        k = self.kills
        starting = sum(1 for x in k if x.mode == "starting")
        starts = sorted(t for n in self.nodes for t in n.start_seconds)
        median = starts[len(starts) // 2] if starts else 0.0
        lines = [
            f"chaos seed={self.settings.seed} gateways={','.join(self.settings.gateways)} "
            f"dir={self.root} phases=" + ",".join(f"{n}:{s:.1f}s"
                                                  for n, s in self.phases.items()),
            f"chaos kills: serving={len(k) - starting} starting={starting} "
            f"with_sends_in_flight={sum(1 for x in k if x.inflight)} "
            f"after_relaying_out={sum(1 for x in k if x.life.get('receipts', 0))} "
            f"after_receiving_relays={sum(1 for x in k if x.life.get('relayed_in', 0))} "
            f"after_checkpoints={sum(1 for x in k if x.life.get('checkpoints', 0))} "
            f"with_backlog={sum(1 for x in k if x.life.get('outbox_at_kill', 0))} "
            f"failed_starts={self.failed_starts} start_seconds=median:{median:.2f},"
            f"max:{max(starts, default=0.0):.2f}",
            f"chaos sends: messages={self.verdict.attempted} "
            f"acknowledged={dict(self.outcomes)} unacknowledged={self.unacknowledged} "
            f"recovered={self.verdict.recovered} throttled={self.throttled:.1f}s "
            f"failed_attempts={dict(self.failures)}",
            f"chaos relays: receipts={dict(self.receipts)} "
            f"log_errors={dict(self.log_errors) or '{}'} "
            f"stops={self.stops} integrity={set(self.integrity.values())} "
            f"ledger_entries={ {n.id: n.ledger_size for n in self.nodes} }",
        ]
        if self.anomalies:
            lines.append("chaos ANOMALIES: " + "; ".join(self.anomalies[:10]))
        if not self.verdict.ok:
            lines.append("chaos checker: " + self.verdict.examples())
        for gid, (status, out) in self.ledgers.items():
            if status != 0:
                lines.append(f"chaos ledger {gid}: status {status}: {out[-500:]}")
        return "\n".join(lines)


class Driver:
    def __init__(self, settings: Settings, root: Path) -> None:
        self.s = settings
        self.root = root
        self.rng = random.Random(settings.seed)  # the killer's choices
        self.nodes: list[Node] = []
        self.officers: list[Officer] = []
        self.keys: dict[str, list[EncryptionPublicKey]] = {}  # desk address -> keys
        self.messages: dict[str, Message] = {}
        self.failures: Counter[str] = Counter()
        self.anomalies: list[str] = []
        self.kills: list[Kill] = []
        self.last_life: dict[str, dict[str, int]] = {}
        self.stop_new = asyncio.Event()
        self.give_up_at = float("inf")
        self.phases: dict[str, float] = {}
        self.throttled = 0.0  # seconds the senders waited for kills to catch up (mean)

    # --- setup -------------------------------------------------------------------------

    async def setup(self, http: aiohttp.ClientSession) -> None:
        self.nodes = make_cluster(self.root, self.s.gateways, random.Random())
        codes = {}
        for node in self.nodes:
            codes[node.id] = await node.add_desks(
                [d for d in DESKS for _ in range(self.s.senders_per_desk)])
        await asyncio.gather(*(node.start() for node in self.nodes))
        for node in self.nodes:
            assert node.key is not None
            for desk in DESKS:
                for _ in range(self.s.senders_per_desk):
                    creds, answer = await enroll(http, node.url, codes[node.id].pop(desk),
                                                 OfficerSigningKey.generate(),
                                                 OfficerEncryptionKey.generate(),
                                                 fingerprint=node.key.fingerprint)
                    await node.members.join(http, creds, answer)
                    client = GatewayClient(http, creds)
                    await client.sign_in()
                    self.officers.append(Officer(node, f"{desk}@{node.id}", client))
        # Every officer's client must know every desk it may write to, with its members:
        # its own gateway's directory, and each partner's countersigned by its gateway.
        deadline = time.monotonic() + SETUP_SECONDS
        for officer in self.officers:
            for node in self.nodes:
                while not await self._knows(officer, node):
                    if time.monotonic() > deadline:
                        raise ClusterError(f"{officer.desk} does not learn the directory "
                                           f"of {node.id} within {SETUP_SECONDS:g} s")
                    await asyncio.sleep(0.1)

    async def _knows(self, officer: Officer, node: Node) -> bool:
        try:
            desks = await officer.client.directory(refresh=True, gateway=node.id)
        except (TimeoutError, aiohttp.ClientError, GatewayError, CryptoError):
            return False
        wanted = [f"{d}@{node.id}" for d in DESKS]
        if not all(a in desks and len(desks[a].members) == self.s.senders_per_desk
                   for a in wanted):
            return False
        for address in wanted:
            self.keys[address] = desks[address].encryption_keys()
        return True

    # --- traffic -----------------------------------------------------------------------

    def compose(self, officer: Officer, rng: random.Random) -> Message:
        """A new message from ``officer``: to another desk of its gateway (a third of the
        time) or to a desk of a partner; sealed once, for good."""
        here = officer.node.id
        if rng.random() < 1 / 3:
            recipient = rng.choice([f"{d}@{here}" for d in DESKS
                                    if f"{d}@{here}" != officer.desk])
        else:
            partner = rng.choice([n.id for n in self.nodes if n.id != here])
            recipient = f"{rng.choice(DESKS)}@{partner}"
        kind, priority = rng.choices([(k, p) for k, p, _ in MIX],
                                     weights=[w for _, _, w in MIX])[0]
        if kind == "case":
            deadline = datetime.date.today() + datetime.timedelta(days=30)
            doc = {"type": "case", "case_ref": f"CHAOS-{rng.randrange(10**6):06d}",
                   "legal_basis": "treaty", "offence": "chaos test offence",
                   "requested_actions": ["chaos test action"],
                   "deadline": deadline.isoformat(), "text": "chaos test request"}
        else:
            doc = {"type": "hotline", "text": f"chaos test alert {rng.randrange(10**6)}"}
        mid = new_message_id()
        now = officer.client.clock.now_ms()
        header = EnvelopeHeader(id=mid, kind=kind, priority=priority, sender=officer.desk,
                                recipient=recipient, created=now, expires=now + LIFETIME_MS,
                                thread=mid)
        data = seal_envelope(header, payload.encode(doc, kind), officer.client.creds.signing,
                             self.keys[recipient])
        return Message(mid, officer.desk, recipient, kind, priority, data)

    async def post(self, officer: Officer, message: Message) -> bool:
        """One attempt; whether the gateway acknowledged the message."""
        node = officer.node
        message.attempts += 1
        node.inflight += 1
        try:
            status, body, _ = await officer.client.request(
                "POST", "/v1/messages", data=message.data,
                headers={"Content-Type": ENVELOPE_TYPE})
        except ApiError as exc:
            self.failures[f"http_{exc.status}_{exc.code}"] += 1
            if exc.status == 409 or exc.status in (400, 403, 404):
                self.anomalies.append(f"{message.id} to {message.recipient}: {exc.message}")
            return False
        except aiohttp.ClientConnectorError:
            self.failures["refused"] += 1
            return False
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionError):
            self.failures["reset"] += 1
            return False
        except TimeoutError:
            self.failures["timeout"] += 1
            return False
        except (aiohttp.ClientError, OSError, GatewayError, ValueError) as exc:
            self.failures[type(exc).__name__] += 1
            return False
        finally:
            node.inflight -= 1
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
        outcome = doc.get("status")
        if doc.get("id") != message.id or (status, outcome) not in (
                (201, "accepted"), (200, "duplicate")):
            self.anomalies.append(f"{message.id}: answered {status} {body[:200]!r}")
            return False
        message.outcome = outcome
        return True

    async def sender(self, officer: Officer, rng: random.Random) -> None:
        while not self.stop_new.is_set():
            # At most ``per_kill`` messages per kill on average: each start recomputes the
            # whole ledger, so in a long run traffic must not outgrow the kills.
            while len(self.messages) >= (len(self.kills) + 5) * self.s.per_kill:
                if self.stop_new.is_set():
                    return
                self.throttled += 0.02 / len(self.officers)
                await asyncio.sleep(0.02)
            message = self.compose(officer, rng)
            self.messages[message.id] = message
            while not await self.post(officer, message):
                if time.monotonic() > self.give_up_at:
                    return
                await asyncio.sleep(self.s.retry_pause)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_new.wait(), rng.uniform(0, self.s.pause))

    # --- the killer ----------------------------------------------------------------------

    async def killer(self) -> None:
        s, rng = self.s, self.rng
        started = time.monotonic()
        while len(self.kills) < s.kills or time.monotonic() - started < s.seconds:
            victim = rng.choice(self.nodes)
            uptime = rng.uniform(*s.uptime)
            await asyncio.sleep(max(0.0, victim.ready_at + uptime - time.monotonic()))
            if rng.random() < s.aim_at_sends:
                # Wait (a little) for an officer's send to be on its way to the victim.
                for _ in range(100):
                    if victim.inflight:
                        break
                    await asyncio.sleep(0.002)
            await self.kill(victim, "serving")
            if rng.random() < s.starting_kills:
                # Kill it again while it starts: somewhere between the interpreter's
                # start and the first requests it serves (opening the database,
                # recomputing the ledger, first relays).
                await victim.spawn()
                await asyncio.sleep(rng.uniform(0.2, 1.0))
                await self.kill(victim, "starting" if not victim.listening() else "started")
            await victim.start()

    async def kill(self, victim: Node, mode: str) -> None:
        uptime = time.monotonic() - victim.ready_at if mode == "serving" else 0.0
        # What the victim did since it was last killed: read from its database right
        # after the kill (read-only, before the restart recovers it).
        inflight = victim.inflight
        await victim.kill()
        now = victim.snapshot()
        before = self.last_life.get(victim.id, {})
        life = {k: v - before.get(k, 0) for k, v in now.items()}
        life["outbox_at_kill"] = now.get("outbox", 0)
        if now:
            self.last_life[victim.id] = now
        self.kills.append(Kill(victim.id, mode, uptime, inflight, life))

    # --- drain ---------------------------------------------------------------------------

    async def drained(self) -> bool:
        for node in self.nodes:
            try:
                report = await node.partners_report()
            except GatewayError:
                return False
            if any(p["queued"] or p["reads_queued"] for p in report["partners"]):
                return False
        return True

    async def drain(self, senders: list[asyncio.Task[None]]) -> None:
        self.give_up_at = time.monotonic() + self.s.drain_seconds
        self.stop_new.set()
        await asyncio.wait_for(asyncio.gather(*senders), self.s.drain_seconds + 15)
        while not await self.drained():
            if time.monotonic() > self.give_up_at:
                queues = {n.id: [(p["id"], p["queued"], p["state"], p["last_error"])
                                 for p in (await n.partners_report())["partners"]]
                          for n in self.nodes}
                raise ClusterError(f"outboxes not drained within {self.s.drain_seconds:g} s:"
                                   f" {queues}")
            await asyncio.sleep(0.1)

    # --- the whole run -------------------------------------------------------------------

    async def run(self) -> Report:
        t0 = time.monotonic()
        try:
            async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
                await self.setup(http)
                t1 = time.monotonic()
                senders = [asyncio.create_task(
                    self.sender(o, random.Random(f"{self.s.seed}/{i}")), name=f"sender-{i}")
                    for i, o in enumerate(self.officers)]
                try:
                    await self.killer()
                    t2 = time.monotonic()
                    await self.drain(senders)
                finally:
                    self.stop_new.set()
                    self.give_up_at = 0.0
                    for task in senders:
                        task.cancel()
                    await asyncio.gather(*senders, return_exceptions=True)
                t3 = time.monotonic()
            stops = {node.id: await node.stop() for node in self.nodes}
            report = await self.check(stops)
            report.phases.update(setup=t1 - t0, chaos=t2 - t1, drain=t3 - t2,
                                 check=time.monotonic() - t3)
            return report
        finally:
            await kill_all(self.nodes)

    async def check(self, stops: dict[str, int | None]) -> Report:
        rows = [row for node in self.nodes for row in node.inbox_rows()]
        acked = [m.id for m in self.messages.values() if m.outcome is not None]
        verdict = check({m.id: m.recipient for m in self.messages.values()}, acked, rows)
        verified = await asyncio.gather(*(node.verify_ledger() for node in self.nodes))
        receipts: Counter[str] = Counter()
        for node in self.nodes:
            with contextlib.closing(sqlite3.connect(f"file:{node.database}?mode=ro",
                                                    uri=True)) as db:
                for outcome, n in db.execute(
                        "SELECT outcome, count(*) FROM receipts GROUP BY outcome"):
                    receipts[str(outcome)] += int(n)
        return Report(
            settings=self.s, root=self.root, kills=self.kills, verdict=verdict,
            ledgers={n.id: v for n, v in zip(self.nodes, verified, strict=True)},
            integrity={n.id: n.integrity() for n in self.nodes}, stops=stops,
            failures=self.failures,
            outcomes=Counter(m.outcome for m in self.messages.values() if m.outcome),
            receipts=receipts, log_errors=log_errors(self.nodes),
            unacknowledged=sum(1 for m in self.messages.values() if m.outcome is None),
            anomalies=self.anomalies, nodes=self.nodes, throttled=self.throttled,
            phases={})


def log_errors(nodes: list[Node]) -> Counter[str]:
    """Error-level events (and lines that are not JSON, e.g. tracebacks) in the logs."""
    found: Counter[str] = Counter()
    for node in nodes:
        try:
            text = node.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                found["(not json)"] += 1
                continue
            if isinstance(doc, dict) and doc.get("level") in ("error", "critical"):
                found[str(doc.get("event"))] += 1
    return found


async def run(settings: Settings, root: Path) -> Report:
    return await Driver(settings, root).run()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos.driver",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=100, help="kills at least (default 100)")
    p.add_argument("--seconds", type=float, default=0.0,
                   help="keep killing at least this long (default 0)")
    p.add_argument("--seed", type=int, default=None, help="default: a random one (printed)")
    p.add_argument("--gateways", type=int, default=3, choices=(2, 3))
    p.add_argument("--dir", type=Path, help="default: a temporary directory, kept on failure")
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**9)
    settings = Settings(kills=args.kills, seconds=args.seconds, seed=seed,
                        gateways=GATEWAYS[:args.gateways])
    configure_logging("warning", "json")
    root = args.dir or Path(tempfile.mkdtemp(prefix="fpg-chaos-"))
    print(f"chaos seed={seed} dir={root}", flush=True)
    report = asyncio.run(run(settings, root))
    print(report.details())
    print(report.summary, flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())


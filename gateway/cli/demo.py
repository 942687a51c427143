"""``gateway demo``: a three-country federation on loopback, and a scenario to watch.

Three real gateways, each its own ``gateway run`` process on 127.0.0.1 with its own
SQLite file and development keys: ``vn-mps`` (Viet Nam), ``kh-cnp`` (Cambodia) and
``la-mps`` (Laos), each pinning the other two by URL and key fingerprint. The demo writes
their configurations, creates desks and one-time enrollment codes in their databases,
starts them, enrolls officers through the officers' API (keys made here, in memory) and
plays a scenario, printing a timeline with times relative to its start:

a) a flash hotline from Viet Nam's border-liaison desk to Cambodia's anti-trafficking
   desk, read (the signed read acknowledgement travels back) and answered, the answer
   deliberately slower than the demo's reply service level, so that both gateways count
   a breach and escalate it to a supervisor desk;
b) a case notification with an MLA request from Viet Nam's central authority to Laos's;
c) an outage: la-mps stops, messages for it queue at vn-mps (shown from vn-mps's admin
   socket, as ``gateway partners`` shows it), la-mps comes back and the queue drains;
d) a second officer joins Cambodia's anti-trafficking desk: admitted by the first after
   both compare the safety code, it opens the earlier flash with the key the first shared.

Then it scrapes every gateway's ``/metrics``, verifies every ledger in full against its
signed checkpoints, and says where to look. Message texts, case references and names
never leave the sealed envelopes: the timeline shows ids, desks, kinds, priorities,
stages and times only.

The same files serve ``docker-compose.yml``: ``gateway demo --setup-only --dir /data``
writes the three configurations (and desks) and exits; each container then runs
``gateway run --config /data/<id>/gateway.toml``. Running again on the same directory
keeps the keys and databases and rewrites the configurations (ports may change).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import errno
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from gateway.cli.admin import admin_request, format_partners
from gateway.cli.ledger import open_ledger  # the same opening as `gateway ledger verify`
from gateway.cli.process import ServerError, ServerProcess
from gateway.client.api import GatewayClient, enroll
from gateway.clock import SystemClock
from gateway.config import Config, ServiceLevelSection, load_config
from gateway.crypto.keyfile import KeyBundle, read_public, save_bundle
from gateway.crypto.keys import (
    ROLE_GATEWAY_SIGNING,
    GatewaySigningKey,
    OfficerEncryptionKey,
    OfficerSigningKey,
    VerifyKey,
)
from gateway.errors import CryptoError, GatewayError
from gateway.officers.enrollment import new_code
from gateway.protocol.officers import code_hash
from gateway.service_levels.levels import open_breach_notice
from gateway.store.sqlite import SqliteStore

HOST = "127.0.0.1"
SUPERVISOR = "duty-supervisor"
#: Every demo gateway has the same desks: (name, supervisor desk).
DESKS = (
    (SUPERVISOR, None),
    ("border-liaison", SUPERVISOR),
    ("anti-trafficking", SUPERVISOR),
    ("central-authority", None),
)

#: Short service levels, so that the scenario meets some and breaks one within seconds.
#: All nine are written out (the two replies at their defaults): a configuration that
#: listed fewer would still get the defaults of the others.
REPLY_WITHIN = 5.0
SERVICE_LEVELS = (
    ServiceLevelSection("flash", "delivered", 10.0, False),
    ServiceLevelSection("flash", "read", 30.0, True),
    ServiceLevelSection("flash", "reply", REPLY_WITHIN, True),
    ServiceLevelSection("immediate", "delivered", 60.0, False),
    ServiceLevelSection("immediate", "read", 120.0, False),
    ServiceLevelSection("immediate", "reply", 8 * 3600.0, False),
    ServiceLevelSection("priority", "read", 600.0, False),
    ServiceLevelSection("priority", "reply", 3 * 86_400.0, False),
    ServiceLevelSection("routine", "read", 3600.0, False),
)
#: The deliberately slow answer comes this long after the alert was accepted.
SLOW_REPLY_AFTER = REPLY_WITHIN + 2.0

#: What the demo officers write. It is sealed on the sending side and opened on the
#: receiving side only; tests check that none of it appears in output, logs, metrics or
#: files. Invented text: no real case, place or person.
HOTLINE_TEXT = "Demo alert 7Q: a victim was located near the border post; shelter needed."
HOTLINE_REPLY = "Demo answer 7Q: team on the way; shelter place reserved."
CASE_REF = "DEMO-CASE-7Q-0001"
CASE_OFFENCE = "Demo offence 7Q: trafficking in persons"
CASE_ACTIONS = ("Demo action 7Q: locate a witness", "Demo action 7Q: preserve phone records")
CASE_TEXT = "Demo MLA request 7Q: please confirm receipt and name a contact."
CASE_REPLY = "Demo answer 7Q: request registered with the central authority."
OUTAGE_TEXTS = (
    ("immediate", "Demo follow-up 7Q-1: vehicle seen crossing tonight."),
    ("routine", "Demo follow-up 7Q-2: photographs to follow."),
    ("routine", "Demo follow-up 7Q-3: interpreter available tomorrow."),
)
OUTAGE_REPLY = "Demo answer 7Q-1: checkpoint informed."
SECRETS: tuple[str, ...] = (
    HOTLINE_TEXT, HOTLINE_REPLY, CASE_REF, CASE_OFFENCE, *CASE_ACTIONS, CASE_TEXT,
    CASE_REPLY, *(text for _, text in OUTAGE_TEXTS), OUTAGE_REPLY)

STEP_SECONDS = 20.0  # any one wait of the scenario
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=15)


class DemoError(GatewayError):
    """A step of the demo failed or timed out."""

    code = "demo_failed"


@dataclass(frozen=True)
class Country:
    id: str
    name: str
    port: int
    metrics_port: int


#: Where the demo writes its Prometheus targets unless --prometheus-targets says.
TARGETS_NAME = "prometheus-targets.json"

COUNTRIES = (
    Country("vn-mps", "Viet Nam", 8441, 9464),
    Country("kh-cnp", "Cambodia", 8442, 9465),
    Country("la-mps", "Laos", 8443, 9466),
)


def cmd_demo(args: argparse.Namespace) -> int:
    if args.setup_only:
        if args.dir is None:
            raise DemoError("--setup-only needs --dir DIR (where the gateways will run)")
        return setup_only(args.dir, args.free_ports, args.prometheus_targets)
    return asyncio.run(_main(args.dir, once=args.once, free_ports=args.free_ports,
                             targets=args.prometheus_targets))


# --- files: keys, configurations, desks --------------------------------------------------


@dataclass
class Node:
    """One demo gateway: its files and, once started, its process."""

    country: Country
    home: Path
    port: int
    metrics_port: int
    key: VerifyKey
    codes: dict[str, str] = field(default_factory=dict)  # officer label -> enrollment code
    process: ServerProcess = field(init=False)  # its ``gateway run``, once started

    def __post_init__(self) -> None:
        self.process = ServerProcess.gateway(self.config_path, log=self.log_path, name=self.id)

    @property
    def id(self) -> str:
        return self.country.id

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.metrics_port}/metrics"

    @property
    def config_path(self) -> Path:
        return self.home / "gateway.toml"

    @property
    def log_path(self) -> Path:
        return self.home / "gateway.log"

    def config(self) -> Config:
        return load_config(self.config_path)


def write_prometheus_targets(path: Path, nodes: list[Node]) -> None:
    """Prometheus's file-based service discovery: one target per gateway, labelled with
    its id, on the ports these gateways really use (``--free-ports`` included). Prometheus
    rereads the file when it changes, so config/prometheus.yml never names a port. The
    file holds no secret (loopback ports and gateway ids) and is made readable by all:
    in docker-compose.yml Prometheus reads it as another user."""
    doc = [{"targets": [f"{HOST}:{node.metrics_port}"], "labels": {"gateway": node.id}}
           for node in nodes]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    tmp.chmod(0o644)
    tmp.replace(path)


def _toml_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _config_text(node: Node, partners: Iterable[Node]) -> str:
    levels = "".join(
        f"\n[[service_levels]]\npriority = {_toml_string(s.priority)}\n"
        f"stage = {_toml_string(s.stage)}\nwithin_seconds = {s.within_seconds:g}\n"
        f"escalate = {'true' if s.escalate else 'false'}\n" for s in SERVICE_LEVELS)
    pinned = "".join(
        f"\n[[partners]]   # {p.country.name}\nid = {_toml_string(p.id)}\n"
        f"url = {_toml_string(p.url)}\nfingerprint = {_toml_string(p.key.fingerprint)}\n"
        for p in partners)
    return f"""\
# Demo gateway {node.id} ({node.country.name}), written by `gateway demo`; rewritten at
# every demo run. Development keys (NOT for production), plain HTTP on loopback, and
# short service levels, retry and checkpoint intervals so that the scenario shows them
# within a minute. Every key is explained in config/gateway.example.toml.

[gateway]
id = {_toml_string(node.id)}
public_url = {_toml_string(node.url)}
data_dir = "data"

[keys]
file = "keys/gateway.key"
insecure_dev_mode = true   # plaintext key file: demo and tests ONLY

[server]
host = {_toml_string(HOST)}
port = {node.port}

[ledger]
checkpoint_interval = 1.0

[log]
level = "info"
format = "json"

[federation]
retry_first_seconds = 0.1
retry_max_seconds = 1.0
health_seconds = 0.25
request_timeout_seconds = 5.0
directory_max_age_seconds = 0.1
witness_seconds = 1.0

[metrics]
host = {_toml_string(HOST)}
port = {node.metrics_port}
check_seconds = 0.5
{levels}{pinned}"""


def _pick_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (bound to 0 together, then released)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _check_port_free(port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the gateway binds
        try:
            s.bind((HOST, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise DemoError(f"port {port} ({what}) on {HOST} is in use: is another demo "
                            "running? Stop it, or run with --free-ports") from None


def _check_not_running(node: Node) -> None:
    """Refuse a directory a gateway (of an earlier demo) still serves."""
    sock_path = node.home / "data" / "admin.sock"
    if not sock_path.exists():
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(sock_path))
        except OSError:
            return  # left by a gateway that is gone; `gateway run` replaces it
    raise DemoError(f"{node.home}: gateway {node.id} is running there (an earlier demo?); "
                    "stop it first or give another --dir")


def prepare(root: Path, free_ports: bool, *, targets: Path | None = None,
            running_ok: bool = False) -> tuple[list[Node], bool]:
    """Keys (made or reused) and configurations of the three gateways in ``root``; the
    nodes and whether an earlier demo's keys were reused. Unless ``running_ok``, a gateway
    still serving one of the directories is an error (the demo is about to start them)."""
    root.mkdir(parents=True, exist_ok=True)
    keys = [root / c.id / "keys" / "gateway.key" for c in COUNTRIES]
    have = [k.exists() for k in keys]
    reuse = all(have)
    if not reuse and (any(have) or any(root.iterdir())):
        raise DemoError(f"{root}: holds files but not the three demo gateways (expected "
                        f"{', '.join(c.id for c in COUNTRIES)} with keys/gateway.key "
                        "each); give an empty or new --dir, or remove this one")
    ports = _pick_ports(2 * len(COUNTRIES)) if free_ports else []
    nodes: list[Node] = []
    for i, (country, key_path) in enumerate(zip(COUNTRIES, keys, strict=True)):
        if reuse:
            owner, public, _ = read_public(key_path)
            if owner != country.id or ROLE_GATEWAY_SIGNING not in public:
                raise DemoError(f"{key_path}: not the gateway key of {country.id}; give "
                                "an empty or new --dir")
            key = VerifyKey.from_b64(public[ROLE_GATEWAY_SIGNING], ROLE_GATEWAY_SIGNING)
        else:
            private = GatewaySigningKey.generate()
            save_bundle(key_path, KeyBundle(country.id, {ROLE_GATEWAY_SIGNING: private}),
                        None)  # development key: unencrypted, acknowledged in the config
            key = private.public
        port, metrics_port = ((ports[2 * i], ports[2 * i + 1]) if free_ports
                              else (country.port, country.metrics_port))
        nodes.append(Node(country, root / country.id, port, metrics_port, key))
    for node in nodes:
        if not running_ok:
            _check_not_running(node)
        (node.home / "data").mkdir(parents=True, exist_ok=True)
        others = [n for n in nodes if n is not node]
        node.config_path.write_text(_config_text(node, others), encoding="utf-8")
        node.config()  # what we wrote must be valid
    write_prometheus_targets(targets or root / TARGETS_NAME, nodes)
    return nodes, reuse


async def _setup_desks(node: Node, officers: Iterable[tuple[str, str]],
                       revoke_earlier: bool) -> int:
    """Create missing desks; revoke officers of an earlier run (their keys lived in its
    memory only); make one enrollment code per (label, desk) in ``officers``. Returns the
    number of officers revoked."""
    clock = SystemClock()
    store = await SqliteStore.open(node.config().database)
    try:
        now = clock.now_ms()
        existing = {d.name for d in await store.desks()}
        for name, supervisor in DESKS:
            if name not in existing:
                await store.add_desk(name, supervisor, now)
        revoked = 0
        if revoke_earlier:
            for officer in await store.officers():
                if officer.revoked_ms is None and await store.revoke_officer(officer.id, now):
                    revoked += 1
        for label, desk in officers:
            code = new_code()
            await store.add_enrollment_code(code_hash(code), [desk], now, now + 3_600_000)
            node.codes[label] = code
        return revoked
    finally:
        await store.close()


def setup_only(root: Path, free_ports: bool, targets: Path | None = None) -> int:
    # Gateways may run there already (docker compose up again): the configurations are
    # rewritten the same, and desks are added through the database as operators do.
    nodes, reused = prepare(root, free_ports, targets=targets, running_ok=True)

    async def desks() -> None:
        for node in nodes:
            await _setup_desks(node, (), revoke_earlier=False)

    asyncio.run(desks())
    state = "reused (keys and databases of an earlier run)" if reused else "created"
    print(f"demo federation {state} in {root}")
    for node in nodes:
        print(f"  {node.id:7} {node.country.name:9} {node.url}  metrics "
              f"{node.metrics_url}  fingerprint {node.key.fingerprint}")
        print(f"          gateway run --config {node.config_path}")
    print(f"  Prometheus targets: {targets or root / TARGETS_NAME}")
    return 0


# --- the timeline ------------------------------------------------------------------------


def short(message_id: Any) -> str:
    return str(message_id)[:8]


class Timeline:
    """Lines with the time since the demo started; flushed at once."""

    def __init__(self, out: TextIO) -> None:
        self.t0 = time.monotonic()
        self.out = out

    def now(self) -> float:
        return time.monotonic() - self.t0

    def say(self, where: str, tag: str, text: str) -> None:
        print(f"[{self.now():6.2f}s] {where:7} {tag:9} {text}", file=self.out, flush=True)

    def heading(self, text: str) -> None:
        print(f"\n== {text}", file=self.out, flush=True)

    def text(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)


async def until(check: Callable[[], Awaitable[bool] | bool], what: str,
                seconds: float = STEP_SECONDS) -> None:
    """Poll ``check`` until true; DemoError naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {seconds:g} s waiting for {what}")
        await asyncio.sleep(0.05)


# --- gateway processes ------------------------------------------------------------------


async def start_gateway(node: Node) -> None:
    """``gateway run`` for ``node`` (output appended to its log file); returns once it
    listens."""
    await node.process.start_async()


async def stop_gateway(node: Node) -> int | None:
    """SIGTERM, then wait (bounded; killed after that). The exit status, None if it was
    never started."""
    try:
        return await node.process.stop_async()
    except ServerError as exc:
        raise DemoError(exc.message) from None


# --- officers ---------------------------------------------------------------------------


@dataclass
class Officer:
    """A demo officer: enrolled through the API with keys made here, watching its live
    stream. ``events`` holds (time, kind, data) of everything the stream brought."""

    label: str
    node: Node
    desk: str  # address
    client: GatewayClient
    events: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)

    def seen(self, kind: str, message_id: str, **match: Any) -> bool:
        return any(k == kind and d.get("id") == message_id
                   and all(d.get(f) == v for f, v in match.items())
                   for _, k, d in self.events)


#: (gateway, label, desk) of every demo officer.
#: Joins after the flash hotline: admitted by the first, who shares the desk's history.
NEWCOMER = ("kh-cnp", "second anti-trafficking officer", "anti-trafficking")
OFFICERS = (
    ("vn-mps", "border-liaison officer", "border-liaison"),
    ("vn-mps", "central-authority officer", "central-authority"),
    ("vn-mps", "duty supervisor", SUPERVISOR),
    ("kh-cnp", "anti-trafficking officer", "anti-trafficking"),
    ("kh-cnp", "duty supervisor", SUPERVISOR),
    ("la-mps", "central-authority officer", "central-authority"),
    ("la-mps", "anti-trafficking officer", "anti-trafficking"),
)


class Demo:
    def __init__(self, nodes: list[Node], http: aiohttp.ClientSession,
                 timeline: Timeline) -> None:
        self.nodes = {n.id: n for n in nodes}
        self.http = http
        self.t = timeline
        self.officers: dict[tuple[str, str], Officer] = {}
        self.watchers: list[asyncio.Task[None]] = []

    def officer(self, gateway: str, label: str) -> Officer:
        return self.officers[(gateway, label)]

    async def enroll_all(self) -> None:
        for gateway, label, desk in OFFICERS:
            await self.enroll(gateway, label, desk)
        connected = []
        for officer in self.officers.values():
            ready = asyncio.Event()
            connected.append(ready)
            self.watchers.append(asyncio.create_task(self._watch(officer, ready)))
        await until(lambda: all(e.is_set() for e in connected),
                    "every officer's live stream to connect")

    async def enroll(self, gateway: str, label: str, desk: str) -> Officer:
        node = self.nodes[gateway]
        creds, answer = await enroll(self.http, node.url, node.codes.pop(label),
                                     OfficerSigningKey.generate(),
                                     OfficerEncryptionKey.generate(),
                                     fingerprint=node.key.fingerprint)
        client = GatewayClient(self.http, creds)
        await client.sign_in()
        officer = Officer(label, node, f"{desk}@{gateway}", client)
        self.officers[(gateway, label)] = officer
        how = ("; waits to be admitted by a member" if answer["pending"]
               else "; the desk's first member, admitted by the operator")
        self.t.say(gateway, "enrolled", f"{label} of {officer.desk} (officer "
                   f"{creds.officer_id}; gateway key checked against its fingerprint{how})")
        return officer

    async def new_member(self, flash_id: str) -> None:
        """A second officer joins the desk that received the flash hotline: admitted with
        the safety code, it opens the earlier flash with the key the first one shares."""
        gateway, label, desk = NEWCOMER
        self.t.heading(f"d) A new member joins {desk}@{gateway} and reads the desk's "
                       "earlier messages")
        newcomer = await self.enroll(gateway, label, desk)
        member = await self.admit(newcomer)
        shared = await member.client.share_history(newcomer.desk,
                                                   newcomer.client.creds.officer_id)
        self.t.say(gateway, "shared", f"the {member.label}'s client re-wrapped the keys of "
                   f"{shared} earlier message(s) of the last 180 days for the {label}, each "
                   f"signed; {gateway} stores wraps it cannot open")
        opened = await newcomer.client.open(flash_id)
        self.t.say(gateway, "opened", f"{label} verified and decrypted the flash hotline "
                   f"{short(flash_id)}, sent before it joined ({len(opened.payload['text'])} "
                   f"characters; key shared by {opened.shared_by})")

    async def admit(self, newcomer: Officer) -> Officer:
        """An earlier member of the desk admits ``newcomer`` once both screens show the
        same safety code (in service, read out over the phone)."""
        member = next(o for o in self.officers.values()
                      if o.desk == newcomer.desk and o is not newcomer)
        mine = newcomer.client.my_safety_code(newcomer.desk)
        _, shown = await member.client.pending_safety_code(newcomer.desk,
                                                           newcomer.client.creds.officer_id)
        self.t.say(newcomer.node.id, "pending", f"{newcomer.label} waits to join "
                   f"{newcomer.desk}; its screen shows the safety code {mine}")
        await member.client.admit(newcomer.desk, newcomer.client.creds.officer_id, mine)
        self.t.say(newcomer.node.id, "admitted", f"{member.label}'s screen shows {shown}, the "
                   f"same: {member.label} signs the admission of {newcomer.label}; messages "
                   "to the desk are sealed for both from now on")
        return member

    async def close(self) -> None:
        for task in self.watchers:
            task.cancel()
        await asyncio.gather(*self.watchers, return_exceptions=True)

    async def _watch(self, officer: Officer, ready: asyncio.Event) -> None:
        """Follow the officer's live stream, reconnecting while its gateway is down."""
        while True:
            try:
                async for kind, data in officer.client.stream(connected=ready):
                    officer.events.append((self.t.now(), kind, data))
                    self._describe(officer, kind, data)
            except (TimeoutError, aiohttp.ClientError, GatewayError, OSError, ValueError):
                pass  # the gateway stopped (the outage) or the connection broke
            await asyncio.sleep(0.25)

    def _describe(self, officer: Officer, kind: str, data: dict[str, Any]) -> None:
        """One timeline line per live event: ids, desks, kinds, priorities and stages."""
        gw, mid = officer.node.id, short(data.get("id"))
        if kind == "message":
            answers = data.get("in_reply_to")
            extra = f", answering {short(answers)}" if answers else ""
            self.t.say(gw, "inbox", f"{data.get('priority')} {data.get('kind')} {mid} "
                       f"from {data.get('sender')} is in {officer.desk}'s inbox{extra}")
        elif kind == "receipt":
            self.t.say(gw, "receipt", f"{data.get('partner')} signed a receipt for {mid}: "
                       f"{data.get('outcome')}")
        elif kind == "read":
            self.t.say(gw, "read-ack", f"a signed read acknowledgement of {mid} reached "
                       f"{officer.desk}")
        elif kind == "reply":
            self.t.say(gw, "reply", f"{mid} was answered by {short(data.get('reply'))} "
                       f"from {data.get('sender')}")
        elif kind == "breach":
            due = (int(data.get("due", 0)) - int(data.get("accepted", 0))) / 1000
            self.t.say(gw, "BREACH", f"{data.get('priority')} {data.get('kind')} {mid} "
                       f"missed its '{data.get('stage')}' service level ({due:g} s); "
                       f"{officer.desk} is told")
        elif kind == "escalation":
            self.t.say(gw, "escalated", f"{officer.desk} got a breach notice for {mid}: "
                       + self._check_notice(officer, data))
        elif kind == "expired":
            self.t.say(gw, "expired", f"{mid} expired queued for {data.get('partner')}")
        elif kind == "shutdown":
            pass  # the gateway is stopping (the outage): its "stopped" line says so
        else:
            self.t.say(gw, kind[:9], f"event about {mid}")

    @staticmethod
    def _check_notice(officer: Officer, data: dict[str, Any]) -> str:
        """Verify the gateway-signed notice as the supervisor's client would, with the
        gateway key pinned at enrollment; describe it from its signed content."""
        try:
            note = base64.b64decode(str(data.get("notice", "")), validate=True)
            notice = open_breach_notice(note, officer.node.id,
                                        officer.client.creds.gateway_key)
        except (ValueError, GatewayError) as exc:
            return f"its signature does NOT verify ({exc})"
        return (f"{notice.priority} {notice.kind} late at {notice.desk} for stage "
                f"'{notice.stage}'; signed by {notice.gateway}, verified with its pinned key "
                f"({len(note)} bytes)")

    async def directory_known(self, officer: Officer, gateway: str, desk: str) -> None:
        """Wait until the officer's gateway vouches for ``desk`` of partner ``gateway``
        with at least one officer in it."""
        address = f"{desk}@{gateway}"

        async def known() -> bool:
            try:
                desks = await officer.client.directory(refresh=True, gateway=gateway)
            except (TimeoutError, aiohttp.ClientError, GatewayError, CryptoError):
                return False
            entry = desks.get(address)
            return entry is not None and bool(entry.members)

        await until(known, f"{officer.node.id} to know {address} from {gateway}'s "
                    "signed directory")

    async def in_inbox(self, officer: Officer, ids: Iterable[str]) -> None:
        wanted = set(ids)

        async def arrived() -> bool:
            try:
                inbox = await officer.client.inbox(officer.desk)
            except (TimeoutError, aiohttp.ClientError, GatewayError, CryptoError):
                return False  # the gateway may be starting
            return wanted <= {m["id"] for m in inbox["messages"]}

        await until(arrived, f"{', '.join(map(short, wanted))} in {officer.desk}'s inbox")

    async def event(self, officer: Officer, kind: str, message_id: str,
                    **match: Any) -> None:
        await until(lambda: officer.seen(kind, message_id, **match),
                    f"a '{kind}' event about {short(message_id)} on {officer.desk}'s stream")

    async def read(self, officer: Officer, message_id: str) -> None:
        opened = await officer.client.read(message_id)
        env = opened.envelope
        self.t.say(officer.node.id, "opened", f"{officer.label} verified and decrypted "
                   f"{short(message_id)} on their own machine (envelope {len(env.raw)} "
                   f"bytes, sealed body {len(env.ciphertext)} bytes); signed read "
                   "acknowledgement sent")

    async def admin_view(self, node: Node) -> dict[str, Any]:
        report: dict[str, Any] = await admin_request(node.config().admin_socket, "GET",
                                                     "/partners")
        return report

    # --- the scenario ---------------------------------------------------------------

    async def flash_hotline(self) -> str:
        self.t.heading("a) Flash hotline: Viet Nam border liaison -> Cambodia anti-trafficking "
                       "(a victim located)")
        a = self.officer("vn-mps", "border-liaison officer")
        k = self.officer("kh-cnp", "anti-trafficking officer")
        sent = await a.client.send("hotline", k.desk, {"type": "hotline", "text": HOTLINE_TEXT},
                                   priority="flash")
        accepted = time.monotonic()
        mid = str(sent["id"])
        self.t.say("vn-mps", "sent", f"flash hotline {mid} {a.desk} -> {k.desk}: sealed by "
                   f"the {a.label}'s client, {sent['status']} by vn-mps (ledger entries "
                   f"{', '.join(map(str, sent.get('ledger', [])))})")
        await self.in_inbox(k, [mid])
        await self.event(a, "receipt", mid)
        await self.read(k, mid)
        await self.event(a, "read", mid)
        wait = SLOW_REPLY_AFTER - (time.monotonic() - accepted)
        self.t.say("kh-cnp", "waiting", f"the {k.label} takes {SLOW_REPLY_AFTER:g} s to "
                   f"answer: the demo's flash reply service level is {REPLY_WITHIN:g} s")
        await asyncio.sleep(max(0.0, wait))
        opened = await k.client.open(mid)
        answer = await k.client.reply(opened, {"type": "reply", "text": HOTLINE_REPLY})
        self.t.say("kh-cnp", "sent", f"flash reply {short(answer['id'])} to {short(mid)}, "
                   f"{time.monotonic() - accepted:.1f} s after the alert was accepted")
        await self.event(a, "reply", mid)
        await self.in_inbox(a, [answer["id"]])
        await self.read(a, answer["id"])
        await self.event(a, "breach", mid, stage="reply")
        await self.event(self.officer("vn-mps", "duty supervisor"), "escalation", mid)
        return mid

    async def mla_request(self) -> str:
        self.t.heading("b) Case notification with an MLA request: Viet Nam central authority "
                       "-> Laos central authority")
        c = self.officer("vn-mps", "central-authority officer")
        lc = self.officer("la-mps", "central-authority officer")
        deadline = datetime.date.today() + datetime.timedelta(days=60)
        case = {"type": "case", "case_ref": CASE_REF, "legal_basis": "treaty",
                "offence": CASE_OFFENCE, "requested_actions": list(CASE_ACTIONS),
                "deadline": deadline.isoformat(), "text": CASE_TEXT}
        sent = await c.client.send("case", lc.desk, case, priority="priority")
        mid = str(sent["id"])
        self.t.say("vn-mps", "sent", f"priority case {mid} {c.desk} -> {lc.desk} (case "
                   "reference, legal basis, offence, actions and deadline all sealed): "
                   f"{sent['status']}")
        await self.in_inbox(lc, [mid])
        await self.read(lc, mid)
        await self.event(c, "read", mid)
        opened = await lc.client.open(mid)
        answer = await lc.client.reply(opened, {"type": "reply", "text": CASE_REPLY})
        self.t.say("la-mps", "sent", f"reply {short(answer['id'])} to {short(mid)}")
        await self.event(c, "reply", mid)
        return mid

    async def outage(self) -> list[str]:
        self.t.heading("c) Partner outage: la-mps stops, messages for it queue at vn-mps, "
                       "la-mps returns and the queue drains")
        a = self.officer("vn-mps", "border-liaison officer")
        la = self.officer("la-mps", "anti-trafficking officer")
        vn, lao = self.nodes["vn-mps"], self.nodes["la-mps"]
        status = await stop_gateway(lao)
        self.t.say("la-mps", "stopped", f"SIGTERM; the gateway stopped (status {status})")
        ids = []
        for priority, text in OUTAGE_TEXTS:
            sent = await a.client.send("hotline", la.desk, {"type": "hotline", "text": text},
                                       priority=priority)
            ids.append(sent["id"])
            self.t.say("vn-mps", "sent", f"{priority} hotline {short(sent['id'])} {a.desk} -> "
                       f"{la.desk}: {sent['status']} (la-mps is down)")

        async def queued_and_retried() -> bool:
            p = _partner(await self.admin_view(vn), "la-mps")
            return bool(p["queued"] >= len(ids) and p["failures"] >= 1)

        await until(queued_and_retried, "vn-mps to queue for la-mps and fail an attempt")
        report = await self.admin_view(vn)
        p = _partner(report, "la-mps")
        self.t.say("vn-mps", "queue", f"admin view (`gateway partners`): la-mps {p['state']}, "
                   f"{p['queued']} queued, {p['failures']} failed attempt(s) so far:")
        self.t.text(_indent(format_partners(report)))
        await start_gateway(lao)
        back = time.monotonic()
        self.t.say("la-mps", "started", "the same data directory and port; ledger verified "
                   "at start; listening again")

        async def drained() -> bool:
            return int(_partner(await self.admin_view(vn), "la-mps")["queued"]) == 0

        await until(drained, "vn-mps's queue for la-mps to drain")
        self.t.say("vn-mps", "drained", f"queue for la-mps empty {time.monotonic() - back:.2f}"
                   " s after la-mps came back")
        await self.in_inbox(la, ids)
        self.t.say("la-mps", "delivered", f"{', '.join(map(short, ids))} are in {la.desk}'s "
                   "inbox, once each")
        for mid in ids:
            await self.read(la, mid)
        for mid in ids:
            await self.event(a, "read", mid)
        answer = await la.client.reply(await la.client.open(ids[0]),
                                       {"type": "reply", "text": OUTAGE_REPLY})
        self.t.say("la-mps", "sent", f"reply {short(answer['id'])} to {short(ids[0])}")
        await self.event(a, "reply", ids[0])
        self.t.text(_indent(format_partners(await self.admin_view(vn))))
        return ids


def _partner(report: dict[str, Any], partner: str) -> dict[str, Any]:
    found: dict[str, Any] = next(p for p in report["partners"] if p["id"] == partner)
    return found


def _indent(text: str, prefix: str = "            ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


# --- metrics and ledgers -------------------------------------------------------------------


#: What the scenario must leave in each gateway's metrics: (gateway, direction, partner,
#: stage) with at least one fpg_response_seconds observation, and breaches counted.
EXPECTED_STAGES = (
    *(("vn-mps", "outbound", p, s) for p in ("kh-cnp", "la-mps")
      for s in ("receipt", "delivered", "read", "reply")),
    *(("kh-cnp", "inbound", "vn-mps", s) for s in ("delivered", "read", "reply")),
    *(("la-mps", "inbound", "vn-mps", s) for s in ("delivered", "read", "reply")),
)
EXPECTED_BREACHES = (("vn-mps", "flash", "reply"),)


@dataclass
class Scrape:
    text: str
    samples: list[tuple[str, dict[str, str], float]]

    def total(self, name: str, **labels: str) -> float:
        return sum(v for n, lab, v in self.samples
                   if n == name and all(lab.get(k) == x for k, x in labels.items()))


async def scrape(http: aiohttp.ClientSession, node: Node) -> Scrape:
    try:
        async with http.get(node.metrics_url) as r:
            if r.status != 200:
                raise DemoError(f"{node.metrics_url}: HTTP {r.status}")
            text = await r.text()
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise DemoError(f"{node.metrics_url}: the metrics listener does not answer "
                        f"({exc.__class__.__name__}: {exc})") from None
    samples = [(s.name, dict(s.labels), float(s.value))
               for family in text_string_to_metric_families(text) for s in family.samples]
    return Scrape(text, samples)


def _missing(scrapes: dict[str, Scrape]) -> list[str]:
    missing = [f"{gw}: no fpg_response_seconds observation {direction}/{partner}/{stage}"
               for gw, direction, partner, stage in EXPECTED_STAGES
               if scrapes[gw].total("fpg_response_seconds_count", direction=direction,
                                    partner=partner, stage=stage) < 1]
    missing += [f"{gw}: fpg_service_level_breaches_total{{priority={p},stage={s}}} is 0"
                for gw, p, s in EXPECTED_BREACHES
                if scrapes[gw].total("fpg_service_level_breaches_total", priority=p,
                                     stage=s) < 1]
    return missing


async def check_metrics(http: aiohttp.ClientSession, nodes: list[Node]) -> dict[str, Scrape]:
    """Scrape every gateway until the scenario's stages and breach show (bounded)."""
    scrapes: dict[str, Scrape] = {}

    async def complete() -> bool:
        for node in nodes:
            scrapes[node.id] = await scrape(http, node)
        return not _missing(scrapes)

    try:
        await until(complete, "the scenario's stages in every gateway's metrics")
    except DemoError:
        raise DemoError("metrics are missing what the scenario did: "
                        + "; ".join(_missing(scrapes))) from None
    return scrapes


def describe_metrics(node: Node, s: Scrape) -> list[str]:
    lines = [f"{node.id}  {node.metrics_url}  ({len(s.text):,} bytes)"]
    stages: dict[tuple[str, str, str, str], dict[str, int]] = {}
    for name, labels, value in s.samples:
        if name == "fpg_response_seconds_count" and value:
            key = (labels["direction"], labels["partner"], labels["kind"], labels["priority"])
            stages.setdefault(key, {})[labels["stage"]] = int(value)
    lines.append("  fpg_response_seconds_count (observations per stage):")
    for (direction, partner, kind, priority), counts in sorted(stages.items()):
        per_stage = "  ".join(f"{stage} {n}" for stage, n in counts.items())
        lines.append(f"    {direction:8} {partner:7} {kind:7} {priority:9}  {per_stage}")
    breaches = [f"{lab['direction']} {lab['priority']}/{lab['stage']} {int(v)}"
                for n, lab, v in s.samples if n == "fpg_service_level_breaches_total" and v]
    lines.append("  fpg_service_level_breaches_total: " + (", ".join(breaches) or "none"))
    depth = ", ".join(f"{lab['partner']} {int(v)}" for n, lab, v in s.samples
                      if n == "fpg_outbox_depth")
    up = ", ".join(f"{lab['partner']} {int(v)}" for n, lab, v in s.samples
                   if n == "fpg_partner_up")
    lines.append(f"  fpg_outbox_depth: {depth or '-'};  fpg_partner_up: {up or '-'};  "
                 f"fpg_ledger_size: {int(s.total('fpg_ledger_size'))}")
    return lines


async def verify_ledger(node: Node) -> str:
    """Recompute the gateway's whole ledger and check every signed checkpoint, once the
    newest checkpoint covers every entry; one line saying what was checked."""
    config = node.config()

    async def covered() -> bool:
        ledger = await open_ledger(config, None)
        try:
            latest = await ledger.store.latest_checkpoint()
            return latest is not None and latest.size == ledger.size
        finally:
            await ledger.store.close()

    await until(covered, f"a signed checkpoint of {node.id} covering its whole ledger")
    ledger = await open_ledger(config, None)
    try:
        entries = await ledger.verify()
        checkpoints = await ledger.store.checkpoints()
    finally:
        await ledger.store.close()
    latest = checkpoints[-1]
    root = base64.b64encode(latest.root).decode("ascii")
    return (f"{node.id}  ledger ok: {entries} entries recomputed, {len(checkpoints)} signed "
            f"checkpoints verified; the newest (size {latest.size} = ledger size, root "
            f"{root[:16]}...) matches")


# --- where to look -------------------------------------------------------------------------


def _program() -> str:
    """How to call `gateway` from here: the name if PATH finds this one, else its path."""
    here = Path(sys.executable).parent / "gateway"
    found = shutil.which("gateway")
    if found is not None and Path(found).resolve() == here.resolve():
        return "gateway"
    if here.exists():
        with contextlib.suppress(ValueError):
            return os.path.relpath(here) if here.is_relative_to(Path.cwd()) else str(here)
        return str(here)
    return f"{Path(sys.executable).name} -m gateway"


def where_to_look(nodes: list[Node], flash_id: str, once: bool, temporary: bool,
                  targets: Path) -> list[str]:
    gw = _program()
    vn = nodes[0]
    lines = []
    if once:
        lines.append("(--once: the gateways have stopped; run without --once to keep them "
                     "serving and use the commands below)")
    for node in nodes:
        lines.append(f"  {node.id:7} {node.url}/healthz   {node.metrics_url}   "
                     f"log {node.log_path}")
    lines.append("")
    for node in nodes:
        lines.append(f"  {gw} status   --config {node.config_path}")
        lines.append(f"  {gw} partners --config {node.config_path}")
    lines.append(f"  {gw} ledger verify --config {vn.config_path}")
    lines.append(f"  {gw} ledger prove {flash_id} --config {vn.config_path}")
    lines.append("")
    lines.append("  docker compose up --build   the same federation in containers, with Prometheus "
                 "(http://localhost:9090) and Grafana (http://localhost:3000)")
    lines.append(f"  {targets}: the gateways' metrics for Prometheus's file-based "
                 "discovery (config/prometheus.yml reads config/targets/*.json)")
    if temporary:
        lines.append("  (the demo's directory is temporary and removed at exit; give --dir "
                     "DIR to keep configs, keys, databases and logs)")
    return lines


# --- the whole run ---------------------------------------------------------------------------


async def step(name: str, work: Awaitable[Any]) -> Any:
    """Await one step; any failure becomes a DemoError that names the step."""
    try:
        return await work
    except DemoError as exc:
        raise DemoError(f"{name}: {exc.message}") from None
    except (GatewayError, CryptoError, aiohttp.ClientError, OSError) as exc:
        detail = (exc.message if isinstance(exc, GatewayError | CryptoError)
                  else f"{exc.__class__.__name__}: {exc}")
        raise DemoError(f"{name}: {detail}") from None


async def scenario(nodes: list[Node], http: aiohttp.ClientSession, t: Timeline) -> str:
    """Start the gateways, enroll the officers and play a) to d); the flash alert's
    id."""
    await step("starting the gateways", asyncio.gather(*(start_gateway(n) for n in nodes)))
    for node in nodes:
        t.say(node.id, "started", f"listening on {node.url}, metrics on {node.metrics_url}, "
              f"log {node.log_path.name}")
    demo = Demo(nodes, http, t)
    try:
        await step("enrolling officers", demo.enroll_all())
        a = demo.officer("vn-mps", "border-liaison officer")
        c = demo.officer("vn-mps", "central-authority officer")
        for officer, gateway, desk in ((a, "kh-cnp", "anti-trafficking"),
                                       (a, "la-mps", "anti-trafficking"),
                                       (c, "la-mps", "central-authority")):
            await step("partner directories", demo.directory_known(officer, gateway, desk))
        t.say("vn-mps", "directory", "kh-cnp's and la-mps's signed desk directories fetched "
              "and countersigned for vn-mps's officers")
        flash_id: str = await step("a) flash hotline", demo.flash_hotline())
        await step("b) MLA request", demo.mla_request())
        await step("c) partner outage", demo.outage())
        await step("d) new member", demo.new_member(flash_id))
    finally:
        await demo.close()
    return flash_id


async def report(nodes: list[Node], http: aiohttp.ClientSession, t: Timeline) -> None:
    """Print the metrics each gateway exports and verify each ledger."""
    t.heading(f"Metrics (scraped from each gateway's /metrics at {t.now():.2f}s; la-mps's "
              "counters restarted with it)")
    scrapes = await step("metrics", check_metrics(http, nodes))
    for node in nodes:
        (node.home / "metrics.prom").write_text(scrapes[node.id].text, encoding="utf-8")
        t.text("\n".join(describe_metrics(node, scrapes[node.id])))
    t.heading("Ledgers (each recomputed in full and checked against its signed checkpoints)")
    for node in nodes:
        t.text(await step(f"ledger of {node.id}", verify_ledger(node)))


def introduce(t: Timeline, nodes: list[Node], root: Path, reused: bool) -> None:
    t.text("Focal-point gateway demo: three gateways on 127.0.0.1, each a real "
           "`gateway run` process")
    for node in nodes:
        t.text(f"  {node.id:7} {node.country.name:9} {node.url}   metrics "
               f"{node.metrics_url}   key {node.key.fingerprint}")
    state = "reusing the keys and databases of an earlier run" if reused else (
        "new development keys")
    t.text(f"Files in {root} ({state}): configs, keys, SQLite databases, logs.")
    t.text("Message texts, case references and names stay inside sealed envelopes: this "
           "timeline shows ids, desks, kinds, priorities, stages and times only.")


async def _main(directory: Path | None, *, once: bool, free_ports: bool,
                targets: Path | None = None) -> int:
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    stop = asyncio.Event()
    interrupted = scenario_done = succeeded = False

    def on_signal() -> None:
        nonlocal interrupted
        if stop.is_set() or once or not scenario_done:
            interrupted = True
            main_task.cancel()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    temporary = directory is None
    root = Path(tempfile.mkdtemp(prefix="fpg-demo-")) if directory is None else directory
    t = Timeline(sys.stdout)
    nodes: list[Node] = []
    try:
        nodes, reused = prepare(root, free_ports, targets=targets)
        if not free_ports:
            for node in nodes:
                _check_port_free(node.port, f"{node.id} gateway")
                _check_port_free(node.metrics_port, f"{node.id} metrics")
        introduce(t, nodes, root, reused)
        t.heading("Setting up")
        for node in nodes:
            mine = [(label, desk) for gw, label, desk in (*OFFICERS, NEWCOMER)
                    if gw == node.id]
            revoked = await _setup_desks(node, mine, revoke_earlier=True)
            extra = (f"; {revoked} officer(s) of the earlier run revoked (their keys are gone)"
                     if revoked else "")
            t.say(node.id, "desks", "border-liaison and anti-trafficking (both supervised by "
                  f"{SUPERVISOR}), central-authority; enrollment codes made{extra}")
        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
            flash_id = await scenario(nodes, http, t)
            await report(nodes, http, t)
        scenario_done = True
        if once:
            for node in nodes:
                status = await stop_gateway(node)
                if status != 0:
                    raise DemoError(f"{node.id} stopped with status {status}; see "
                                    f"{node.log_path}")
        t.heading("Where to look")
        t.text("\n".join(where_to_look(nodes, flash_id, once, temporary,
                                       targets or root / TARGETS_NAME)))
        t.heading(f"Scenario complete in {t.now():.1f} s")
        succeeded = True
        if once:
            return 0
        t.text("The three gateways keep serving; Ctrl-C (or SIGTERM) stops them.")
        await _serve(nodes, stop)
        for node in nodes:
            t.say(node.id, "stopped", f"status {await stop_gateway(node)}")
        return 0
    except asyncio.CancelledError:
        if not interrupted:
            raise
        print("gateway demo: interrupted; stopping the gateways", file=sys.stderr)
        return 130
    finally:
        for node in nodes:
            with contextlib.suppress(DemoError):
                await stop_gateway(node)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if temporary and (succeeded or interrupted):
            shutil.rmtree(root, ignore_errors=True)
        elif temporary:
            print(f"gateway demo: the configs, databases and logs are kept in {root} for a "
                  "look (remove it after)", file=sys.stderr)


async def _serve(nodes: list[Node], stop: asyncio.Event) -> None:
    """Until ``stop`` is set; a gateway process that ends meanwhile is an error."""
    while not stop.is_set():
        for node in nodes:
            if node.process.returncode is not None:
                raise DemoError(f"{node.id} stopped (status {node.process.returncode}); see "
                                f"{node.log_path}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)

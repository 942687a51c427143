"""Test helpers: real keys, real envelopes, real SQLite files, real gateways.

What more than one test module uses lives here (plain functions and classes) or in
tests/conftest.py (fixtures): a test module imports no other test module
(tests/test_suite_layout.py checks it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import weakref
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import aiohttp
import pytest
from aiohttp import web

from gateway.app import create_app
from gateway.appkeys import CLOCK, STORE
from gateway.cli.process import ServerProcess
from gateway.client.api import ApiError, Credentials, GatewayClient, enroll
from gateway.client.roster import Roster
from gateway.clock import Clock
from gateway.config import parse_config
from gateway.crypto.envelope import (
    Envelope,
    EnvelopeHeader,
    new_message_id,
    seal_envelope,
    verify_envelope,
)
from gateway.crypto.keyfile import KeyBundle, load_bundle
from gateway.crypto.keys import (
    ROLE_GATEWAY_SIGNING,
    GatewaySigningKey,
    OfficerEncryptionKey,
    OfficerSigningKey,
)
from gateway.officers.enrollment import new_code
from gateway.protocol.officers import code_hash, enroll_text
from gateway.store import IncomingMessage

T = TypeVar("T")

T0 = 1_767_225_600_000


@dataclass
class Officer:
    signing: OfficerSigningKey = field(default_factory=OfficerSigningKey.generate)
    encryption: OfficerEncryptionKey = field(default_factory=OfficerEncryptionKey.generate)


def make_envelope(sender: Officer, readers: list[Officer], *, priority: str = "flash",
                  to: str = "border-liaison@vn-mps", frm: str = "trafficking@vn-mps",
                  payload: bytes = b'{"text":"test"}', message_id: str | None = None,
                  now: int = T0) -> Envelope:
    mid = message_id or os.urandom(16).hex()
    header = EnvelopeHeader(id=mid, kind="hotline", priority=priority, sender=frm, recipient=to,
                            created=now, expires=now + 86_400_000, thread=mid)
    data = seal_envelope(header, payload, sender.signing, [r.encryption.public for r in readers])
    return verify_envelope(data, sender.signing.public)


def incoming(envelope: Envelope, *, relay_to: str | None = None, now: int = T0) -> IncomingMessage:
    if relay_to is not None:
        return IncomingMessage(envelope, now, "local", envelope.signer, relay_to=relay_to)
    return IncomingMessage(envelope, now, "local", envelope.signer,
                           deliver_to=envelope.header.recipient)


GATEWAY_KEY = GatewaySigningKey(b"\x11" * 32)
GATEWAY, PARTNER = "vn-mps", "kh-cnp"  # the single-gateway tests' gateway and its partner


def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "gateway.sqlite3"


# --- the command-line tools, as real processes ---------------------------------------------


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})}, cwd=cwd, input=stdin,
    )


def gateway(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return run("gateway", *args, **kw)


class Running(NamedTuple):
    """A ``gateway run`` process of a gateway made by ``gateway init``."""

    url: str
    cfg: Path  # its gateway.toml
    fingerprint: str  # of its signing key, as ``gateway keys show`` prints it


@contextlib.contextmanager
def running_gateway(directory: Path, desks: Sequence[str], config: str = "") -> Iterator[Running]:
    """Init gateway vn-mps (development keys) in ``directory``, append ``config`` to its
    configuration, add ``desks`` and run it as its own process until the block ends; it
    must stop cleanly."""
    assert gateway("init", str(directory), "--id", "vn-mps", "--port", "0",
                   "--insecure-dev-keys").returncode == 0
    cfg = directory / "gateway.toml"
    if config:
        with open(cfg, "a") as fh:
            fh.write("\n" + config)
    for desk in desks:
        assert gateway("desks", "add", desk, "--config", str(cfg)).returncode == 0
    with ServerProcess.gateway(cfg) as server:
        fingerprint = gateway("keys", "show", "--config", str(cfg)).stdout.split(
            "fingerprint: ")[1].strip()
        yield Running(server.url, cfg, fingerprint)
    assert server.returncode == 0


async def enroll_invited(http: aiohttp.ClientSession, running: Running,
                         desk: str) -> tuple[Credentials, dict[str, Any]]:
    """An officer enrolled on ``desk`` with a code from ``gateway officers invite`` (its
    own process, as in service), and the gateway's answer; admitted by nobody here."""
    invite = gateway("officers", "invite", "--desk", desk, "--config", str(running.cfg))
    assert invite.returncode == 0, invite.stderr
    return await enroll(http, running.url, invite.stdout.strip(), OfficerSigningKey.generate(),
                        OfficerEncryptionKey.generate(), fingerprint=running.fingerprint)


def tamper(cfg: Path, sql: str, *params: Any) -> None:
    """Change the gateway's database behind its back, as a dishonest operator could."""
    with sqlite3.connect(cfg.parent / "data" / "gateway.sqlite3") as db:
        db.execute(sql, params)
        db.execute("UPDATE meta SET value = value + 1 WHERE key = 'directory_version'")


def gateway_key(cfg: Path) -> GatewaySigningKey:
    key = load_bundle(cfg.parent / "keys" / "gateway.key", None,
                      allow_insecure=True).get(ROLE_GATEWAY_SIGNING)
    assert isinstance(key, GatewaySigningKey)
    return key


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# --- officers and envelopes on one gateway (test_bad_input, test_openapi, the hostile tests)


def envelope_header(**changes: object) -> EnvelopeHeader:
    mid = new_message_id()
    fields: dict[str, object] = dict(
        id=mid, kind="hotline", priority="flash", sender="trafficking@vn-mps",
        recipient="border-liaison@kh-cnp", created=1_767_225_600_000,
        expires=1_767_225_600_000 + 3_600_000, thread=mid,
    )
    fields.update(changes)
    return EnvelopeHeader(**fields)  # type: ignore[arg-type]


_APP_MEMBERS: weakref.WeakKeyDictionary[Any, Roster] = weakref.WeakKeyDictionary()


def members_of(app: Any) -> Roster:
    """Who admits whom on an in-process gateway application (its officers, by desk)."""
    return _APP_MEMBERS.setdefault(app, Roster(app[CLOCK]))


async def enrolled_officer(app, server, http, desk: str) -> GatewayClient:
    now = app[CLOCK].now_ms()
    code = new_code()
    await app[STORE].add_enrollment_code(code_hash(code), [desk], now, now + 3_600_000)
    creds, answer = await enroll(http, str(server.make_url("")).rstrip("/"), code,
                                 OfficerSigningKey.generate(), OfficerEncryptionKey.generate())
    await members_of(app).join(http, creds, answer)
    client = GatewayClient(http, creds)
    await client.sign_in()
    return client


def sealed(client: GatewayClient, readers, *, to: str = "border-liaison@vn-mps",
           expires_in: int = 3_600_000, frm: str = "trafficking@vn-mps") -> bytes:
    now = client.clock.now_ms()
    mid = new_message_id()
    header = EnvelopeHeader(id=mid, kind="hotline", priority="flash", sender=frm,
                            recipient=to, created=now - 10, expires=now + expires_in,
                            thread=mid)
    return seal_envelope(header, b'{"text":"x","type":"hotline"}', client.creds.signing,
                         [r.creds.encryption.public for r in readers])


def enroll_body(code: str, signing: OfficerSigningKey,
                encryption: OfficerEncryptionKey) -> dict[str, str]:
    sign_b64, enc_b64 = signing.public.b64(), encryption.public.b64()
    proof = signing.sign(enroll_text(GATEWAY, code, sign_b64, enc_b64))
    return {"code": code, "sign_key": sign_b64, "enc_key": enc_b64,
            "signature": base64.b64encode(proof).decode("ascii")}


# --- a gateway served from a thread of its own (test_hostile_http, test_hostile_slow) -------

MAX_BODY = 64 * 1024  # server.max_body_bytes of gateway_config
BATCH_BYTES = 64 * 1024  # federation.batch_bytes of gateway_config (its smallest)


class Served:
    """An application served by ``web.AppRunner`` on 127.0.0.1 from a thread with its own
    event loop, so that tests (and hypothesis) can talk to it synchronously."""

    def __init__(self, app: web.Application, **runner: Any) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False, **runner)
        self.port = 0

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> Served:
        self.thread.start()

        async def start() -> int:
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            return int(self.runner.addresses[0][1])
        self.port = self.run(start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self.runner.cleanup())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def gateway_config(directory: Path, partner_key: GatewaySigningKey, **server: Any) -> Any:
    return parse_config({
        "gateway": {"id": GATEWAY, "public_url": "http://127.0.0.1:1",
                    "data_dir": str(directory)},
        "keys": {"file": "unused.key"},
        "ledger": {"checkpoint_interval": 3600.0},
        "server": {"max_body_bytes": MAX_BODY, **server},
        "limits": {"requests_per_second": 100_000, "burst": 1_000_000,
                   "anonymous_per_second": 100_000, "anonymous_burst": 1_000_000,
                   "enroll_per_second": 100_000, "enroll_burst": 1_000_000,
                   "signin_address_per_second": 100_000, "signin_address_burst": 1_000_000},
        "log": {"level": "error"},
        # The partner's URL answers nothing: its refresh and witness loops fail quietly.
        "federation": {"batch_bytes": BATCH_BYTES, "request_timeout_seconds": 2.0},
        "partners": [{"id": PARTNER, "url": "http://127.0.0.1:1",
                      "fingerprint": partner_key.public.fingerprint}],
    }, directory / "gateway.toml")


def dump(database: Path) -> list[str]:
    """Every row of every table, as SQL."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        return list(db.iterdump())


# --- gateways in this process, pinned partners of each other (test_federation and more) -


FAST = {"retry_first_seconds": 0.05, "retry_max_seconds": 0.5, "health_seconds": 0.1,
        "request_timeout_seconds": 5.0, "directory_max_age_seconds": 0.05,
        "witness_seconds": 0.2}
PRIORITIES = ("flash", "immediate", "priority", "routine")


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass
class Gw:
    id: str
    key: GatewaySigningKey
    directory: Path
    sock: socket.socket
    partners: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> url, fp
    federation: dict[str, Any] = field(default_factory=lambda: dict(FAST))
    app: web.Application | None = None
    runner: web.AppRunner | None = None
    members: Roster = field(default_factory=Roster)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database(self) -> Path:
        return self.directory / "gateway.sqlite3"

    def config_doc(self) -> dict[str, Any]:
        return {
            "gateway": {"id": self.id, "public_url": self.url, "data_dir": str(self.directory)},
            "keys": {"file": "unused.key"},
            "ledger": {"checkpoint_interval": 3600.0},
            "limits": {"requests_per_second": 10_000, "burst": 100_000,
                       "anonymous_per_second": 1000, "anonymous_burst": 1000,
                       "enroll_per_second": 1000, "enroll_burst": 1000},
            "log": {"level": "warning"},
            "federation": self.federation,
            "partners": [{"id": p, "url": url, "fingerprint": fp}
                         for p, (url, fp) in self.partners.items()],
        }

    def config(self) -> Any:
        return parse_config(self.config_doc(), self.directory / "gateway.toml")

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.sock.fileno() < 0:  # stopped before: listen on the same port again
            port, self.sock = self.port_was, free_socket_on(self.port_was)
            assert self.port == port
        self.app = create_app(self.config(), KeyBundle(self.id, {ROLE_GATEWAY_SIGNING: self.key}))
        self.runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await self.runner.setup()
        await web.SockSite(self.runner, self.sock).start()

    async def stop(self) -> None:
        self.port_was = self.port
        assert self.runner is not None
        await self.runner.cleanup()
        self.sock.close()
        self.app = self.runner = None

    async def add_desk(self, name: str) -> None:
        assert self.app is not None
        await self.app[STORE].add_desk(name, None, self.app[CLOCK].now_ms())

    async def officer(self, http: aiohttp.ClientSession, desk: str) -> GatewayClient:
        assert self.app is not None
        code, now = new_code(), self.app[CLOCK].now_ms()
        await self.app[STORE].add_enrollment_code(code_hash(code), [desk], now, now + 3_600_000)
        creds, answer = await enroll(http, self.url, code, OfficerSigningKey.generate(),
                                     OfficerEncryptionKey.generate(),
                                     fingerprint=self.key.public.fingerprint)
        await self.members.join(http, creds, answer)
        client = GatewayClient(http, creds)
        await client.sign_in()
        return client

    def rows(self, sql: str, *params: Any) -> list[Any]:
        with sqlite3.connect(self.database) as db:
            return db.execute(sql, params).fetchall()


def free_socket_on(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


def pin(a: Gw, b: Gw, url: str | None = None) -> None:
    """a trusts b (at ``url``, default b's own) and b trusts a."""
    a.partners[b.id] = (url or b.url, b.key.public.fingerprint)
    b.partners[a.id] = (a.url, a.key.public.fingerprint)


async def until(check: Any, what: str, seconds: float = 20.0) -> None:
    """Poll ``check()`` (sync or async) until true; fail naming ``what`` after ``seconds``."""
    for _ in range(int(seconds / 0.02)):
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def make(tmp_path: Path, name: str) -> Gw:
    return Gw(name, GatewaySigningKey.generate(), tmp_path / name, free_socket())


async def started(*gws: Gw) -> None:
    for gw in gws:
        await gw.start()
    for gw in gws:
        for desk in ("trafficking", "border-liaison", "anti-trafficking"):
            await gw.add_desk(desk)


async def stop_all(*gws: Gw) -> None:
    for gw in gws:
        if gw.runner is not None:
            await gw.stop()


async def desk_known(client: GatewayClient, address: str) -> None:
    """Wait until the officer's home gateway serves the directory of ``address``'s
    gateway with that desk and at least one member in it."""
    gateway = address.partition("@")[2]

    async def known() -> bool:
        try:
            desk = (await client.directory(refresh=True, gateway=gateway)).get(address)
            return desk is not None and bool(desk.members)
        except Exception:
            return False
    await until(known, f"{address} in the directory through {client.creds.gateway_id}")


async def partner_known(client: GatewayClient, gateway: str) -> None:
    """Wait until the officer's home gateway knows the partner's anti-trafficking desk."""
    await desk_known(client, f"anti-trafficking@{gateway}")


async def has_message(client: GatewayClient, message_id: str) -> bool:
    """Whether the officer's gateway has the message for its desks (status answers)."""
    try:
        await client.status(message_id)
        return True
    except ApiError:
        return False


async def officers(vn: Gw, kh: Gw,
                   http: aiohttp.ClientSession) -> tuple[GatewayClient, GatewayClient]:
    """An officer of VN's border-liaison desk whose gateway knows KH's directory, and an
    officer of KH's anti-trafficking desk."""
    a = await vn.officer(http, "border-liaison")
    k = await kh.officer(http, "anti-trafficking")
    await partner_known(a, "kh-cnp")
    return a, k


class Stream:
    """One officer's live stream, read in a task until the gateway ends it."""

    def __init__(self, client: GatewayClient) -> None:
        self.events: list[tuple[str, Any]] = []
        self.connected = asyncio.Event()
        self.task = asyncio.create_task(self._read(client))

    async def _read(self, client: GatewayClient) -> None:
        async for kind, data in client.stream(connected=self.connected):
            self.events.append((kind, data))

    async def open(self) -> Stream:
        await asyncio.wait_for(self.connected.wait(), 10)
        return self


async def watching(client: GatewayClient) -> tuple[list[tuple[str, dict[str, Any]]],
                                                   asyncio.Task[None]]:
    """The officer's live events as they come (a list that grows), and the task filling
    it, once the stream is connected."""
    events: list[tuple[str, dict[str, Any]]] = []
    connected = asyncio.Event()

    async def watch() -> None:
        async for kind, data in client.stream(connected=connected):
            events.append((kind, data))
    watcher = asyncio.create_task(watch())
    await asyncio.wait_for(connected.wait(), 10)
    return events, watcher


# Slower than FAST, so that attempts can be counted: backoff from 0.1 s doubling to 0.8 s,
# a hung request cut after 0.5 s, a partner that is down probed every 0.5 s, nothing else
# asked of it meanwhile.
FAULT_FEDERATION = {**FAST, "retry_first_seconds": 0.1, "retry_max_seconds": 0.8,
                    "health_seconds": 0.5, "request_timeout_seconds": 0.5,
                    "refresh_seconds": 60.0, "directory_max_age_seconds": 60.0,
                    "witness_seconds": 60.0}


@dataclass
class FaultGw(Gw):
    """A :class:`Gw` with its own [federation] settings and clock."""

    federation: dict[str, Any] = field(default_factory=lambda: dict(FAULT_FEDERATION))
    clock: Clock | None = None

    def config_doc(self) -> dict[str, Any]:
        doc = super().config_doc()
        doc["federation"] = dict(self.federation)
        return doc

    async def start(self) -> None:
        assert self.sock.fileno() >= 0, "FaultGw starts once"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.app = create_app(self.config(), KeyBundle(self.id, {ROLE_GATEWAY_SIGNING: self.key}),
                              clock=self.clock)
        self.runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await self.runner.setup()
        await web.SockSite(self.runner, self.sock).start()


def fault_gw(tmp_path: Path, name: str, clock: Clock | None = None,
             **federation: Any) -> FaultGw:
    return FaultGw(name, GatewaySigningKey.generate(), tmp_path / name, free_socket(),
                   federation={**FAULT_FEDERATION, **federation}, clock=clock)


# --- the web client in a real headless Chromium (Debian's package) -------------------------

CHROMIUM = Path(os.environ.get("FPG_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage"]


def find_chromium() -> Path:
    """The system's Chromium; without it the browser tests skip, unless
    FPG_REQUIRE_CHROMIUM is set (as CI does): then they fail."""
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    if "FPG_REQUIRE_CHROMIUM" in os.environ:
        pytest.fail(f"{CHROMIUM} is missing and FPG_REQUIRE_CHROMIUM is set (Debian: apt-get "
                    "install --no-install-recommends chromium chromium-driver)")
    pytest.skip(f"{CHROMIUM} is missing; set FPG_REQUIRE_CHROMIUM=1 to fail instead")


# Recorded from the first script of every page, before the page's own: what the Content
# Security Policy refused. (Playwright injects it over the DevTools protocol, which the
# page's CSP does not govern.)
CSP_WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`);
});
"""


@dataclass
class Watched:
    """A browser page and what it did: every request's URL, console messages, and the
    CSP violations (from securitypolicyviolation events and the console)."""

    page: Any
    requests: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    async def violations(self) -> list[str]:
        reported = await self.page.evaluate("window.__csp || []")
        return [*reported, *(m for m in self.console if "Content Security Policy" in m)]

    def foreign(self, origin: str) -> list[str]:
        """Requests to any origin but ``origin`` (data: and blob: URLs stay in the page)."""
        return [u for u in self.requests if not (
            u == origin or u.startswith((origin + "/", "data:", "blob:")))]


@contextlib.asynccontextmanager
async def chromium(locale: str = "en-US") -> Any:
    """A headless Chromium (the system's) and one browser context; closed after."""
    from playwright.async_api import async_playwright  # only the browser tests need it

    executable = find_chromium()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS,
                                           headless=True)
        try:
            context = await browser.new_context(locale=locale, timezone_id="Asia/Ho_Chi_Minh",
                                                accept_downloads=True)
            yield context
        finally:
            await browser.close()


async def watched_page(context: Any) -> Watched:
    page = await context.new_page()
    watched = Watched(page)
    await page.add_init_script(CSP_WATCH)
    page.on("request", lambda request: watched.requests.append(request.url))
    page.on("console", lambda message: watched.console.append(message.text))
    page.set_default_timeout(30_000)
    return watched

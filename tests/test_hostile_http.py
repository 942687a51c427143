"""Hostile requests to every HTTP route of a real gateway on 127.0.0.1.

One gateway (vn-mps, the real application behind ``web.AppRunner``, its own SQLite file)
runs in a thread of its own for the whole module, with two officers, a message between
them, a revoked officer and one pinned partner (kh-cnp, whose key the tests hold, so that
they can send well-signed hop requests with garbage inside). Every route that
``create_app`` registers is in :data:`ROUTES` (a new route without a case fails
:func:`test_every_route_has_hostile_cases`) and gets:

* the same battery: anonymous, forged credentials, garbage and wrongly-typed bodies,
  deeply nested JSON, wrong content types, a body announced far above the limit and never
  sent, hostile path parameters and query strings, wrong methods;
* its own cases: valid payloads presented without the right authentication (a valid relay
  batch unsigned or signed by a stranger, a valid envelope with a revoked officer's
  token ...), each of which would change the database if the check were missing;
* a hypothesis fuzz of method, credentials, content type, body and query.

Every answer must be below 500; a refusal must be JSON ``{"error": <code>, "message"}``
whose code is one the gateway's source defines (stable), with an ``X-Request-Id``; and
the database (a full SQL dump) must be the same after each refusal as before. Requests
that are not HTTP at all (garbage bytes, smuggling headers) get a 4xx or a closed
connection, never a 5xx. At the end, the same valid payloads sent *with* the right
credentials do change the database: the comparison can see a change.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import re
import socket
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs
from yarl import URL

from gateway.app import create_app
from gateway.appkeys import CLOCK, DIRECTORY, STORE
from gateway.crypto.envelope import EnvelopeHeader, new_message_id, seal_envelope
from gateway.crypto.keyfile import KeyBundle
from gateway.crypto.keys import (
    ROLE_GATEWAY_SIGNING,
    GatewaySigningKey,
    OfficerEncryptionKey,
    OfficerSigningKey,
)
from gateway.crypto.note import NoteSigner, sign_note
from gateway.federation.hop import sign_hop
from gateway.federation.partners import (
    FEDERATION_DIRECTORY_PATH,
    FEDERATION_EXCHANGED_PATH,
    FEDERATION_MESSAGES_PATH,
    FEDERATION_PROOFS_PATH,
    FEDERATION_READS_PATH,
)
from gateway.federation.receiver import BATCH_MEDIA_TYPE, READS_MEDIA_TYPE
from gateway.httpbody import server_settings
from gateway.officers.enrollment import new_code
from gateway.protocol.officers import Binding, read_text
from tests.helpers import (
    BATCH_BYTES,
    GATEWAY,
    GATEWAY_KEY,
    MAX_BODY,
    PARTNER,
    Served,
    dump,
    enroll_body,
    enrolled_officer,
    gateway_config,
    sealed,
)

JSON_LIMIT = 64 * 1024  # gateway.channels.client.MAX_JSON_BODY
ENVELOPE_TYPE = "application/vnd.fpg.envelope"
SOURCE = Path(__file__).resolve().parent.parent / "gateway"
T = TypeVar("T")


def stable_codes() -> frozenset[str]:
    """Every error code the gateway's source names: ``code = "..."`` on an error class or
    ``code="..."`` where one is raised, and the codes the error middleware maps aiohttp's
    own refusals to. ``internal`` (the 500 of the catch-all) is not among them."""
    codes: set[str] = set()
    for path in SOURCE.rglob("*.py"):
        codes |= set(re.findall(r'\bcode\s*=\s*"([a-z_]+)"', path.read_text("utf-8")))
    codes |= {"not_found", "method_not_allowed", "too_large", "http_error"}
    codes.discard("internal")
    return frozenset(codes)


STABLE_CODES = stable_codes()


@dataclass
class World:
    served: Served
    kh: GatewaySigningKey
    a_token: str = ""  # officer of trafficking@vn-mps
    b_token: str = ""  # officer of border-liaison@vn-mps
    revoked_token: str = ""
    message_id: str = ""  # a -> border-liaison, in b's inbox
    digest: str = ""
    envelope: bytes = b""  # a new valid envelope from a (not sent)
    read_body: bytes = b""  # b's valid read acknowledgement of message_id (not sent)
    a_read_body: bytes = b""  # the same, signed by a (not a member of the desk)
    batch: bytes = b""  # a valid relay batch from kh-cnp (not sent)
    reads: bytes = b""  # a well-formed read acknowledgement batch from kh-cnp
    database: Path = Path()
    seen: dict[str, set[str]] = field(default_factory=dict)  # route -> codes answered
    logs: list[dict[str, Any]] = field(default_factory=list)  # the gateway's log events

    def internal_errors(self) -> list[dict[str, Any]]:
        """The requests logged as failed (the catch-all's 500) since the last call."""
        failed = [e for e in self.logs if e["event"] == "request_failed"]
        self.logs.clear()
        return failed

    @property
    def port(self) -> int:
        return self.served.port

    def now(self) -> int:
        now: int = self.served.app[CLOCK].now_ms()
        return now

    def hop(self, method: str, path: str, body: bytes, *, key: GatewaySigningKey | None = None,
            caller: str = PARTNER, destination: str = GATEWAY,
            time_ms: int | None = None) -> dict[str, str]:
        return sign_hop(key or self.kh, caller, destination, method, path, body,
                        self.now() if time_ms is None else time_ms)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


async def populate(w: World) -> None:
    """Desks, officers enrolled over HTTP, a message, a revoked officer; and the valid
    payloads the cases present with the wrong credentials."""
    app = w.served.app
    for desk in ("trafficking", "border-liaison", "anti-trafficking"):
        await app[STORE].add_desk(desk, None, app[CLOCK].now_ms())
    server = SimpleNamespace(make_url=lambda path: URL(w.served.url + path))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        a = await enrolled_officer(app, server, http, "trafficking")
        b = await enrolled_officer(app, server, http, "border-liaison")
        gone = await enrolled_officer(app, server, http, "trafficking")
        w.message_id = (await a.send("hotline", "border-liaison",
                                     {"type": "hotline", "text": "x"}))["id"]
    w.a_token, w.b_token, w.revoked_token = a._token, b._token, gone._token
    await app[STORE].revoke_officer(gone.creds.officer_id, w.now())
    await app[DIRECTORY].reload()
    w.envelope = sealed(a, [b])
    row = await app[STORE].get_message(w.message_id)
    assert row is not None
    w.digest = row.digest
    read_ms = w.now()
    for signer, attr in ((b, "read_body"), (a, "a_read_body")):
        signature = signer.creds.signing.sign(read_text(w.message_id, w.digest, read_ms))
        setattr(w, attr, json.dumps({"read": read_ms, "signature": b64(signature)}).encode())

    # A kh-cnp officer vouched for by kh-cnp's key writes to VN's border-liaison desk.
    signing, encryption = OfficerSigningKey.generate(), OfficerEncryptionKey.generate()
    now = w.now()
    binding = Binding(PARTNER, "off-kh", ("anti-trafficking@kh-cnp",), signing.public,
                      encryption.public, now - 60_000, now + 86_400_000).sign(w.kh)
    mid = new_message_id()
    header = EnvelopeHeader(id=mid, kind="hotline", priority="flash",
                            sender="anti-trafficking@kh-cnp", recipient="border-liaison@vn-mps",
                            created=now - 10, expires=now + 3_600_000, thread=mid)
    envelope = seal_envelope(header, b'{"type":"hotline","text":"x"}', signing,
                             [b.creds.encryption.public])
    w.batch = json.dumps({"v": 1, "messages": [{"envelope": b64(envelope),
                                                "binding": b64(binding)}]}).encode()
    text = read_text(w.message_id, w.digest, now)  # of a message VN never relayed to KH
    ack = text + signing.sign(text)
    w.reads = json.dumps({"v": 1, "reads": [{"ack": b64(ack), "binding": b64(binding)}]}
                         ).encode()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    directory = tmp_path_factory.mktemp("hostile-http")
    kh = GatewaySigningKey.generate()
    config = gateway_config(directory, kh)
    app = create_app(config, KeyBundle(GATEWAY, {ROLE_GATEWAY_SIGNING: GATEWAY_KEY}))
    with capture_logs() as logs, Served(app, **server_settings()) as served:
        w = World(served, kh, database=config.database, logs=logs)
        served.run(populate(w))
        w.internal_errors()
        yield w


@pytest.fixture(autouse=True)
def fresh_logs(world: World) -> None:
    """Each test judges the log events of its own requests."""
    world.logs.clear()


# --- talking to it ---------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def doc(self) -> Any:
        return json.loads(self.body)


def request(port: int, method: str, target: str, headers: dict[str, str] | None = None,
            body: bytes | None = None, timeout: float = 10) -> Answer:
    """One request on a new connection; a server-sent event stream is not read."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        response = conn.getresponse()
        if response.getheader("Content-Type", "").startswith("text/event-stream"):
            return Answer(response.status, response.headers, b"")
        return Answer(response.status, response.headers, response.read())
    finally:
        conn.close()


def raw_exchange(port: int, data: bytes, *, half_close: bool = True,
                 timeout: float = 5) -> bytes:
    """Send ``data`` as it is and return all that comes back until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        got = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                piece = sock.recv(65536)
            except ConnectionResetError:
                break
            if not piece:
                break
            got += piece
        else:
            raise AssertionError(f"the server kept the connection open after {data[:80]!r}")
        return got


def check_refusal(answer: Answer, what: str, *, method: str = "GET") -> None:
    """A refusal as the gateway promises it: below 500, JSON error with a stable code."""
    assert answer.status < 500, f"{what}: {answer.status} {answer.body[:300]!r}"
    assert answer.headers.get("X-Request-Id"), f"{what}: no X-Request-Id"
    if answer.status < 400:
        return
    assert answer.headers.get("Content-Type", "").startswith("application/json"), what
    if method == "HEAD":
        return
    doc = answer.doc
    assert set(doc) == {"error", "message"}, (what, doc)
    assert doc["error"] in STABLE_CODES, f"{what}: unstable error code {doc['error']!r}"
    assert isinstance(doc["message"], str) and doc["message"] and "\n" not in doc["message"]


# --- the routes and their cases -------------------------------------------------------------


@dataclass
class Case:
    name: str
    method: str
    target: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    expect: int | None = None  # the status, when the case pins it
    code: str | None = None  # the error code, when the case pins it


@dataclass(frozen=True)
class Route:
    auth: str  # "public", "officer" or "hop"
    body: str | None  # what a POST carries: "json", "envelope", "batch", "reads"
    anonymous: tuple[int, str | None]  # the answer without any credentials
    specific: Callable[[World, str], list[Case]] = lambda w, target: []


def officer(w: World, token: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token or w.a_token}"}


def json_headers(w: World, token: str | None = None) -> dict[str, str]:
    return {**officer(w, token), "Content-Type": "application/json"}


def asset_cases(w: World, target: str) -> list[Case]:
    """Names of files the web client's build did not list, the gateway's own among them."""
    return [Case(f"web client file {name!r}", "GET", f"/app/{name}", {}, None, 404, "not_found")
            for name in ("manifest.json", "index.html", "..%2F..%2Fgateway.toml", ".env",
                         "%2e%2e", "app.py", "a" * 129 + ".js")]


def enroll_cases(w: World, target: str) -> list[Case]:
    body = enroll_body(new_code(), OfficerSigningKey.generate(),
                       OfficerEncryptionKey.generate())
    return [Case("a well-formed enrollment with a code never issued", "POST", target,
                 {"Content-Type": "application/json"}, json.dumps(body).encode(), 403,
                 "enrollment_code_invalid")]


def session_cases(w: World, target: str) -> list[Case]:
    body = {"officer": "off-0000000000000000", "challenge": b64(bytes(32)),
            "signature": b64(bytes(64))}
    return [Case("a sign-in without a challenge issued", "POST", target,
                 {"Content-Type": "application/json"}, json.dumps(body).encode(), 401,
                 "bad_challenge")]


def message_cases(w: World, target: str) -> list[Case]:
    env = {"Content-Type": ENVELOPE_TYPE}
    return [
        Case("a valid envelope without a session", "POST", target, env, w.envelope, 401,
             "no_session"),
        Case("a valid envelope with a revoked officer's session", "POST", target,
             {**env, **officer(w, w.revoked_token)}, w.envelope, 401),
        Case("a valid envelope under another officer's session", "POST", target,
             {**env, **officer(w, w.b_token)}, w.envelope, 403, "signer_mismatch"),
        Case("a valid envelope as text/plain", "POST", target,
             {**officer(w), "Content-Type": "text/plain"}, w.envelope, 415,
             "unsupported_media_type"),
    ]


def read_cases(w: World, target: str) -> list[Case]:
    return [
        Case("a valid read acknowledgement without a session", "POST", target,
             {"Content-Type": "application/json"}, w.read_body, 401, "no_session"),
        Case("b's read acknowledgement presented by a", "POST", target, json_headers(w),
             w.read_body, 403, "not_a_member"),
        Case("b's read acknowledgement presented by a revoked officer", "POST", target,
             json_headers(w, w.revoked_token), w.read_body, 401),
    ]


def hop_cases(media: str, body_of: Callable[[World], bytes]) -> Callable[[World, str],
                                                                         list[Case]]:
    def cases(w: World, target: str) -> list[Case]:
        body = body_of(w)
        typed = {"Content-Type": media}
        stranger = GatewaySigningKey.generate()
        stale = w.now() - 10 * 60_000
        return [
            Case("a valid batch, unsigned", "POST", target, typed, body, 401, "hop_unsigned"),
            Case("a valid batch signed by a stranger's key", "POST", target,
                 {**typed, **w.hop("POST", target, body, key=stranger)}, body, 403,
                 "untrusted_key"),
            Case("a valid batch signed by a gateway that is no partner", "POST", target,
                 {**typed, **w.hop("POST", target, body, key=stranger, caller="xx-evil")},
                 body, 403, "unknown_partner"),
            Case("a valid batch signed for another gateway", "POST", target,
                 {**typed, **w.hop("POST", target, body, destination="la-mps")}, body, 401,
                 "hop_bad_signature"),
            Case("a valid batch signed ten minutes ago", "POST", target,
                 {**typed, **w.hop("POST", target, body, time_ms=stale)}, body, 401,
                 "hop_stale"),
            Case("a valid batch signed over another body", "POST", target,
                 {**typed, **w.hop("POST", target, body + b" ")}, body, 401,
                 "hop_bad_signature"),
            Case("a valid batch signed for another path", "POST", target,
                 {**typed, **w.hop("POST", target + "x", body)}, body, 401,
                 "hop_bad_signature"),
        ] + [
            Case(f"a well-signed batch that is {name}", "POST", target,
                 {**typed, **w.hop("POST", target, garbage)}, garbage, 400, "bad_batch")
            for name, garbage in (
                ("not JSON", b"\xff\xfe{"), ("a list", b"[]"), ("version 2",
                                                              b'{"v":2,"messages":[{}]}'),
                ("empty", b'{"v":1,"messages":[],"reads":[]}'),
                ("a string", json.dumps("x").encode()))
        ] + [
            Case(f"a well-signed batch of {name}", "POST", target,
                 {**typed, **w.hop("POST", target, garbage)}, garbage, 200)
            for name, garbage in (
                ("items of every JSON type", json.dumps({"v": 1, "messages": [
                    None, 1, "x", [], {}, {"envelope": 5}, {"envelope": "%%", "binding": 1},
                    {"envelope": b64(b"FPGE" + bytes(300)), "binding": None}],
                    "reads": [None, 1, "x", [], {}, {"ack": 5}, {"ack": "AAAA",
                                                                  "binding": "AAAA"}]}
                ).encode()),
            )
        ]
    return cases


def directory_hop_cases(w: World, target: str) -> list[Case]:
    stranger = GatewaySigningKey.generate()
    return [
        Case("signed by a stranger's key", "GET", target, w.hop("GET", target, b"",
                                                                key=stranger), None, 403,
             "untrusted_key"),
        Case("well signed, with a body", "GET", target,
             w.hop("GET", target, b"x" * 10), b"x" * 10, 413, "too_large"),
    ]


ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/healthz"): Route("public", None, (200, None)),
    ("GET", "/app/"): Route("public", None, (200, None)),
    ("GET", "/app/{asset}"): Route("public", None, (200, None), asset_cases),
    ("GET", "/.well-known/fpg/descriptor"): Route("public", None, (200, None)),
    ("GET", "/v1/ledger/checkpoint"): Route("public", None, (200, None)),
    ("GET", "/v1/ledger/proof/inclusion"): Route("public", None, (400, "bad_parameter")),
    ("GET", "/v1/ledger/proof/consistency"): Route("public", None, (400, "bad_parameter")),
    ("POST", FEDERATION_MESSAGES_PATH): Route(
        "hop", "batch", (401, "hop_unsigned"), hop_cases(BATCH_MEDIA_TYPE, lambda w: w.batch)),
    ("POST", FEDERATION_READS_PATH): Route(
        "hop", "reads", (401, "hop_unsigned"), hop_cases(READS_MEDIA_TYPE, lambda w: w.reads)),
    ("GET", FEDERATION_PROOFS_PATH): Route("hop", None, (401, "hop_unsigned"),
                                           directory_hop_cases),
    ("GET", FEDERATION_DIRECTORY_PATH): Route("hop", None, (401, "hop_unsigned"),
                                              directory_hop_cases),
    ("GET", FEDERATION_EXCHANGED_PATH): Route("hop", None, (401, "hop_unsigned"),
                                              directory_hop_cases),
    ("POST", "/v1/enroll"): Route("public", "json", (415, "unsupported_media_type"),
                                  enroll_cases),
    ("POST", "/v1/session/challenge"): Route("public", "json", (415, "unsupported_media_type")),
    ("POST", "/v1/session"): Route("public", "json", (415, "unsupported_media_type"),
                                   session_cases),
    ("GET", "/v1/directory"): Route("officer", None, (401, "no_session")),
    ("POST", "/v1/messages"): Route("officer", "envelope", (401, "no_session"),
                                    message_cases),
    ("GET", "/v1/messages/{id}"): Route("officer", None, (401, "no_session")),
    ("GET", "/v1/messages/{id}/status"): Route("officer", None, (401, "no_session")),
    ("POST", "/v1/messages/{id}/read"): Route("officer", "json", (401, "no_session"),
                                              read_cases),
    ("GET", "/v1/desks/{desk}/inbox"): Route("officer", None, (401, "no_session")),
    ("GET", "/v1/cases"): Route("officer", None, (401, "no_session")),
    ("GET", "/v1/cases/{id}"): Route("officer", None, (401, "no_session")),
    ("GET", "/v1/sent"): Route("officer", None, (401, "no_session")),
    ("GET", "/v1/desks/{desk}/members"): Route("officer", None, (401, "no_session")),
    ("POST", "/v1/desks/{desk}/admissions"): Route("officer", "json", (401, "no_session")),
    ("GET", "/v1/desks/{desk}/notices"): Route("officer", None, (401, "no_session")),
    ("GET", "/v1/desks/{desk}/notices/{cursor}"): Route("officer", None, (401, "no_session")),
    ("POST", "/v1/desks/{desk}/notices/read"): Route("officer", "json", (401, "no_session")),
    ("GET", "/v1/desks/{desk}/proofs"): Route("officer", None, (401, "no_session")),
    ("POST", "/v1/desks/{desk}/shares"): Route("officer", "json", (401, "no_session")),
    ("GET", "/v1/messages/{id}/share"): Route("officer", None, (401, "no_session")),
    ("GET", "/v1/stream"): Route("officer", None, (401, "no_session")),
}

def gzip_bomb(size: int) -> bytes:
    """``size`` zero bytes, gzip-compressed (about a thousandth of ``size``)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    piece = bytes(1 << 20)
    return b"".join([*(packer.compress(piece) for _ in range(size >> 20)), packer.flush()])


ENCODED = {"gzip over garbage": b"garbage" * 10, "deflate over garbage": b"\0\xff" * 10,
           "gzip truncated": zlib.compress(b'{"v":1}' * 100, wbits=31)[:40],
           "br": b"xx", "zstd": b"xx", "x-unknown": b"{}",
           "gzip bomb of 32 MiB": gzip_bomb(32 << 20)}

HOSTILE_SEGMENTS = ["..", "%2e%2e", "%00", "%ff%fe", "a" * 2000, "%F0%9F%92%A9", "desk@",
                    "@", "%40vn-mps", "0" * 32, "%20", "x%2Fy", "'%20OR%201=1--"]
HOSTILE_QUERIES = ["?%ff=%fe", "?" + "a=1&" * 300, "?desk=%00", "?gateway=%00",
                   "?index=1e3&size=-1", "?after=99999999999999999999&limit=%ef%bc%91",
                   "?old=&new=", "?gateway=" + "x" * 3000, "?desk=nowhere@vn-mps",
                   "?gateway=..%2f..%2f"]


def fill(w: World, template: str, value: str | None = None) -> str:
    """The template with its path parameters: real ones, or ``value`` (already encoded)."""
    real = {"id": w.message_id, "desk": "border-liaison@vn-mps", "cursor": "1",
            "asset": "i18n-en.json"}
    return re.sub(r"{(\w+)}", lambda m: value if value is not None else quote(real[m[1]],
                                                                              safe="@"), template)


def battery(w: World, method: str, template: str, route: Route) -> list[Case]:
    """The hostile requests every route gets."""
    target = fill(w, template)
    cases = [Case("anonymous", method, target, {}, None, *route.anonymous)]
    forged = [{"Authorization": v} for v in (
        "Bearer forged", "Bearer " + "A" * 43, f"Basic {w.a_token}", "Bearer ", "Bearer\t" +
        w.a_token, "bearer " + w.a_token + "x", "Bearer " + "x" * 7000, "Bearer \u00e9")]
    forged += [{"FPG-Hop-Gateway": PARTNER, "FPG-Hop-Key": "%%", "FPG-Hop-Time": "-1",
                "FPG-Hop-Nonce": "x", "FPG-Hop-Signature": "AAAA"},
               {"FPG-Hop-Gateway": "\u00e9" * 10, "FPG-Hop-Key": w.kh.public.b64(),
                "FPG-Hop-Time": str(w.now()), "FPG-Hop-Nonce": "A" * 22,
                "FPG-Hop-Signature": b64(bytes(64))}]
    for headers in forged:
        expect = {"officer": 401, "hop": None, "public": None}[route.auth]
        cases.append(Case(f"forged credentials {next(iter(headers.values()))[:20]!r}", method,
                          target, headers, None, expect))
    auth = officer(w) if route.auth == "officer" else {}
    if method == "POST":
        ctype = {"json": "application/json", "envelope": ENVELOPE_TYPE,
                 "batch": BATCH_MEDIA_TYPE, "reads": READS_MEDIA_TYPE}[route.body or "json"]
        bodies = {"random bytes": bytes(range(256)) * 4, "empty": b"",
                  "invalid UTF-8": b'{"a":"\xff"}', "NUL": b"\0" * 64,
                  "a BOM": b"\xef\xbb\xbf{}", "a huge number": b"9" * 5000,
                  "NaN": b'{"read":NaN,"signature":NaN,"officer":NaN,"code":NaN}'}
        bodies |= {f"JSON {v}": v.encode() for v in ("[]", '"x"', "1", "null", "true",
                                                      "{}", '{"v":1}', '{"":{}}')}
        bodies |= {f"fields of type {t}": json.dumps({k: v for k in (
            "code", "sign_key", "enc_key", "signature", "officer", "challenge", "read", "v",
            "messages", "reads")}).encode() for t, v in (
            ("list", [1]), ("object", {"a": 1}), ("bool", True), ("float", 1.5),
            ("big int", 2**70), ("string", "x"), ("null", None))}
        if route.auth != "hop":  # a well-signed deep nesting: its own case below
            bodies["deeply nested JSON"] = b"[" * 30_000
        for name, body in bodies.items():
            headers = {**auth, "Content-Type": ctype}
            if route.auth == "hop":
                headers |= w.hop(method, target, body)
            cases.append(Case(f"body: {name}", method, target, headers, body))
            cases.append(Case(f"body: {name}, no content type", method, target,
                              {k: v for k, v in headers.items() if k != "Content-Type"},
                              body))
        for encoding, body in ENCODED.items():
            headers = {**auth, "Content-Type": ctype, "Content-Encoding": encoding.split()[0]}
            if route.auth == "hop":
                headers |= w.hop(method, target, body)
            cases.append(Case(f"Content-Encoding {encoding}", method, target, headers, body))
        for ctype_wrong in ("text/plain", "application/x-www-form-urlencoded",
                            "multipart/form-data; boundary=x", "application/json; charset=x"):
            body = b"a=1&b=2"
            headers = {**auth, "Content-Type": ctype_wrong}
            if route.auth == "hop":
                headers |= w.hop(method, target, body)
            cases.append(Case(f"content type {ctype_wrong}", method, target, headers, body))
    for value in HOSTILE_SEGMENTS if "{" in template else []:
        cases.append(Case(f"path parameter {value[:20]!r}", method, fill(w, template, value),
                          auth, b"{}" if method == "POST" else None))
    for query in HOSTILE_QUERIES:
        headers = dict(auth)
        if route.auth == "hop":
            headers |= w.hop(method, target + query, b"")
        cases.append(Case(f"query {query[:30]!r}", method, target + query, headers,
                          b"" if method == "POST" else None))
    for other in ("PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"):
        if other != method:
            cases.append(Case(f"method {other}", other, target, auth, None, 405,
                              "method_not_allowed"))
    cases.append(Case("method CONNECT", "CONNECT", target, auth))  # authority-form: a 404
    return cases + route.specific(w, target)


def served_routes(app: web.Application) -> set[tuple[str, str]]:
    return {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource}


def test_every_route_has_hostile_cases(world: World) -> None:
    served = served_routes(world.served.app)
    heads = {(m, p) for m, p in served if m == "HEAD"}
    assert {("GET", p) for _, p in heads} <= set(ROUTES), "HEAD without its GET"
    assert served - heads == set(ROUTES), (
        f"routes without hostile cases: {sorted(served - heads - set(ROUTES))}; "
        f"cases for routes that are gone: {sorted(set(ROUTES) - served)}")


def run_cases(w: World, cases: list[Case], route: str) -> None:
    for case in cases:
        before = dump(w.database)
        answer = request(w.port, case.method, case.target, case.headers, case.body)
        what = f"{route}: {case.name}"
        check_refusal(answer, what, method=case.method)
        if case.expect is not None:
            assert answer.status == case.expect, f"{what}: {answer.status} " \
                f"{answer.body[:200]!r}, not {case.expect}"
        if case.code is not None:
            assert answer.doc["error"] == case.code, (what, answer.doc)
        if answer.status >= 400 and case.method != "HEAD":
            w.seen.setdefault(route, set()).add(answer.doc["error"])
        assert dump(w.database) == before, f"{what}: the database changed"
        assert not w.internal_errors(), f"{what}: logged as an internal error"


@pytest.mark.parametrize("key", sorted(ROUTES), ids=lambda k: f"{k[0]} {k[1]}")
def test_hostile_requests_to_each_route_are_refused_and_change_nothing(
        world: World, key: tuple[str, str]) -> None:
    method, template = key
    route = ROUTES[key]
    cases = battery(world, method, template, route)
    if (("HEAD", template) in served_routes(world.served.app)):
        # (a hop signature covers the method: signed for GET, a HEAD is refused anyway)
        cases += [Case(f"HEAD {c.name}", "HEAD", c.target, c.headers, None,
                       None if "FPG-Hop-Signature" in c.headers else c.expect)
                  for c in cases if c.method == "GET"]
    run_cases(world, cases, f"{method} {template}")


@pytest.mark.parametrize("path", [FEDERATION_MESSAGES_PATH, FEDERATION_READS_PATH])
def test_fixed_defect_a_well_signed_deeply_nested_batch(world: World, path: str) -> None:
    body = b"[" * 30_000
    media = BATCH_MEDIA_TYPE if path == FEDERATION_MESSAGES_PATH else READS_MEDIA_TYPE
    run_cases(world, [Case("deeply nested JSON", "POST", path,
                           {**world.hop("POST", path, body), "Content-Type": media}, body,
                           400, "bad_batch")], f"POST {path}")


@pytest.mark.parametrize("path", [FEDERATION_MESSAGES_PATH, FEDERATION_READS_PATH])
def test_whole_batch_refusals_are_the_documented_ones(world: World, path: str) -> None:
    """docs/PROTOCOL.md 10.4: a body over ``batch_bytes`` is 413 ``too_large``, another
    media type 415 ``unsupported_media_type``, and a body that is not 1 to 5,000 items in
    strict JSON (no key twice, at any depth) 400 ``bad_batch``; nothing is stored. 5,000
    items are within the limit (each refused on its own)."""
    media, key = ((BATCH_MEDIA_TYPE, "messages") if path == FEDERATION_MESSAGES_PATH
                  else (READS_MEDIA_TYPE, "reads"))
    valid = world.batch if path == FEDERATION_MESSAGES_PATH else world.reads

    def items(n: int) -> bytes:
        return f'{{"v":1,"{key}":[{",".join(["1"] * n)}]}}'.encode()

    def case(name: str, body: bytes, expect: int, code: str | None,
             content_type: str = media) -> Case:
        return Case(name, "POST", path, {**world.hop("POST", path, body),
                                         "Content-Type": content_type}, body, expect, code)

    item = json.loads(valid)[key][0]
    first = next(iter(item))
    doubled = json.dumps(item)[:-1] + f', "{first}": {json.dumps(item[first])}}}'
    run_cases(world, [
        case("one byte over batch_bytes", b" " * (BATCH_BYTES + 1), 413, "too_large"),
        case("a valid batch as application/json", valid, 415, "unsupported_media_type",
             "application/json"),
        case("no items", items(0), 400, "bad_batch"),
        case("5,001 items", items(5001), 400, "bad_batch"),
        case("version 2", valid.replace(b'"v": 1', b'"v": 2'), 400, "bad_batch"),
        case("the key v twice", b'{"v":1,' + valid[1:], 400, "bad_batch"),
        case(f"an item with {first} twice",
             f'{{"v":1,"{key}":[{doubled}]}}'.encode(), 400, "bad_batch"),
        case("5,000 items", items(5000), 200, None),
    ], f"POST {path}")
    assert json.loads(doubled)[first] == item[first]  # lax JSON would read the valid item


def test_fixed_defect_a_binding_with_an_infinite_time(world: World) -> None:
    signing, encryption = OfficerSigningKey.generate(), OfficerEncryptionKey.generate()
    text = Binding(PARTNER, "off-x", ("anti-trafficking@kh-cnp",), signing.public,
                   encryption.public, 0, 1).text().replace('"not_before":0',
                                                           '"not_before":-Infinity')
    binding = sign_note(text, [NoteSigner(PARTNER, world.kh)])
    envelope = json.loads(world.batch)["messages"][0]["envelope"]  # a valid one
    body = json.dumps({"v": 1, "messages": [{"envelope": envelope,
                                             "binding": b64(binding)}]}).encode()
    path = FEDERATION_MESSAGES_PATH
    run_cases(world, [Case("a binding with not_before -Infinity", "POST", path,
                           {**world.hop("POST", path, body), "Content-Type": BATCH_MEDIA_TYPE},
                           body, 200)], f"POST {path}")


def test_unknown_paths_are_json_404s(world: World) -> None:
    cases = [Case(f"unknown path {p[:30]!r}", "GET", p, {}, None, 404, "not_found") for p in (
        "/v1/unknown", "/v2/messages", "/%2e%2e/%2e%2e/etc/passwd", "//", "/v1/messages/",
        "/.well-known/", "/v1/federation/", "/admin.sock", "/metrics", "/" + "x" * 4000,
        "/v1/desks//inbox", "/%ff")]
    run_cases(world, cases, "unknown")


# --- bodies announced above the limit: refused before they are read --------------------------


def body_routes(w: World) -> list[tuple[str, dict[str, str], int]]:
    """(target, headers, limit) of every route that reads a body (and GET
    /v1/federation/directory, which reads an empty one), with valid credentials where the
    credentials are checked before the body is read."""
    out = []
    for (method, template), route in ROUTES.items():
        if method != "POST" and template not in (FEDERATION_DIRECTORY_PATH,
                                                 FEDERATION_PROOFS_PATH,
                                                 FEDERATION_EXCHANGED_PATH):
            continue
        target = fill(w, template)
        if route.auth == "officer":
            ctype = ENVELOPE_TYPE if route.body == "envelope" else "application/json"
            headers, limit = {**officer(w), "Content-Type": ctype}, (
                MAX_BODY if route.body == "envelope" else JSON_LIMIT)
        elif route.auth == "hop":
            headers, limit = {}, BATCH_BYTES if method == "POST" else 0
        else:
            headers, limit = {"Content-Type": "application/json"}, JSON_LIMIT
        out.append((target, {**headers, "_method": method}, limit))
    return out


def head_of(method: str, target: str, headers: dict[str, str], extra: str) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1",
             *(f"{k}: {v}" for k, v in headers.items()), extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_status(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    got = b""
    while b"\r\n" not in got:
        piece = sock.recv(4096)
        if not piece:
            break
        got += piece
    return got.split(b"\r\n", 1)[0]


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes the connection within ``seconds`` (what it still sends
    is read and dropped)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
    return False


def test_bodies_announced_far_above_the_limit_are_refused_before_they_are_sent(
        world: World) -> None:
    routes = body_routes(world)
    assert len(routes) == 13
    for target, headers, limit in routes:
        method = headers.pop("_method")
        before = dump(world.database)
        with socket.create_connection(("127.0.0.1", world.port), timeout=5) as sock:
            # Headers only: the body is never sent, so an answer proves it was not read.
            sock.sendall(head_of(method, target, headers, "Content-Length: 1000000000"))
            started = time.monotonic()
            status = read_status(sock, 5)
            # An unsigned hop request is refused (401) before its size matters.
            refused = b"HTTP/1.1 401 " if "/federation/" in target else b"HTTP/1.1 413 "
            assert status.startswith(refused), (target, status)
            assert time.monotonic() - started < 2, target
        assert limit < 10**9 and dump(world.database) == before, target
        assert not world.internal_errors(), target


@pytest.mark.parametrize("path", [FEDERATION_MESSAGES_PATH, FEDERATION_READS_PATH])
def test_hop_requests_no_body_can_make_valid_are_refused_before_the_body_is_read(
        world: World, path: str) -> None:
    """Headers only, a body announced within the limit and never sent: an answer proves
    the gateway refused without waiting for the body (its body timeout is 120 s)."""
    stranger = GatewaySigningKey.generate()
    body = b"{}"
    cases = [
        ({}, b"HTTP/1.1 401 "),  # unsigned
        (world.hop("POST", path, body, key=stranger, caller="xx-evil"), b"HTTP/1.1 403 "),
        (world.hop("POST", path, body, time_ms=world.now() - 10 * 60_000), b"HTTP/1.1 401 "),
    ]
    before = dump(world.database)
    for hop, refused in cases:
        headers = {"Content-Type": "application/json", **hop}
        with socket.create_connection(("127.0.0.1", world.port), timeout=5) as sock:
            sock.sendall(head_of("POST", path, headers, "Content-Length: 1000"))
            status = read_status(sock, 5)
            assert status.startswith(refused), (hop, status)
    assert dump(world.database) == before
    assert not world.internal_errors()


def test_chunked_bodies_are_cut_once_past_the_limit(world: World) -> None:
    for target, headers, limit in body_routes(world):
        method = headers.pop("_method")
        with socket.create_connection(("127.0.0.1", world.port), timeout=5) as sock:
            sock.sendall(head_of(method, target, headers, "Transfer-Encoding: chunked"))
            piece = b"{" * 4096
            sent = 0
            with contextlib.suppress(OSError):
                while sent <= limit + 8192:  # past the limit; the last chunk never comes
                    sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                    sent += len(piece)
            status = read_status(sock, 5)
            refused = b"HTTP/1.1 401 " if "/federation/" in target else b"HTTP/1.1 413 "
            assert status.startswith(refused), (target, status)
        assert not world.internal_errors(), target


# --- clients that go away in the middle of a body -----------------------------------------------


def going_away(sock: socket.socket, how: str) -> None:
    """After a partial body: end the connection as ``how`` says."""
    if how == "RST":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    elif how == "bad chunk framing":
        sock.sendall(b"zz\r\nhello\r\n")
    elif how == "chunk cut short":
        sock.sendall(b"5\r\nab")
    if how != "RST":
        time.sleep(0.05)
        sock.shutdown(socket.SHUT_WR)


@pytest.mark.parametrize("how", ["FIN", "RST", "bad chunk framing", "chunk cut short"])
def test_a_client_going_away_mid_body_is_a_refusal_not_an_internal_error(world: World,
                                                                         how: str) -> None:
    """Regression: a client that closed (or broke the framing of) its body while the
    handler was reading it was logged as ``request_failed`` with a traceback, the
    catch-all's internal error, by anyone, unauthenticated."""
    before = dump(world.database)
    routes = body_routes(world)
    world.logs.clear()
    for target, headers, _ in routes:
        method = headers.pop("_method")
        framing = "Transfer-Encoding: chunked" if "chunk" in how else "Content-Length: 100"
        with socket.create_connection(("127.0.0.1", world.port), timeout=5) as sock:
            sock.sendall(head_of(method, target, headers, framing))
            sock.sendall(b"2\r\n{\"\r\n" if "chunk" in how else b'{"')
            time.sleep(0.05)  # the handler is reading the body now
            going_away(sock, how)
    for _ in range(100):  # every request has been answered or refused (bounded wait)
        if sum(e["event"] in ("request_refused", "request_failed")
               for e in world.logs) >= len(routes):
            break
        time.sleep(0.02)
    assert not world.internal_errors(), how
    assert dump(world.database) == before


def test_an_undecodable_body_is_a_refusal_under_aiohttp_default_settings(
        tmp_path: Path) -> None:
    """With aiohttp's defaults (``web.AppRunner(app)``, what ``gateway run`` has until it
    takes :func:`server_settings`), a body is decoded by its Content-Encoding: bytes that
    are not what it says were an internal error (500, logged with a traceback). Regression.
    """
    app = create_app(gateway_config(tmp_path, GatewaySigningKey.generate()),
                     KeyBundle(GATEWAY, {ROLE_GATEWAY_SIGNING: GATEWAY_KEY}))
    bodies = {"gzip": b"garbage" * 10, "deflate": b"\0\xff" * 10,
              "GZIP": b"\x1f\x8b\x08\x00" + bytes(range(64)),
              "gzip ": ENCODED["gzip bomb of 32 MiB"]}
    with capture_logs() as logs, Served(app) as served:
        for encoding, body in bodies.items():
            answer = request(served.port, "POST", "/v1/session/challenge", {
                "Content-Type": "application/json", "Content-Encoding": encoding.strip()},
                body)
            # the bomb is cut once its decoded body passes the limit
            expected = (413, "too_large") if encoding == "gzip " else (400, "bad_body")
            assert (answer.status, answer.doc["error"]) == expected, encoding
    assert not [e for e in logs if e["event"] == "request_failed"]


# --- not HTTP at all --------------------------------------------------------------------------


WIRE_GARBAGE = [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(100),  # a TLS ClientHello
    b"GET / HTTP/9.9\r\n\r\n",
    b"FOO /healthz HTTP/1.1\r\nHost: x\r\n\r\n",  # a method llhttp does not know
    b"GET /healthz\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"POST /v1/session HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",  # request smuggling
    b"POST /v1/session HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"zz\r\nhello\r\n0\r\n\r\n",
    b"POST /v1/session HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /v1/session HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 20_000 + b"\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 500 + b"\r\n",
    b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: \x00\x01\r\n\r\n",
    b"\r\n\r\n\r\n",
    bytes(range(256)) * 8,
]


@pytest.mark.parametrize("data", WIRE_GARBAGE, ids=lambda d: repr(d[:24]))
def test_requests_that_are_not_http_get_a_4xx_or_a_closed_connection(
        world: World, data: bytes) -> None:
    before = dump(world.database)
    got = raw_exchange(world.port, data)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", got)
    assert all(int(s) < 500 for s in statuses), got[:300]
    # A smuggled second request is not answered as one: at most the first is.
    assert len(statuses) <= 1 or data.count(b"HTTP/1.1") >= len(statuses), got[:300]
    assert dump(world.database) == before
    assert not world.internal_errors()


# --- fuzz -----------------------------------------------------------------------------------


route_keys = st.sampled_from(sorted(ROUTES))


def utf8_text(size: int) -> st.SearchStrategy[str]:
    return st.text(st.characters(codec="utf-8"), max_size=size)

header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                      exclude_characters="\x7f"), max_size=40)


@st.composite
def fuzzed(draw: st.DrawFn, w: World) -> Case:
    method, template = draw(route_keys)
    if draw(st.integers(0, 9)) == 0:
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"]))
    segment = draw(st.sampled_from(HOSTILE_SEGMENTS) | st.text(
        st.characters(min_codepoint=0x21, codec="utf-8", exclude_characters="/?#%"),
        min_size=1, max_size=40).map(lambda s: quote(s, safe="@")))
    target = fill(w, template, segment if draw(st.booleans()) else None)
    query = draw(st.lists(st.tuples(st.sampled_from(["desk", "gateway", "after", "limit",
                                                     "index", "size", "old", "new", "x"]),
                                    utf8_text(20) | st.integers(-5, 10**20).map(str)),
                          max_size=3))
    if query:
        target += "?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in query
                                 if not (k == "gateway" and v == PARTNER))
    body = draw(st.none() | st.binary(max_size=300) | st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_infinity=False)
        | utf8_text(30),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
            st.sampled_from(["v", "messages", "reads", "envelope", "binding", "ack", "code",
                             "officer", "challenge", "signature", "read", "sign_key",
                             "enc_key"]) | utf8_text(5), inner, max_size=5),
        max_leaves=12).map(lambda doc: json.dumps(doc).encode()))
    headers: dict[str, str] = {}
    ctype = draw(st.none() | st.sampled_from(["application/json", ENVELOPE_TYPE,
                                              BATCH_MEDIA_TYPE, READS_MEDIA_TYPE,
                                              "text/plain"]) | header_values)
    if ctype is not None:
        headers["Content-Type"] = ctype
    auth = draw(st.sampled_from(["none", "officer", "revoked", "forged", "hop", "hop-forged"]))
    if auth == "officer":
        headers |= officer(w)
    elif auth == "revoked":
        headers |= officer(w, w.revoked_token)
    elif auth == "forged":
        headers["Authorization"] = "Bearer " + draw(header_values)
    elif auth == "hop":  # well signed: the garbage reaches the batch parser
        headers |= w.hop(method, target, body or b"")
    else:
        headers |= {h: draw(header_values) for h in draw(st.sets(st.sampled_from(
            ["FPG-Hop-Gateway", "FPG-Hop-Key", "FPG-Hop-Time", "FPG-Hop-Nonce",
             "FPG-Hop-Signature"])))}
    return Case("fuzzed", method, target, headers, body)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_fuzzed_requests_to_every_route_are_refused_and_change_nothing(
        world: World, data: st.DataObject) -> None:
    case = data.draw(fuzzed(world))
    if case.method == "GET" and case.target.startswith("/v1/stream") \
            and case.headers.get("Authorization") == f"Bearer {world.a_token}":
        case.headers.pop("Authorization")  # a valid stream never ends: not a refusal test
    before = dump(world.database)
    answer = request(world.port, case.method, case.target, case.headers, case.body)
    check_refusal(answer, f"{case.method} {case.target[:80]} {case.headers}",
                  method=case.method)
    assert dump(world.database) == before, f"{case}: the database changed"
    assert not world.internal_errors(), f"{case}: logged as an internal error"


# --- and the comparison sees a change --------------------------------------------------------


def test_the_same_payloads_with_the_right_credentials_do_change_the_database(
        world: World) -> None:
    """Run last (file order): the valid payloads the cases above presented without the
    right credentials are accepted with them, and the dump shows it."""
    w = world
    before = dump(w.database)
    answer = request(w.port, "POST", FEDERATION_MESSAGES_PATH,
                     {**w.hop("POST", FEDERATION_MESSAGES_PATH, w.batch),
                      "Content-Type": BATCH_MEDIA_TYPE}, w.batch)
    assert answer.status == 200 and '"outcome":"accepted"' in answer.doc["receipts"][0]
    after_batch = dump(w.database)
    assert after_batch != before
    target = f"/v1/messages/{w.message_id}/read"
    answer = request(w.port, "POST", target, json_headers(w, w.b_token), w.read_body)
    assert (answer.status, answer.doc["status"]) == (200, "recorded")
    assert dump(w.database) != after_batch
    answer = request(w.port, "POST", "/v1/messages", {**officer(w),
                                                      "Content-Type": ENVELOPE_TYPE},
                     w.envelope)
    assert answer.status == 201
    print("refusal codes seen per route:", json.dumps(
        {k: sorted(v) for k, v in sorted(w.seen.items())}, indent=1))


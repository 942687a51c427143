"""docs/openapi.yaml against the gateway: every route described, every answer as described.

The description is checked three ways: it is a valid OpenAPI 3.1 document; its paths and
methods are exactly the routes ``create_app`` registers; and a real server on 127.0.0.1,
driven through every operation with good and bad requests, answers only statuses the
description lists, with JSON bodies (errors included) that validate against its schemas.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from openapi_spec_validator.validation import OpenAPIV31SpecValidator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from gateway.app import create_app
from gateway.appkeys import CLOCK, DIRECTORY, HUB, LEDGER, SERVICE_LEVELS, STORE
from gateway.clock import ManualClock
from gateway.config import ServiceLevelSection, parse_config
from gateway.crypto.envelope import EnvelopeHeader, new_message_id, seal_envelope
from gateway.crypto.keyfile import KeyBundle
from gateway.crypto.keys import ROLE_GATEWAY_SIGNING, OfficerEncryptionKey, OfficerSigningKey
from gateway.officers import sessions
from gateway.officers.enrollment import new_code
from gateway.protocol.admission import admission_text
from gateway.protocol.history import share_text
from gateway.protocol.officers import code_hash, read_text, session_text
from gateway.service_levels.levels import ServiceLevels
from gateway.store import Notification
from tests.helpers import GATEWAY_KEY, enroll_body

SPEC_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
SPEC_URI = "urn:fpg:openapi"
METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")
GATEWAY = "vn-mps"
MAX_BODY = 64 * 1024  # server.max_body_bytes in these worlds (the smallest it may be is 1 KiB)
MAX_QUERY_INT = 10**18 - 1  # at most 18 ASCII digits


@functools.cache
def spec() -> dict[str, Any]:
    with SPEC_PATH.open(encoding="utf-8") as f:
        doc: dict[str, Any] = yaml.safe_load(f)
    return doc


def operations() -> dict[tuple[str, str], dict[str, Any]]:
    """(METHOD, path template) -> operation object."""
    return {(method.upper(), path): item[method]
            for path, item in spec()["paths"].items() for method in METHODS if method in item}


def secured(op: dict[str, Any]) -> bool:
    return bool(op.get("security", spec().get("security", [])))


def pointer(*parts: str) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def resolve(ptr: str) -> tuple[str, Any]:
    """Follow ``$ref``s from JSON pointer ``ptr`` in the spec; the final pointer and value."""
    while True:
        node: Any = spec()
        for part in ptr.split("/")[1:]:
            key = part.replace("~1", "/").replace("~0", "~")
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            assert ref.startswith("#/"), ref
            ptr = ref[1:]
            continue
        return ptr, node


@functools.cache
def registry() -> Registry:
    return Registry().with_resource(SPEC_URI, DRAFT202012.create_resource(spec()))


@functools.cache
def validator(ptr: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"{SPEC_URI}#{ptr}"}, registry=registry())


def assert_valid(ptr: str, instance: Any, what: str) -> None:
    errors = sorted(validator(ptr).iter_errors(instance), key=lambda e: list(e.path))
    assert not errors, f"{what} does not match {ptr}: " + "; ".join(
        f"{list(e.path)}: {e.message}" for e in errors[:5])


def parameters(method: str, template: str) -> list[tuple[str, dict[str, Any]]]:
    """(pointer, parameter object) of each parameter of an operation, refs followed."""
    op_ptr = pointer("paths", template, method.lower(), "parameters")
    count = len(operations()[(method, template)].get("parameters", []))
    return [resolve(f"{op_ptr}/{i}") for i in range(count)]


def is_valid(ptr: str, instance: Any) -> bool:
    return validator(ptr).is_valid(instance)


def media_type(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


# --- the checker ---------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    body: bytes
    headers: Any
    doc: Any = None


@dataclass
class Checker:
    """Checks each answer against the spec and records which statuses each operation gave."""

    seen: dict[tuple[str, str], set[int]] = field(default_factory=lambda: defaultdict(set))
    refused_methods: set[str] = field(default_factory=set)  # paths seen answering 405

    def response(self, method: str, template: str, status: int) -> tuple[str, dict[str, Any]]:
        op = operations()[(method, template)]
        key = str(status) if str(status) in op["responses"] else f"{str(status)[0]}XX"
        assert key in op["responses"], (
            f"{method} {template} answered {status}, which the spec does not list")
        return resolve(pointer("paths", template, method.lower(), "responses", key))

    def check(self, method: str, template: str, answer: Answer) -> None:
        status = answer.status
        assert status < 500, f"{method} {template} failed: {status} {answer.body[:200]!r}"
        if (method, template, status) != ("GET", "/v1/stream", 200):  # as the spec says
            assert answer.headers.get("X-Request-Id"), "every answer carries X-Request-Id"
        ptr, response = self.response(method, template, status)
        for name, header in response.get("headers", {}).items():
            value = answer.headers.get(name)
            assert value is not None or not header.get("required"), f"no {name} header"
            if value is not None and "schema" in header:
                assert_valid(f"{ptr}/headers/{name}/schema", value, f"header {name}")
        content = response.get("content", {})
        mtype = media_type(answer.headers.get("Content-Type"))
        assert mtype in content, f"{method} {template} {status} answered {mtype!r}"
        if mtype == "application/json":
            answer.doc = json.loads(answer.body)
            schema_ptr = f"{ptr}/content/{pointer(mtype)[1:]}/schema"
            assert_valid(schema_ptr, answer.doc, f"{method} {template} {status} body")
            if status >= 400:
                assert_valid("/components/schemas/Error", answer.doc, "error body")
        self.seen[(method, template)].add(status)

    def check_request(self, method: str, template: str, path: dict[str, str],
                      query: list[tuple[str, str]], body: Any) -> None:
        """A request the server accepted must be one the spec describes as valid."""
        op_ptr = pointer("paths", template, method.lower())
        op = operations()[(method, template)]
        for pptr, p in parameters(method, template):
            if p["in"] == "path":
                assert_valid(f"{pptr}/schema", path[p["name"]], f"path parameter {p['name']}")
            elif p["in"] == "query":
                values = [v for k, v in query if k == p["name"]]
                if not values:
                    assert not p.get("required"), f"query parameter {p['name']} is required"
                    continue
                _, schema = resolve(f"{pptr}/schema")
                if schema.get("type") == "array":
                    assert_valid(f"{pptr}/schema", values, f"query parameter {p['name']}")
                else:
                    assert len(values) == 1
                    value: Any = values[0]
                    if schema.get("type") == "integer":
                        assert re.fullmatch(r"[0-9]+", value), f"{p['name']}={value!r}"
                        value = int(value)
                    assert_valid(f"{pptr}/schema", value, f"query parameter {p['name']}")
        if body is not None and "requestBody" in op:
            assert_valid(f"{op_ptr}/requestBody/content/application~1json/schema", body,
                         f"{method} {template} request body")


# --- a world: one gateway on 127.0.0.1 with desks, officers enrolled over HTTP ------------


@dataclass
class Officer:
    id: str
    desks: list[str]
    signing: OfficerSigningKey
    encryption: OfficerEncryptionKey
    token: str = ""

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


class World:
    def __init__(self, server: Any, http: aiohttp.ClientSession) -> None:
        self.server = server
        self.app = server.app
        self.http = http
        self.url = str(server.make_url("")).rstrip("/")
        self.checker = Checker()
        self.members: dict[str, list[Officer]] = {}  # by desk address: who can admit

    def now(self) -> int:
        now: int = self.app[CLOCK].now_ms()
        return now

    async def call(self, method: str, template: str, *, path: dict[str, str] | None = None,
                   query: list[tuple[str, str]] | None = None, token: Officer | None = None,
                   json_body: Any = None, data: bytes | None = None,
                   headers: dict[str, str] | None = None, expect: int | None = None,
                   code: str | None = None) -> Answer:
        """One request, checked against the spec; ``expect``/``code`` pin the outcome."""
        path = path or {}
        url = self.url + template.format(**{k: quote(v, safe="@") for k, v in path.items()})
        sent = dict(headers or {})
        if token is not None:
            sent.update(token.auth)
        if json_body is not None:
            data = json.dumps(json_body).encode()
            sent.setdefault("Content-Type", "application/json")
        elif data is not None and takes_json(method, template):  # a JSON client's bad body
            sent.setdefault("Content-Type", "application/json")
        async with self.http.request(method, url, params=query, data=data,
                                     headers=sent) as response:
            answer = Answer(response.status, await response.read(), response.headers)
        self.checker.check(method, template, answer)
        if 200 <= answer.status < 300:
            self.checker.check_request(method, template, path, query or [], json_body)
        if expect is not None:
            assert answer.status == expect, (
                f"{method} {template}: {answer.status} {answer.body[:300]!r}, not {expect}")
        if code is not None:
            assert answer.doc["error"] == code, answer.doc
        return answer

    async def refused_method(self, method: str, path: str) -> None:
        """A method a path does not have: 405 with an Error body."""
        async with self.http.request(method, self.url + path) as response:
            assert response.status == 405
            assert_valid("/components/schemas/Error", await response.json(), "405 body")
        self.checker.refused_methods.add(path)

    async def invite(self, *desks: str) -> str:
        code = new_code()
        await self.app[STORE].add_enrollment_code(code_hash(code), list(desks), self.now(),
                                                  self.now() + 3_600_000)
        return code

    async def officer(self, *desks: str) -> Officer:
        signing, encryption = OfficerSigningKey.generate(), OfficerEncryptionKey.generate()
        body = enroll_body(await self.invite(*desks), signing, encryption)
        doc = (await self.call("POST", "/v1/enroll", json_body=body, expect=201)).doc
        assert doc["gateway_key"] == GATEWAY_KEY.public.b64()
        officer = Officer(doc["officer"], doc["desks"], signing, encryption)
        await self.sign_in(officer)
        for desk in doc["desks"]:
            if desk in doc["pending"]:
                await self.admit(self.members[desk][0], officer, desk, expect=201)
            self.members.setdefault(desk, []).append(officer)
        return officer

    def admission_body(self, by: Officer, officer: Officer, desk: str,
                       at: int | None = None) -> dict[str, Any]:
        at = self.now() if at is None else at
        text = admission_text(desk, officer.id, b64(officer.signing.public.raw),
                              b64(officer.encryption.public.raw), by.id, at)
        return {"officer": officer.id, "at": at, "signature": b64(by.signing.sign(text))}

    def shares_body(self, by: Officer, officer: Officer, message_id: str,
                    digest: str) -> dict[str, Any]:
        wrap, at = os.urandom(80), self.now()
        text = share_text(message_id, digest, officer.id, officer.encryption.public.key_id,
                          wrap, by.id, at)
        return {"officer": officer.id, "shares": [
            {"message": message_id, "wrap": b64(wrap), "at": at,
             "signature": b64(by.signing.sign(text))}]}

    async def admit(self, by: Officer, officer: Officer, desk: str, **kw: Any) -> Answer:
        return await self.call("POST", "/v1/desks/{desk}/admissions", path={"desk": desk},
                               token=by, json_body=self.admission_body(by, officer, desk), **kw)

    async def challenge(self, officer: Officer) -> str:
        doc = (await self.call("POST", "/v1/session/challenge",
                               json_body={"officer": officer.id}, expect=200)).doc
        challenge: str = doc["challenge"]
        return challenge

    def session_body(self, officer: Officer, challenge: str) -> dict[str, str]:
        signature = officer.signing.sign(
            session_text(GATEWAY, officer.id, base64.b64decode(challenge)))
        return {"officer": officer.id, "challenge": challenge, "signature": b64(signature)}

    async def sign_in(self, officer: Officer) -> None:
        body = self.session_body(officer, await self.challenge(officer))
        officer.token = (await self.call("POST", "/v1/session", json_body=body,
                                         expect=200)).doc["token"]

    def seal(self, sender: Officer, readers: list[Officer], *, frm: str = "trafficking",
             to: str = "border-liaison", kind: str = "hotline", mid: str | None = None,
             thread: str | None = None, in_reply_to: str | None = None,
             created: int | None = None, lifetime: int = 3_600_000,
             state: str | None = None, due: str | None = None) -> bytes:
        mid = mid or new_message_id()
        created = self.now() if created is None else created
        header = EnvelopeHeader(
            id=mid, kind=kind, priority="flash", sender=address(frm), recipient=address(to),
            created=created, expires=created + lifetime, thread=thread or mid,
            in_reply_to=in_reply_to, state=state, due=due,
        )
        return seal_envelope(header, b'{"type":"hotline","text":"test"}', sender.signing,
                             [r.encryption.public for r in readers])

    async def send(self, sender: Officer, envelope: bytes, *, expect: int | None = None,
                   code: str | None = None, token: Officer | None = None) -> Answer:
        return await self.call("POST", "/v1/messages", token=token or sender, data=envelope,
                               headers={"Content-Type": "application/vnd.fpg.envelope"},
                               expect=expect, code=code)

    def read_body(self, officer: Officer, mid: str, digest: str,
                  read_ms: int | None = None) -> dict[str, Any]:
        read_ms = self.now() if read_ms is None else read_ms
        signature = officer.signing.sign(read_text(mid, digest, read_ms))
        return {"read": read_ms, "signature": b64(signature)}


def address(desk: str) -> str:
    return desk if "@" in desk else f"{desk}@{GATEWAY}"


def gateway_config(directory: Path, **limits: object) -> Any:
    return parse_config(
        {"gateway": {"id": GATEWAY, "public_url": "http://127.0.0.1:1"},
         "keys": {"file": "unused.key"}, "ledger": {"checkpoint_interval": 3600.0},
         "server": {"max_body_bytes": MAX_BODY}, "limits": limits},
        directory / "gw.toml",
    )


@pytest.fixture
async def make_world(tmp_path: Path, aiohttp_server: Any) -> Any:
    """Builds gateways on 127.0.0.1 with three desks; ``limits`` go to ``[limits]``."""
    made: list[World] = []

    async def make(**limits: object) -> World:
        config = gateway_config(tmp_path / f"gw{len(made)}", **limits)
        app = create_app(config, KeyBundle(GATEWAY, {ROLE_GATEWAY_SIGNING: GATEWAY_KEY}))
        server = await aiohttp_server(app)
        for desk, supervisor in (("victim-support", None), ("trafficking", None),
                                 ("border-liaison", "victim-support")):
            await app[STORE].add_desk(desk, supervisor, app[CLOCK].now_ms())
        world = World(server, aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)))
        made.append(world)
        return world

    yield make
    for world in made:
        await world.http.close()


# --- server-sent events ---------------------------------------------------------------------


class EventReader:
    """Reads one ``text/event-stream`` response event by event, checking each."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.comments: list[str] = []
        self.ptr, _ = resolve(pointer("paths", "/v1/stream", "get", "responses", "200",
                                      "content", "text/event-stream", "x-event-schema"))

    async def next(self) -> dict[str, Any] | None:
        """The next event as {"event", "data"}, or None when the stream has ended."""
        kind: str | None = None
        data: list[str] = []
        while True:
            async with asyncio.timeout(5):
                raw = await self.response.content.readline()
            if not raw:
                return None
            line = raw.decode("utf-8").rstrip("\r\n")
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
            elif line.startswith("event: "):
                kind = line[len("event: "):]
            elif line.startswith("data: "):
                data.append(line[len("data: "):])
            elif line == "" and kind is not None:
                event = {"event": kind, "data": json.loads("\n".join(data))}
                assert_valid(self.ptr, event, f"stream event {kind}")
                return event


async def open_stream(world: World, officer: Officer, desks: list[str] | None = None,
                      since: int | None = None) -> aiohttp.ClientResponse:
    query = [("desk", address(d)) for d in desks or []]
    query += [("since", str(since))] if since is not None else []
    response = await world.http.get(
        world.url + "/v1/stream", params=query, headers=officer.auth,
        timeout=aiohttp.ClientTimeout(total=None, sock_read=None))
    answer = Answer(response.status, b"", response.headers)
    if response.status != 200:
        answer.body = await response.read()
        response.release()
    world.checker.check("GET", "/v1/stream", answer)
    if response.status == 200:
        world.checker.check_request("GET", "/v1/stream", {}, query, None)
    return response


# --- the document --------------------------------------------------------------------------


def refers_to(schema: Any, target: str) -> bool:
    """Whether ``schema`` is, or is an allOf including, the component ``target``."""
    if not isinstance(schema, dict):
        return False
    if schema.get("$ref") == target:
        return True
    if "$ref" in schema:
        return refers_to(resolve(schema["$ref"][1:])[1], target)
    return any(refers_to(s, target) for s in schema.get("allOf", []))


def test_document_is_valid_openapi_3_1() -> None:
    doc = spec()
    assert doc["openapi"].startswith("3.1.")
    validate_openapi(doc, cls=OpenAPIV31SpecValidator)
    for name, schema in doc["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)
        assert validator(pointer("components", "schemas", name))  # every $ref resolves
    bearer = doc["components"]["securitySchemes"]["bearer"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")

    tags = {t["name"] for t in doc["tags"]}
    ids = [op["operationId"] for op in operations().values()]
    assert len(ids) == len(set(ids))
    for (method, template), op in operations().items():
        where = f"{method} {template}"
        assert op.get("summary") and op.get("tags") and set(op["tags"]) <= tags, where
        in_path = {p["name"] for _, p in parameters(method, template) if p["in"] == "path"}
        assert set(re.findall(r"{(\w+)}", template)) == in_path, where
        for status in op["responses"]:
            _, response = resolve(pointer("paths", template, method.lower(), "responses",
                                            status))
            assert response.get("description"), (where, status)
            if status[0] in "45":  # every refusal is an Error
                schema = response["content"]["application/json"]["schema"]
                assert refers_to(schema, "#/components/schemas/Error"), (where, status)
        if secured(op):  # signed_in() refuses without a session and rate-limits
            assert {"401", "429"} <= set(op["responses"]), where
        if "requestBody" in op:  # bodies are read with a size limit
            assert "413" in op["responses"], where
    events = resolve(pointer("paths", "/v1/stream", "get", "responses", "200", "content",
                             "text/event-stream", "x-event-schema"))[0]
    assert events == "/components/schemas/StreamEvent"


def test_spec_and_app_have_the_same_routes(tmp_path: Path) -> None:
    bundle = KeyBundle(GATEWAY, {ROLE_GATEWAY_SIGNING: GATEWAY_KEY})
    app = create_app(gateway_config(tmp_path), bundle)
    # The federation channel is for partner gateways, not clients: docs/PROTOCOL.md
    # describes it and tests/test_federation.py drives it.
    routes = {(r.method, r.resource.canonical) for r in app.router.routes()
              if r.resource and not r.resource.canonical.startswith("/v1/federation/")}
    served = {(m, p) for m, p in routes if m != "HEAD"}
    assert {(m, p) for m, p in routes if m == "HEAD"} <= {("HEAD", p) for m, p in served
                                                          if m == "GET"}
    described = set(operations())
    assert served - described == set(), "routes the spec does not describe"
    assert described - served == set(), "operations the app does not serve"


# --- every operation, good and bad ------------------------------------------------------------


async def test_every_operation_answers_as_described(make_world: Any) -> None:
    # Many sign-ins from one address: lift that limit here (it has its own test).
    w: World = await make_world(anonymous_per_second=1000.0, anonymous_burst=10_000)

    # Public routes.
    await w.call("GET", "/healthz", expect=200)
    await w.refused_method("POST", "/healthz")
    await w.call("GET", "/app/", expect=200)  # the web client (make builds it)
    await w.refused_method("POST", "/app/")
    await w.call("GET", "/app/{asset}", path={"asset": "i18n-en.json"}, expect=200)
    await w.call("GET", "/app/{asset}", path={"asset": "app.py"}, expect=404, code="not_found")
    await w.call("GET", "/.well-known/fpg/descriptor", expect=200)
    await w.call("GET", "/.well-known/fpg/descriptor", query=[("gateway", "kh-cnp")],
                 expect=404, code="unknown_gateway")
    await w.refused_method("DELETE", "/.well-known/fpg/descriptor")
    await w.call("GET", "/v1/ledger/checkpoint", expect=404, code="no_checkpoint")
    await w.call("GET", "/v1/ledger/proof/inclusion", query=[("index", "0"), ("size", "1")],
                 expect=400, code="bad_proof_request")

    # Enrollment.
    a = await w.officer("trafficking")
    b1, b2 = await w.officer("border-liaison"), await w.officer("border-liaison")
    c = await w.officer("victim-support")
    code = await w.invite("trafficking")
    a2 = Officer("", [], OfficerSigningKey.generate(), OfficerEncryptionKey.generate())
    good = enroll_body(code, a2.signing, a2.encryption)
    await w.call("POST", "/v1/enroll", data=b"{not json", expect=400, code="bad_json")
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        await w.call("POST", "/v1/enroll", data=json.dumps(good).encode(),  # no preflight
                     headers={"Content-Type": kind}, expect=415, code="unsupported_media_type")
    await w.call("POST", "/v1/enroll", json_body=[good], expect=400, code="bad_json")
    await w.call("POST", "/v1/enroll", json_body={**good, "code": "FPG-1234"}, expect=403,
                 code="enrollment_code_invalid")
    await w.call("POST", "/v1/enroll", json_body={**good, "enc_key": "AAAA"}, expect=400,
                 code="bad_key")
    forged = enroll_body(code, OfficerSigningKey.generate(), OfficerEncryptionKey.generate())
    await w.call("POST", "/v1/enroll", json_body={**good, "signature": forged["signature"]},
                 expect=400, code="bad_signature")
    await w.call("POST", "/v1/enroll", json_body=enroll_body(
        new_code(), OfficerSigningKey.generate(), OfficerEncryptionKey.generate()),
        expect=403, code="enrollment_code_invalid")
    await w.call("POST", "/v1/enroll",
                 json_body=enroll_body(await w.invite("trafficking"), a.signing, a.encryption),
                 expect=409, code="keys_enrolled")
    await w.call("POST", "/v1/enroll", json_body={**good, "pad": "x" * MAX_BODY}, expect=413,
                 code="too_large")
    a2.id = (await w.call("POST", "/v1/enroll", json_body=good, expect=201)).doc["officer"]
    await w.sign_in(a2)
    await w.admit(a, a2, "trafficking@vn-mps", expect=201)
    await w.call("POST", "/v1/enroll", json_body=good, expect=403, code="enrollment_code_invalid")

    # Sessions.
    # Any id gets a challenge (nothing tells which officers exist); signing in fails later.
    await w.call("POST", "/v1/session/challenge", json_body={"officer": "off-0000000000000000"},
                 expect=200)
    await w.call("POST", "/v1/session/challenge", json_body={"officer": 7}, expect=400,
                 code="bad_field")
    await w.call("POST", "/v1/session/challenge", data=b"x" * (MAX_BODY + 1), expect=413)
    body = w.session_body(a, await w.challenge(a))
    await w.call("POST", "/v1/session", json_body={**body, "signature": "%%"}, expect=400,
                 code="bad_field")
    await w.call("POST", "/v1/session", json_body={**body, "officer": b1.id}, expect=401,
                 code="bad_challenge")  # issued to a, and now used up
    body = w.session_body(a, await w.challenge(a))
    await w.call("POST", "/v1/session", json_body={**body, "signature": b64(bytes(64))},
                 expect=401, code="bad_signature")
    body = w.session_body(a, await w.challenge(a))
    await w.call("POST", "/v1/session", json_body=body, expect=200)
    await w.call("POST", "/v1/session", json_body=body, expect=401, code="bad_challenge")
    await w.call("POST", "/v1/session", data=b"{" * (MAX_BODY + 1), expect=413)

    # Desk membership: b2 was admitted by b1 (World.officer); d waits to join.
    members = "/v1/desks/{desk}/members"
    bl = {"desk": "border-liaison@vn-mps"}
    doc = (await w.call("GET", members, path=bl, token=b1, expect=200)).doc
    assert [(m["officer"], m["admitted_by"]) for m in doc["members"]] == [
        (b1.id, "operator"), (b2.id, b1.id)]
    await w.call("GET", members, path=bl, token=a, expect=403, code="not_a_member")
    assert (await w.call("GET", members, path=bl, token=c, expect=200)).doc[
        "supervisor"] == "victim-support@vn-mps"  # c: of the supervisor desk
    await w.call("GET", members, path={"desk": "nowhere@vn-mps"}, token=b1, expect=404,
                 code="unknown_desk")
    d_signing, d_encryption = OfficerSigningKey.generate(), OfficerEncryptionKey.generate()
    d_doc = (await w.call("POST", "/v1/enroll", expect=201, json_body=enroll_body(
        await w.invite("border-liaison"), d_signing, d_encryption))).doc
    assert d_doc["pending"] == ["border-liaison@vn-mps"]
    d = Officer(d_doc["officer"], d_doc["desks"], d_signing, d_encryption)
    await w.sign_in(d)
    doc = (await w.call("GET", members, path=bl, token=b1, expect=200)).doc
    assert [p["officer"] for p in doc["pending"]] == [d.id]
    await w.call("GET", members, path=bl, token=d, expect=403, code="not_a_member")
    admissions = "/v1/desks/{desk}/admissions"
    body = w.admission_body(b1, d, "border-liaison@vn-mps")
    await w.call("POST", admissions, path=bl, token=a, json_body=w.admission_body(
        a, d, "border-liaison@vn-mps"), expect=403, code="not_a_member")
    await w.call("POST", admissions, path=bl, token=b2, json_body=body, expect=400,
                 code="bad_signature")  # b1's signature, sent by b2
    await w.call("POST", admissions, path=bl, token=b1, json_body={**body, "at": body["at"] + 1},
                 expect=400, code="bad_signature")
    await w.call("POST", admissions, path=bl, token=b1, json_body=w.admission_body(
        b1, d, "border-liaison@vn-mps", at=w.now() - 3_600_000), expect=400, code="bad_time")
    await w.call("POST", admissions, path=bl, token=b1, json_body={**body, "officer": a.id},
                 expect=404, code="not_pending")
    await w.call("POST", admissions, path=bl, token=b1, json_body={"officer": d.id},
                 expect=400, code="bad_field")
    await w.call("POST", admissions, path=bl, token=b1, data=b"{" * (MAX_BODY + 1),
                 expect=413)
    await w.call("POST", admissions, path=bl, token=d, json_body=body, expect=403,
                 code="not_a_member")
    # (d stays waiting: the messages below are sealed for b1 and b2 only.)
    notices = "/v1/desks/{desk}/notices"
    doc = (await w.call("GET", notices, path=bl, token=b1, expect=200)).doc
    assert [(n["kind"], n["officer"], n["by"]) for n in doc["notices"]] == [
        ("joined", b1.id, "operator"), ("pending", b2.id, None), ("joined", b2.id, b1.id),
        ("pending", d.id, None)]
    after = doc["notices"][1]["cursor"]
    doc = (await w.call("GET", notices, path=bl, query=[("after", str(after))], token=c,
                        expect=200)).doc
    assert [n["kind"] for n in doc["notices"]] == ["joined", "pending"]
    await w.call("GET", notices, path=bl, token=a, expect=403, code="not_a_member")
    await w.call("GET", notices, path={"desk": "nowhere@vn-mps"}, token=b1, expect=404,
                 code="unknown_desk")
    await w.call("GET", notices, path=bl, query=[("after", "x")], token=b1, expect=400,
                 code="bad_parameter")
    # b1's unread notices: d waits (b1's own join is no news to it, nor b2's pending
    # and join from before... no: made after b1's binding began, so counted).
    doc = (await w.call("GET", notices, path=bl, query=[("unread", "1")], token=b1,
                        expect=200)).doc
    unread = [n["cursor"] for n in doc["notices"]]
    assert doc["unread"] == len(unread) and all(n["read"] is None for n in doc["notices"])
    assert b1.id not in [n["officer"] for n in doc["notices"]]
    await w.call("GET", notices, path=bl, query=[("unread", "2")], token=b1, expect=400,
                 code="bad_parameter")
    one = "/v1/desks/{desk}/notices/{cursor}"
    got = (await w.call("GET", one, path={**bl, "cursor": str(unread[0])}, token=b1,
                        expect=200)).doc
    assert got["cursor"] == unread[0] and got["read"] is not None
    await w.call("GET", one, path={**bl, "cursor": "999999"}, token=b1, expect=404,
                 code="unknown_notice")
    await w.call("GET", one, path={**bl, "cursor": "0"}, token=b1, expect=400,
                 code="bad_parameter")
    await w.call("GET", one, path={**bl, "cursor": str(unread[0])}, token=a, expect=403,
                 code="not_a_member")
    await w.call("GET", one, path={"desk": "nowhere@vn-mps", "cursor": "1"}, token=b1,
                 expect=404, code="unknown_desk")
    mark = "/v1/desks/{desk}/notices/read"
    doc = (await w.call("POST", mark, path=bl, token=b1, json_body={"cursors": unread},
                        expect=200)).doc
    assert (doc["marked"], doc["unread"]) == (len(unread) - 1, 0)
    for bad in ({"cursors": []}, {"cursors": [0]}, {"cursors": [True]}, {"cursors": "1"},
                {"cursors": list(range(1, 502))}):
        await w.call("POST", mark, path=bl, token=b1, json_body=bad, expect=400,
                     code="bad_field")
    await w.call("POST", mark, path=bl, token=a, json_body={"cursors": [1]}, expect=403,
                 code="not_a_member")
    await w.call("POST", mark, path={"desk": "nowhere@vn-mps"}, token=b1,
                 json_body={"cursors": [1]}, expect=404, code="unknown_desk")
    await w.call("POST", mark, path=bl, token=b1, data=b"{" * (MAX_BODY + 1), expect=413)

    # Membership proofs: b1 and b2 proven by the ledger, from the size a client knows.
    proofs = "/v1/desks/{desk}/proofs"
    doc = (await w.call("GET", proofs, path=bl, token=a, expect=200)).doc
    assert sorted(m["officer"] for m in doc["members"]) == sorted([b1.id, b2.id])
    size = int(doc["checkpoint"].split("\n")[1])
    doc = (await w.call("GET", proofs, path=bl, query=[("known", "1")], token=a,
                        expect=200)).doc
    assert (doc["known"], len(doc["consistency"]) > 0) == (1, size > 1)
    await w.call("GET", proofs, path={"desk": "nowhere@vn-mps"}, token=a, expect=404,
                 code="unknown_desk")
    await w.call("GET", proofs, path={"desk": "nowhere@kh-cnp"}, token=a, expect=404,
                 code="unknown_gateway")
    await w.call("GET", proofs, path=bl, query=[("known", "x")], token=a, expect=400,
                 code="bad_parameter")

    # Directory.
    note = (await w.call("GET", "/v1/directory", token=a, expect=200)).body
    assert note.startswith(b"fpg directory v1\n")
    await w.call("GET", "/v1/directory", expect=401, code="no_session")

    # Sending.
    env = w.seal(a, [b1, b2])
    mid = (await w.send(a, env, expect=201)).doc["id"]
    assert (await w.send(a, env, expect=200)).doc == {"id": mid, "status": "duplicate",
                                                      "ledger": []}
    await w.send(a, w.seal(a, [b1]), expect=409, code="recipients_mismatch")
    await w.send(a, w.seal(a, [b1, b2], mid=mid), expect=409, code="id_conflict")
    await w.send(a, b"FPGE" + os.urandom(200), expect=400, code="malformed")
    await w.send(a, w.seal(a, [b1, b2], created=w.now() - 7_200_000), expect=400,
                 code="expired")
    await w.send(a, w.seal(a, [b1, b2], created=w.now() + 3_600_000), expect=400,
                 code="bad_time")
    await w.send(a, w.seal(a, [b1, b2], kind="reply", in_reply_to=new_message_id()),
                 expect=400, code="bad_reply")
    await w.send(a, w.seal(a, [c], to="nowhere"), expect=404, code="unknown_desk")
    await w.send(a, w.seal(a, [c], to="desk@kh-cnp"), expect=404, code="unknown_gateway")
    await w.send(a, w.seal(a, [c], frm="victim-support", to="victim-support"), expect=403,
                 code="not_a_member")
    await w.send(a, w.seal(a, [b1, b2]), token=b1, expect=403, code="signer_mismatch")
    await w.send(a, b"\0" * (MAX_BODY + 1), expect=413, code="too_large")
    await w.call("POST", "/v1/messages", data=env, expect=401, code="no_session")

    # History shares: b1 passes mid's key on to b2 (the gateway cannot tell it is b2's
    # already); b2 gets it back, b1 has none.
    digest = hashlib.sha256(env).hexdigest()
    shares = "/v1/desks/{desk}/shares"
    body = w.shares_body(b1, b2, mid, digest)
    await w.call("POST", shares, path=bl, token=a, json_body=w.shares_body(a, b2, mid, digest),
                 expect=403, code="not_a_member")
    await w.call("POST", shares, path=bl, token=b1, json_body={**body, "officer": d.id},
                 expect=404, code="not_a_member_of_desk")
    await w.call("POST", shares, path=bl, token=b1,
                 json_body=w.shares_body(b1, b2, mid, "0" * 64), expect=400,
                 code="bad_signature")
    await w.call("POST", shares, path=bl, token=b1, json_body={**body, "shares": []},
                 expect=400, code="bad_field")
    await w.call("POST", shares, path=bl, token=b1, data=b"{" * (MAX_BODY + 1), expect=413)
    await w.call("POST", shares, path=bl, token=b1, json_body=body, expect=201)
    share = "/v1/messages/{id}/share"
    got = (await w.call("GET", share, path={"id": mid}, token=b2, expect=200)).doc
    assert (got["message"], got["by"]) == (mid, b1.id)
    await w.call("GET", share, path={"id": mid}, token=b1, expect=404, code="no_share")
    await w.call("GET", share, path={"id": mid}, token=c, expect=404, code="unknown_message")

    # Requests: a case opens one; a status moves it, by the right desk, one step at a time.
    case_id = (await w.send(a, w.seal(a, [b1, b2], kind="case", due="2030-01-31"),
                            expect=201)).doc["id"]
    await w.send(a, w.seal(a, [b1, b2], kind="status", thread=case_id, in_reply_to=case_id,
                           state="received"), expect=403, code="not_your_move")
    await w.send(a, w.seal(a, [b1, b2], kind="status", thread=case_id, in_reply_to=case_id,
                           state="resubmitted"), expect=409, code="invalid_move")
    await w.send(a, w.seal(a, [b1, b2], kind="status", thread=mid, in_reply_to=mid,
                           state="withdrawn"), expect=409, code="not_a_case")
    listed = (await w.call("GET", "/v1/cases", token=a, expect=200)).doc["cases"]
    assert [(x["id"], x["state"], x["due"], x["role"]) for x in listed] == [
        (case_id, "submitted", "2030-01-31", "requester")]
    assert (await w.call("GET", "/v1/cases", token=b1, query=[("overdue", "1")],
                         expect=200)).doc == {"cases": []}
    await w.call("GET", "/v1/cases", token=a, query=[("state", "done")], expect=400,
                 code="bad_parameter")
    await w.call("GET", "/v1/cases", token=a, query=[("overdue", "yes")], expect=400,
                 code="bad_parameter")
    await w.call("GET", "/v1/cases", expect=401, code="no_session")
    one = (await w.call("GET", "/v1/cases/{id}", path={"id": case_id}, token=b2,
                        expect=200)).doc
    assert (one["role"], one["executor"]) == ("executor", address("border-liaison"))
    await w.call("GET", "/v1/cases/{id}", path={"id": case_id}, token=c, expect=404,
                 code="unknown_case")
    await w.call("GET", "/v1/cases/{id}", path={"id": mid}, token=a, expect=404,
                 code="unknown_case")

    # Inbox.
    page = (await w.call("GET", "/v1/desks/{desk}/inbox", path={"desk": "border-liaison@vn-mps"},
                         token=b1, expect=200)).doc
    assert [m["id"] for m in page["messages"]] == [mid, case_id] and page["next"] is None
    page = (await w.call("GET", "/v1/desks/{desk}/inbox", path={"desk": "border-liaison@vn-mps"},
                         query=[("after", "0"), ("limit", "1")], token=b2, expect=200)).doc
    assert page["next"] == page["messages"][0]["cursor"]
    await w.call("GET", "/v1/desks/{desk}/inbox", path={"desk": "border-liaison@vn-mps"},
                 query=[("after", str(page["next"]))], token=b2, expect=200)
    await w.call("GET", "/v1/desks/{desk}/inbox", path={"desk": "border-liaison@vn-mps"},
                 token=a, expect=403, code="not_a_member")
    await w.call("GET", "/v1/desks/{desk}/inbox", path={"desk": "nowhere@vn-mps"}, token=a,
                 expect=404, code="unknown_desk")
    await w.call("GET", "/v1/desks/{desk}/inbox", path={"desk": "trafficking"}, token=a,
                 expect=404, code="unknown_desk")
    await w.call("GET", "/v1/desks/{desk}/inbox", path={"desk": "trafficking@vn-mps"},
                 query=[("after", "-1")], token=a, expect=400, code="bad_parameter")

    # Sent: only the caller's own messages, with their status.
    sent = (await w.call("GET", "/v1/sent", token=a, expect=200)).doc
    assert [(m["id"], m["status"]) for m in sent["messages"]] == [(mid, "delivered"),
                                                                  (case_id, "delivered")]
    assert sent["next"] is None
    assert (await w.call("GET", "/v1/sent", token=b1, expect=200)).doc["messages"] == []
    await w.call("GET", "/v1/sent", query=[("limit", "101")], token=a, expect=400,
                 code="bad_parameter")
    await w.call("GET", "/v1/sent", expect=401, code="no_session")

    # One message: envelope, status, read acknowledgements.
    got = await w.call("GET", "/v1/messages/{id}", path={"id": mid}, token=b1, expect=200)
    assert got.body == env and got.headers["X-FPG-Digest"] == hashlib.sha256(env).hexdigest()
    await w.call("GET", "/v1/messages/{id}", path={"id": mid}, token=a, expect=200)
    await w.call("GET", "/v1/messages/{id}", path={"id": mid}, token=c, expect=404,
                 code="unknown_message")
    await w.call("GET", "/v1/messages/{id}", path={"id": "not-an-id"}, token=c, expect=404)
    digest = got.headers["X-FPG-Digest"]
    read = "/v1/messages/{id}/read"
    assert (await w.call("POST", read, path={"id": mid}, token=b1,
                         json_body=w.read_body(b1, mid, digest), expect=200)
            ).doc == {"id": mid, "status": "recorded"}
    assert (await w.call("POST", read, path={"id": mid}, token=b1,
                         json_body=w.read_body(b1, mid, digest), expect=200)
            ).doc["status"] == "duplicate"
    await w.call("POST", read, path={"id": mid}, token=a, json_body=w.read_body(a, mid, digest),
                 expect=403, code="not_a_member")
    await w.call("POST", read, path={"id": mid}, token=c, json_body=w.read_body(c, mid, digest),
                 expect=404, code="unknown_message")
    await w.call("POST", read, path={"id": mid}, token=b2,
                 json_body=w.read_body(b1, mid, digest), expect=400, code="bad_signature")
    await w.call("POST", read, path={"id": mid}, token=b2,
                 json_body=w.read_body(b2, mid, digest, read_ms=1), expect=400, code="bad_time")
    await w.call("POST", read, path={"id": mid}, token=b2, data=b"[]", expect=400,
                 code="bad_json")
    await w.call("POST", read, path={"id": mid}, token=b2, data=b" " * (MAX_BODY + 1),
                 expect=413)

    # Live stream: a read event for the sending desk; a desk the officer is not in.
    stream = await open_stream(w, a, ["trafficking"])
    events = EventReader(stream)
    await asyncio.sleep(0.05)
    await w.call("POST", read, path={"id": mid}, token=b2,
                 json_body=w.read_body(b2, mid, digest), expect=200)
    event = await events.next()
    assert event == {"event": "read", "data": {"desk": "trafficking@vn-mps", "id": mid,
                                               "officer": b2.id, "read": event["data"]["read"]}}
    assert events.comments[0] == "connected"
    stream.close()
    (await open_stream(w, c, ["trafficking"])).release()
    assert 403 in w.checker.seen[("GET", "/v1/stream")]

    # A reply, then the status of the answered message.
    reply = w.seal(b1, [a, a2], frm="border-liaison", to="trafficking", kind="reply",
                   in_reply_to=mid, thread=mid)
    assert len((await w.send(b1, reply, token=b1, expect=201)).doc["ledger"]) == 3
    status = (await w.call("GET", "/v1/messages/{id}/status", path={"id": mid}, token=a,
                           expect=200)).doc
    assert [e["type"] for e in status["events"]] == ["accepted", "delivered", "read", "read",
                                                      "replied"]
    # c, of the supervisor desk of border-liaison, sees the status; an unknown id is 404.
    await w.call("GET", "/v1/messages/{id}/status", path={"id": mid}, token=c, expect=200)
    await w.call("GET", "/v1/messages/{id}/status", path={"id": "0" * 32}, token=c,
                 expect=404, code="unknown_message")

    # The ledger, now that it has entries and a checkpoint.
    checkpoint = await w.app[LEDGER].make_checkpoint()
    size = str(checkpoint.size)
    assert (await w.call("GET", "/v1/ledger/checkpoint", expect=200)).body == checkpoint.note
    await w.call("GET", "/v1/ledger/proof/inclusion", query=[("index", "3"), ("size", size)],
                 expect=200)
    await w.call("GET", "/v1/ledger/proof/inclusion", query=[("index", size), ("size", size)],
                 expect=400, code="bad_proof_request")
    await w.call("GET", "/v1/ledger/proof/inclusion", query=[("size", size)], expect=400,
                 code="bad_parameter")
    await w.call("GET", "/v1/ledger/proof/consistency", query=[("old", "2"), ("new", size)],
                 expect=200)
    await w.call("GET", "/v1/ledger/proof/consistency", query=[("old", "0"), ("new", "0")],
                 expect=200)
    await w.call("GET", "/v1/ledger/proof/consistency", query=[("old", size), ("new", "2")],
                 expect=400, code="bad_proof_request")
    await w.call("GET", "/v1/ledger/proof/consistency", query=[("old", "x"), ("new", size)],
                 expect=400, code="bad_parameter")

    # Every operation was seen answering well and refusing (or refusing a method).
    for key, op in operations().items():
        statuses = w.checker.seen[key]
        assert any(200 <= s < 300 for s in statuses), f"{key} never succeeded"
        if any(s.startswith("4") for s in op["responses"]):
            assert any(400 <= s < 500 for s in statuses), f"{key} never refused"
        else:
            assert key[1] in w.checker.refused_methods, f"{key}: no bad request tried"


def takes_json(method: str, template: str) -> bool:
    """Whether the operation's request body is JSON."""
    body = operations().get((method, template), {}).get("requestBody", {})
    return "application/json" in body.get("content", {})


def secured_operations() -> list[tuple[str, str, dict[str, str]]]:
    """(method, template, path parameters) of every operation that needs a session."""
    fill = {"id": new_message_id(), "desk": "trafficking@vn-mps", "cursor": "1"}
    return [(method, template, {name: fill[name] for name in re.findall(r"{(\w+)}", template)})
            for (method, template), op in operations().items() if secured(op)]


async def test_secured_operations_need_a_session(make_world: Any) -> None:
    w: World = await make_world()
    a = await w.officer("trafficking")
    assert secured_operations()
    for method, template, path in secured_operations():
        for headers in ({}, {"Authorization": "Bearer " + "A" * 43},
                        {"Authorization": f"Basic {a.token}"}, {"Authorization": "Bearer "}):
            await w.call(method, template, path=path, headers=headers, data=b"{}", expect=401,
                         code="no_session")
    revoked = await w.officer("border-liaison")
    await w.app[STORE].revoke_officer(revoked.id, w.now())
    await w.app[DIRECTORY].reload()
    for method, template, path in secured_operations():
        answer = await w.call(method, template, path=path, token=revoked, data=b"{}",
                              expect=401)
        assert answer.doc["error"] in ("revoked", "no_session")  # revocation ends sessions


async def test_rate_limits_are_described(make_world: Any, monkeypatch: Any) -> None:
    w: World = await make_world(requests_per_second=0.1, burst=1)
    a = await w.officer("trafficking")
    await w.call("GET", "/v1/directory", token=a, expect=200)  # the one request in the bucket
    for method, template, path in secured_operations():
        await w.call(method, template, path=path, token=a, data=b"{}", expect=429,
                     code="rate_limited")

    # Routes without a token are limited per client address: sign-in per address and
    # claimed officer (a challenge and a sign-in take two) ...
    w1: World = await make_world(anonymous_per_second=0.1, anonymous_burst=2)
    c = await w1.officer("trafficking")
    await w1.call("POST", "/v1/session/challenge", json_body={"officer": c.id}, expect=429,
                  code="rate_limited")
    await w1.call("POST", "/v1/session", json_body=w1.session_body(c, b64(bytes(32))),
                  expect=429, code="rate_limited")
    # ... and per address in total, whatever officer id is claimed ...
    w2: World = await make_world(signin_address_per_second=0.1, signin_address_burst=1)
    for n, expect in ((0, 200), (1, 429)):
        await w2.call("POST", "/v1/session/challenge", json_body={"officer": f"off-{n:016x}"},
                      expect=expect)
    # ... sign-ins that proved an officer's key per officer, and sessions in memory.
    w3: World = await make_world(signin_officer_per_second=0.001, signin_officer_burst=1)
    b = await w3.officer("trafficking")
    await w3.call("POST", "/v1/session", json_body=w3.session_body(b, await w3.challenge(b)),
                  expect=429, code="rate_limited")
    w4: World = await make_world()
    d = await w4.officer("trafficking")
    monkeypatch.setattr(sessions, "MAX_SESSIONS", 1)
    await w4.call("POST", "/v1/session", json_body=w4.session_body(d, await w4.challenge(d)),
                  expect=429, code="rate_limited")


async def test_required_request_fields_are_required(make_world: Any) -> None:
    w: World = await make_world()
    a = await w.officer("trafficking")
    good = {
        "enroll": enroll_body(await w.invite("trafficking"), OfficerSigningKey.generate(),
                              OfficerEncryptionKey.generate()),
        "createChallenge": {"officer": a.id},
        "createSession": w.session_body(a, await w.challenge(a)),
        "acknowledgeRead": w.read_body(a, new_message_id(), "0" * 64),
        "admit": w.admission_body(a, a, "trafficking@vn-mps"),
        "shareHistory": w.shares_body(a, a, new_message_id(), "0" * 64),
        "markNoticesRead": {"cursors": [1]},
    }
    with_json = {op["operationId"]: key for key, op in operations().items()
                 if "application/json" in op.get("requestBody", {}).get("content", {})}
    assert set(with_json) == set(good), "a JSON body to cover here"
    for op_id, (method, template) in with_json.items():
        body_ptr = pointer("paths", template, method.lower(), "requestBody", "content",
                           "application/json", "schema")
        _, schema = resolve(body_ptr)
        assert is_valid(body_ptr, good[op_id]), op_id
        path = ({"id": new_message_id()} if "{id}" in template else
                {"desk": "trafficking@vn-mps"} if "{desk}" in template else {})
        for name in schema["required"]:
            missing = {k: v for k, v in good[op_id].items() if k != name}
            wrong = {**good[op_id], name: [good[op_id][name]]}
            for body in (missing, wrong):
                assert not is_valid(body_ptr, body)
                await w.call(method, template, path=path, json_body=body, token=a, expect=400,
                             code="bad_field")


@pytest.mark.parametrize(("template", "query", "expect"), [
    ("/v1/desks/{desk}/inbox", [("after", str(MAX_QUERY_INT))], 200),
    ("/v1/desks/{desk}/inbox", [("after", str(MAX_QUERY_INT + 1))], 400),
    ("/v1/desks/{desk}/inbox", [("after", "+1")], 400),
    ("/v1/desks/{desk}/inbox", [("after", "")], 400),
    ("/v1/desks/{desk}/inbox", [("limit", "0")], 200),
    ("/v1/desks/{desk}/inbox", [("limit", "100")], 200),
    ("/v1/desks/{desk}/inbox", [("limit", "101")], 400),  # above the configured page size
    ("/v1/desks/{desk}/inbox", [("limit", "1.5")], 400),
    ("/v1/ledger/proof/inclusion", [("index", "0")], 400),
    ("/v1/ledger/proof/inclusion", [("index", "0"), ("size", str(MAX_QUERY_INT))], 400),
    ("/v1/ledger/proof/inclusion", [("index", "0"), ("size", str(MAX_QUERY_INT + 1))], 400),
    ("/v1/ledger/proof/consistency", [("old", "0"), ("new", "0")], 200),
    ("/v1/ledger/proof/consistency", [("old", " 0"), ("new", "0")], 400),
    ("/v1/ledger/proof/consistency", [("old", "0"), ("new", str(MAX_QUERY_INT))], 400),
    ("/v1/desks/{desk}/proofs", [("known", str(MAX_QUERY_INT))], 200),
    ("/v1/desks/{desk}/proofs", [("known", str(MAX_QUERY_INT + 1))], 400),
])
async def test_query_parameter_limits(make_world: Any, template: str,
                                      query: list[tuple[str, str]], expect: int) -> None:
    w: World = await make_world()
    a = await w.officer("trafficking")
    path = {"desk": "trafficking@vn-mps"} if "{desk}" in template else {}
    token = a if secured(operations()[("GET", template)]) else None
    await w.call("GET", template, path=path, query=query, token=token, expect=expect)


MALFORMED = ["", "-1", "+1", "1.0", "1e3", " 1", "0x1", "9" * 19, "abc", "\x00", "desk@"]


async def test_malformed_query_values_are_refused_as_described(make_world: Any) -> None:
    """Every query parameter of the spec, given values that are valid for none of them."""
    w: World = await make_world()
    a = await w.officer("trafficking")
    tried = 0
    for method, template in operations():
        path = {"desk": "trafficking@vn-mps"} if "{desk}" in template else {}
        names = [p["name"] for _, p in parameters(method, template) if p["in"] == "query"]
        for name in names:
            # the other parameters well-formed, so the refusal is about this one
            base = [(other, "0") for other in names if other != name and other != "desk"]
            for value in MALFORMED:
                answer = await w.call(method, template, path=path, token=a,
                                      query=[*base, (name, value)])
                assert 400 <= answer.status < 500, (name, value, answer.status)
                tried += 1
    assert tried >= 5 * len(MALFORMED)


@pytest.mark.parametrize(("template", "query"), [
    ("/v1/desks/{desk}/inbox", [("after", "\u00b2")]),
    ("/v1/desks/{desk}/inbox", [("limit", "\uff11")]),
    ("/v1/ledger/proof/inclusion", [("index", "\u00b2"), ("size", "1")]),
    ("/v1/ledger/proof/consistency", [("old", "0"), ("new", "\uff10")]),
])
async def test_non_ascii_digits_are_refused_as_described(make_world: Any, template: str,
                                                         query: list[tuple[str, str]]) -> None:
    w: World = await make_world()
    a = await w.officer("trafficking")
    path = {"desk": "trafficking@vn-mps"} if "{desk}" in template else {}
    await w.call("GET", template, path=path, query=query, token=a, expect=400,
                 code="bad_parameter")


async def test_stream_events_are_described(make_world: Any) -> None:
    w: World = await make_world(stream_queue=10)
    a, b = await w.officer("trafficking"), await w.officer("border-liaison")
    a_events = EventReader(await open_stream(w, a))  # all of a's desks
    b_events = EventReader(await open_stream(w, b, ["border-liaison", "border-liaison"]))
    await asyncio.sleep(0.05)

    env = w.seal(a, [b])
    mid = (await w.send(a, env, expect=201)).doc["id"]
    assert (await b_events.next())["event"] == "message"
    await w.call("POST", "/v1/messages/{id}/read", path={"id": mid}, token=b,
                 json_body=w.read_body(b, mid, hashlib.sha256(env).hexdigest()), expect=200)
    assert (await a_events.next())["event"] == "read"
    reply = w.seal(b, [a], frm="border-liaison", to="trafficking", kind="reply",
                   in_reply_to=mid, thread=mid)
    rid = (await w.send(b, reply, expect=201)).doc["id"]
    got = [await a_events.next(), await a_events.next()]
    assert {e["event"] for e in got} == {"message", "reply"}
    assert {"event": "reply", "data": {"desk": "trafficking@vn-mps", "id": mid, "reply": rid,
                                       "sender": "border-liaison@vn-mps"}} in got

    # An unread flash past its service level: the desk is told, its supervisor desk gets
    # the signed notice (a level of one second, checked an hour later by the clock).
    boss = await w.officer("victim-support")
    boss_events = EventReader(await open_stream(w, boss))
    await asyncio.sleep(0.05)
    late = (await w.send(a, w.seal(a, [b]), expect=201)).doc["id"]
    assert (await b_events.next())["event"] == "message"
    real = w.app[SERVICE_LEVELS]
    later = ManualClock(real.clock.now_ms() + 3_600_000)
    level = ServiceLevelSection("flash", "read", 1.0, escalate=True)
    checker = ServiceLevels((level,), real.store, real.directory, real.stages, real.metrics,
                            later, real.key, real.gateway, 1.0)
    checker.feed = real.feed
    assert [b.message_id for b in await checker.check()] == [late]
    breach = await b_events.next()
    assert breach is not None and breach["event"] == "breach"
    assert breach["data"]["id"] == late and breach["data"]["stage"] == "read"
    escalation = await boss_events.next()
    assert escalation is not None and escalation["event"] == "escalation"
    assert escalation["data"]["late_desk"] == "border-liaison@vn-mps"
    assert escalation["data"]["desk"] == "victim-support@vn-mps"
    # Opened later with a cursor, a stream replays the stored notice as it was sent.
    replay = EventReader(await open_stream(w, boss, since=escalation["data"]["cursor"] - 1))
    assert await replay.next() == escalation

    # A stream that falls behind is cut with resync; stopping the gateway ends the others.
    for _ in range(20):
        w.app[HUB].publish(Notification("trafficking@vn-mps", "message", {
            "id": mid, "kind": "hotline", "priority": "flash", "sender": "trafficking@vn-mps",
            "thread": mid, "in_reply_to": None}))
    kinds = []
    while (event := await a_events.next()) is not None:
        kinds.append(event["event"])
    assert kinds[-1] == "resync" and set(kinds[:-1]) == {"message"}
    # A revoked officer's stream ends, saying why.
    c = await w.officer("border-liaison")
    c_events = EventReader(await open_stream(w, c))
    await asyncio.sleep(0.05)
    await w.app[STORE].revoke_officer(c.id, w.now())
    await w.app[DIRECTORY].reload()
    left = await c_events.next()  # the desk is told first, c among its members
    assert left is not None and left["event"] == "membership"
    assert (left["data"]["kind"], left["data"]["officer"]) == ("left", c.id)
    assert (await c_events.next()) == {"event": "ended",
                                       "data": {"desk": "", "reason": "revoked"}}
    assert await c_events.next() is None

    told = [await b_events.next() for _ in range(3)]  # b's desk heard of c throughout
    assert [(e["event"], e["data"]["kind"]) for e in told if e] == [
        ("membership", "pending"), ("membership", "joined"), ("membership", "left")]
    w.app[HUB].close_all()
    assert (await b_events.next()) == {"event": "shutdown", "data": {"desk": ""}}
    assert await b_events.next() is None

    # The kinds the spec names are the kinds the gateway sends.
    _, schema = resolve("/components/schemas/StreamEvent")
    named = set()
    for choice in schema["oneOf"]:
        event = resolve(choice["$ref"][1:])[1]["properties"]["event"]
        named |= {event["const"]} if "const" in event else set(event["enum"])
    assert named == {"message", "read", "reply", "receipt", "expired", "breach", "escalation",
                     "resync", "shutdown", "ended", "membership", "rejected", "truncated"}

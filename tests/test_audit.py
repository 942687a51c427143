"""The audit trail: a line for every invitation, enrollment, sign-in, revocation and live
stream, refused ones included, and never a secret in it.

One real gateway process on 127.0.0.1 (6-second sessions, JSON log lines in its log file)
and the operator's commands as processes of their own, as in production, play one
scenario (the module fixture): invitations, three enrollments and four refused ones, sign-ins
and refused sign-ins, four streams that end for four reasons, a revocation, a message
with a distinctive plaintext, and a stop. Each test then reads the lines of one kind of
event, by count and field; the canary test looks for every code, token, challenge,
private key and the plaintext in everything the processes logged. A stream cut for
falling behind (resync), an expired challenge and a stream whose handler is cancelled
need a full queue, a minute to pass and a server that cancels handlers: those run against
a gateway in this process (aiohttp's test server) with a manual clock.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog

from gateway.app import create_app
from gateway.appkeys import CLOCK, HUB, STORE
from gateway.cli.process import ServerProcess
from gateway.client.api import ApiError, GatewayClient, enroll
from gateway.clock import ManualClock
from gateway.config import parse_config
from gateway.crypto.keyfile import KeyBundle
from gateway.crypto.keys import ROLE_GATEWAY_SIGNING, OfficerEncryptionKey, OfficerSigningKey
from gateway.logs import configure_logging
from gateway.officers.enrollment import new_code
from gateway.protocol.officers import code_hash, enroll_text, session_text
from gateway.store import Notification
from tests.helpers import (
    GATEWAY_KEY,
    Stream,
    gateway,
)

GATEWAY_ID = "vn-mps"
CLIENT = "127.0.0.1"
PLAINTEXT = "AUDIT-CANARY Nạn nhân ở cửa khẩu Mộc Bài, xe biển số 70B-31337"
UNKNOWN_OFFICER = "off-0123456789abcdef"


def prefix(code: str) -> str:
    return hashlib.sha256(code.encode("ascii")).hexdigest()[:12]


def audit_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and str(doc.get("event", "")).startswith("audit_"):
            lines.append(doc)
    return lines


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


# --- the scenario, against a real gateway process --------------------------------------


@dataclass
class Run:
    """What the scenario did and what every process logged."""

    gateway_log: str = ""
    commands: list[subprocess.CompletedProcess[str]] = field(default_factory=list)
    codes: dict[str, str] = field(default_factory=dict)  # by purpose
    officers: dict[str, str] = field(default_factory=dict)  # a, b, c -> officer id
    secrets: dict[str, str] = field(default_factory=dict)  # what no log may hold
    read_back: str = ""  # the plaintext as officer b opened it

    def cli_log(self) -> str:
        return "".join(result.stderr for result in self.commands)

    def gateway_events(self, event: str) -> list[dict[str, Any]]:
        return [line for line in audit_lines(self.gateway_log) if line["event"] == event]

    def cli_events(self, event: str) -> list[dict[str, Any]]:
        return [line for line in audit_lines(self.cli_log()) if line["event"] == event]


class Operator:
    def __init__(self, run: Run, cfg: Path) -> None:
        self.run, self.cfg = run, cfg

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = gateway(*args, "--config", str(self.cfg))
        assert result.returncode == 0, result.stderr
        self.run.commands.append(result)
        return result

    async def invite(self, purpose: str, desk: str, *hours: str) -> str:
        result = await asyncio.to_thread(self, "officers", "invite", "--desk", desk, *hours)
        self.run.codes[purpose] = code = result.stdout.strip()
        return code


async def post(http: aiohttp.ClientSession, url: str, path: str,
               doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with http.post(url + path, json=doc) as response:
        return response.status, await response.json()


async def challenge(http: aiohttp.ClientSession, url: str, officer: str) -> bytes:
    status, answer = await post(http, url, "/v1/session/challenge", {"officer": officer})
    assert status == 200, answer
    return base64.b64decode(answer["challenge"])


async def sign_in(http: aiohttp.ClientSession, url: str, officer: str, key: OfficerSigningKey,
                  nonce: bytes) -> tuple[int, dict[str, Any]]:
    signature = key.sign(session_text(GATEWAY_ID, officer, nonce))
    return await post(http, url, "/v1/session", {
        "officer": officer, "challenge": b64(nonce), "signature": b64(signature)})


def enroll_doc(code: str, signing: OfficerSigningKey, encryption: OfficerEncryptionKey,
               prover: OfficerSigningKey | None = None) -> dict[str, str]:
    sign_b64, enc_b64 = signing.public.b64(), encryption.public.b64()
    proof = (prover or signing).sign(enroll_text(GATEWAY_ID, code, sign_b64, enc_b64))
    return {"code": code, "sign_key": sign_b64, "enc_key": enc_b64, "signature": b64(proof)}


async def until_logged(server: ServerProcess, what: Callable[[str], bool], name: str,
                       seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not what(server.output()):
        assert time.monotonic() < deadline, f"the gateway did not log {name}"
        await asyncio.sleep(0.05)


def closed(officer: str, reason: str) -> Callable[[str], bool]:
    return lambda text: any(line["event"] == "audit_stream_closed" and line["officer"] == officer
                            and line["reason"] == reason for line in audit_lines(text))


async def scenario(run: Run, server: ServerProcess, operator: Operator,
                   fingerprint: str) -> None:
    url = server.url
    keys = {name: (OfficerSigningKey.generate(), OfficerEncryptionKey.generate())
            for name in ("a", "b", "c", "used", "forger", "prover", "expired")}
    for name, (signing, encryption) in keys.items():
        run.secrets[f"{name} signing key (hex)"] = signing.seed.hex()
        run.secrets[f"{name} signing key (base64)"] = b64(signing.seed)
        run.secrets[f"{name} encryption key (hex)"] = encryption.seed.hex()
        run.secrets[f"{name} encryption key (base64)"] = b64(encryption.seed)
    run.secrets["plaintext"] = PLAINTEXT

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        # Invitations, and enrollments with them.
        codes = {"a": await operator.invite("a", "trafficking"),
                 "b": await operator.invite("b", "border-liaison"),
                 "c": await operator.invite("c", "border-liaison")}
        forged = await operator.invite("forged", "border-liaison")
        expired = await operator.invite("expired", "border-liaison", "--hours", "0.0001")
        clients = {}
        for name, code in codes.items():
            creds, _ = await enroll(http, url, code, *keys[name], fingerprint=fingerprint)
            clients[name] = GatewayClient(http, creds)
            run.officers[name] = creds.officer_id
        a, b, c = clients["a"], clients["b"], clients["c"]

        # Refused enrollments: a used code, one that is no code, a forged proof, an expired one.
        await asyncio.sleep(0.5)  # past the last code's 0.36 s
        for doc, status, error in (
            (enroll_doc(codes["a"], *keys["used"]), 403, "enrollment_code_invalid"),
            (enroll_doc("FPG-NOT-A-CODE", *keys["used"]), 403, "enrollment_code_invalid"),
            (enroll_doc(forged, *keys["forger"], prover=keys["prover"][0]), 400,
             "bad_signature"),
            (enroll_doc(expired, *keys["expired"]), 403, "enrollment_code_invalid"),
        ):
            got, answer = await post(http, url, "/v1/enroll", doc)
            assert (got, answer["error"]) == (status, error), answer

        # Sign-ins: a by hand (its challenge and token are known), b and c by their client;
        # refused: a forged signature, an officer nobody knows, a replayed challenge.
        nonce = await challenge(http, url, run.officers["a"])
        status, answer = await sign_in(http, url, run.officers["a"], keys["a"][0], nonce)
        assert status == 200, answer
        a._token, a.session_expires = answer["token"], answer["expires"]
        await b.sign_in()
        run.secrets["a's challenge (base64)"], run.secrets["a's challenge (hex)"] = (
            b64(nonce), nonce.hex())
        for officer, key, nonce_of, error in (
            (run.officers["a"], keys["forger"][0], None, "bad_signature"),
            (UNKNOWN_OFFICER, keys["forger"][0], None, "bad_signature"),
            (run.officers["a"], keys["a"][0], nonce, "bad_challenge"),
        ):
            given = nonce_of or await challenge(http, url, officer)
            got, answer = await sign_in(http, url, officer, key, given)
            assert (got, answer["error"]) == (401, error), answer

        # a's stream; one of b's goes away on its own (noticed at the next event for it),
        # and b reads the message that event announces.
        stream_a = await Stream(a).open()
        async with aiohttp.ClientSession() as elsewhere:
            b_elsewhere = GatewayClient(elsewhere, b.creds)
            b_elsewhere._token = b._token
            gone = await Stream(b_elsewhere).open()
            gone.task.cancel()
            await asyncio.gather(gone.task, return_exceptions=True)
        await asyncio.sleep(0.3)
        sent = await a.send("hotline", "border-liaison", {"type": "hotline",
                                                          "text": PLAINTEXT},
                            priority="flash", frm="trafficking")
        run.read_back = (await b.read(sent["id"])).payload["text"]
        await until_logged(server, closed(run.officers["b"], "client_gone"), "client_gone")

        # c waits to join b's desk: b admits it; a, of another desk, cannot.
        with pytest.raises(ApiError):
            await a.request("POST", "/v1/desks/border-liaison@vn-mps/admissions", json={
                "officer": c.creds.officer_id, "at": int(time.time() * 1000),
                "signature": b64(bytes(64))})
        await b.admit("border-liaison", c.creds.officer_id, c.my_safety_code("border-liaison"))

        # The operator revokes c: its stream ends, its next sign-in is refused.
        await c.sign_in()
        stream_c = await Stream(c).open()
        await asyncio.to_thread(operator, "officers", "revoke", run.officers["c"])
        await asyncio.wait_for(stream_c.task, 10)
        assert stream_c.events[-1] == ("ended", {"desk": "", "reason": "revoked"})
        assert {kind for kind, _ in stream_c.events[:-1]} <= {"membership"}
        with pytest.raises(ApiError) as refused:
            await c.sign_in()
        assert refused.value.code == "revoked"

        # a's session ends (6 s), and with it a's stream; the gateway stops under b's.
        await asyncio.wait_for(stream_a.task, 15)
        assert stream_a.events[-1] == ("ended", {"desk": "", "reason": "session_expired"})
        tokens = {"a": a._token, "b": b._token, "c": c._token}
        await b.sign_in()  # b's first session has ended too
        tokens["b again"] = b._token
        stream_b = await Stream(b).open()
        assert await server.stop_async() == 0
        await asyncio.wait_for(stream_b.task, 10)
        assert stream_b.events == [("shutdown", {"desk": ""})]
        for name, token in tokens.items():
            assert token is not None
            run.secrets[f"{name}'s session token"] = token
    run.gateway_log = server.output()


@pytest.fixture(scope="module")
def audited(tmp_path_factory) -> Iterator[Run]:
    d = tmp_path_factory.mktemp("audit") / "gw"
    assert gateway("init", str(d), "--id", GATEWAY_ID, "--port", "0",
                   "--insecure-dev-keys").returncode == 0
    cfg = d / "gateway.toml"
    with open(cfg, "a") as fh:
        fh.write("\n[officers]\nsession_minutes = 0.1\n"
                 "\n[limits]\nanonymous_per_second = 1000\nanonymous_burst = 1000\n"
                 "enroll_per_second = 1000\nenroll_burst = 1000\n")
    run = Run()
    operator = Operator(run, cfg)
    operator("desks", "add", "trafficking")
    operator("desks", "add", "border-liaison")
    fingerprint = operator("keys", "show").stdout.split("fingerprint: ")[1].strip()
    server = ServerProcess.gateway(cfg)
    try:
        server.start()
        asyncio.run(scenario(run, server, operator, fingerprint))
    finally:
        server.stop()
    yield run


def test_each_invitation_is_audited_by_the_operator_command(audited: Run) -> None:
    lines = audited.cli_events("audit_invited")
    assert len(lines) == len(audited.codes) == 5
    for line, code in zip(lines, audited.codes.values(), strict=True):
        assert line["client"] == "operator-cli" and line["level"] == "info"
        assert line["code_hash"] == prefix(code) == code_hash(code).hex()[:12]
        assert line["desks"] in (["trafficking"], ["border-liaison"])
        assert line["expires"] > time.time() * 1000 - 60_000


def test_enrollments_and_refused_enrollments_are_audited(audited: Run) -> None:
    codes, officers = audited.codes, audited.officers
    enrolled = audited.gateway_events("audit_enrolled")
    assert [(line["officer"], line["code_hash"], line["desks"], line["client"])
            for line in enrolled] == [
        (officers["a"], prefix(codes["a"]), ["trafficking"], CLIENT),
        (officers["b"], prefix(codes["b"]), ["border-liaison"], CLIENT),
        (officers["c"], prefix(codes["c"]), ["border-liaison"], CLIENT)]
    refused = audited.gateway_events("audit_enroll_failed")
    assert [(line["code_hash"], line["error"], line["client"]) for line in refused] == [
        (prefix(codes["a"]), "enrollment_code_invalid", CLIENT),  # used
        (None, "enrollment_code_invalid", CLIENT),  # no code at all
        (prefix(codes["forged"]), "bad_signature", CLIENT),
        (prefix(codes["expired"]), "enrollment_code_invalid", CLIENT)]


def test_sign_ins_and_refused_sign_ins_are_audited(audited: Run) -> None:
    officers = audited.officers
    signed_in = audited.gateway_events("audit_signed_in")
    assert [line["officer"] for line in signed_in] == [
        officers["a"], officers["b"], officers["c"], officers["b"]]  # b: after its expiry
    assert all(line["client"] == CLIENT for line in signed_in)
    assert all(line["expires"] > time.time() * 1000 - 60_000 for line in signed_in)
    failed = audited.gateway_events("audit_signin_failed")
    assert [(line["officer"], line["error"], line["unknown_officer"], line["client"])
            for line in failed] == [
        (officers["a"], "bad_signature", False, CLIENT),
        (UNKNOWN_OFFICER, "bad_signature", True, CLIENT),
        (officers["a"], "bad_challenge", False, CLIENT),
        (officers["c"], "revoked", False, CLIENT)]


def test_a_revocation_is_audited_by_the_operator_command(audited: Run) -> None:
    lines = audited.cli_events("audit_revoked")
    assert [(line["officer"], line["client"]) for line in lines] == [
        (audited.officers["c"], "operator-cli")]


def test_each_stream_is_audited_when_it_opens_and_when_it_ends_with_its_reason(
        audited: Run) -> None:
    a, b, c = (audited.officers[name] for name in "abc")
    opened = audited.gateway_events("audit_stream_opened")
    assert sorted((line["officer"], tuple(line["desks"]), line["client"])
                  for line in opened) == sorted([
        (a, ("trafficking@vn-mps",), CLIENT), (b, ("border-liaison@vn-mps",), CLIENT),
        (b, ("border-liaison@vn-mps",), CLIENT), (c, ("border-liaison@vn-mps",), CLIENT)])
    ended = audited.gateway_events("audit_stream_closed")
    assert sorted((line["officer"], line["reason"], line["client"]) for line in ended) == sorted([
        (b, "client_gone", CLIENT), (c, "revoked", CLIENT), (a, "session_expired", CLIENT),
        (b, "shutdown", CLIENT)])
    assert all(line["seconds"] >= 0 for line in ended)
    session_ended = next(line for line in ended if line["reason"] == "session_expired")
    assert 2 < session_ended["seconds"] < 8  # from its opening to a's 6-second expiry


def test_no_code_token_challenge_key_or_plaintext_reaches_any_log(audited: Run) -> None:
    assert audited.read_back == PLAINTEXT  # the canary went through the gateway
    invites = [r for r in audited.commands if r.args[3:5] == ["officers", "invite"]]
    assert [r.stdout.strip() for r in invites] == list(audited.codes.values())
    secrets = {**audited.secrets, **{f"code {k}": v for k, v in audited.codes.items()}}
    assert len(secrets) == 7 * 4 + 2 + 4 + 1 + 5
    logs = {"the gateway": audited.gateway_log, "the operator commands": audited.cli_log()}
    assert all(logs.values())
    for where, text in logs.items():
        for what, secret in secrets.items():
            assert secret not in text, f"{what} is in the log of {where}"
            assert secret.lower() not in text.lower(), f"{what} is in the log of {where}"
    for where, text in logs.items():
        assert prefix(audited.codes["a"]) in text, where


# --- a gateway in this process: a stream cut for falling behind, a stale challenge ------


@pytest.fixture
def log_text() -> Iterator[Callable[[], str]]:
    """The process's log configuration at its default level, into a buffer."""
    saved = structlog.get_config()
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    yield stream.getvalue
    structlog.configure(**saved)


@pytest.fixture
async def served(tmp_path, aiohttp_server) -> AsyncIterator[tuple[Any, ManualClock, str]]:
    clock = ManualClock(int(time.time() * 1000))
    config = parse_config({
        "gateway": {"id": GATEWAY_ID, "public_url": "http://127.0.0.1:1"},
        "keys": {"file": "unused.key"}, "ledger": {"checkpoint_interval": 3600.0},
        "limits": {"stream_queue": 10}}, tmp_path / "gw.toml")
    app = create_app(config, KeyBundle(GATEWAY_ID, {ROLE_GATEWAY_SIGNING: GATEWAY_KEY}),
                     clock=clock)
    server = await aiohttp_server(app)
    await app[STORE].add_desk("border-liaison", None, clock.now_ms())
    yield app, clock, str(server.make_url("")).rstrip("/")


async def officer(http: aiohttp.ClientSession, app: Any, url: str) -> GatewayClient:
    code, now = new_code(), app[CLOCK].now_ms()
    await app[STORE].add_enrollment_code(code_hash(code), ["border-liaison"], now,
                                         now + 3_600_000)
    creds, _ = await enroll(http, url, code, OfficerSigningKey.generate(),
                            OfficerEncryptionKey.generate())
    return GatewayClient(http, creds)


async def test_a_stream_cut_for_falling_behind_is_audited_as_resync(served, log_text) -> None:
    app, _, url = served
    async with aiohttp.ClientSession() as http:
        client = await officer(http, app, url)
        stream = await Stream(client).open()
        for n in range(20):  # in one turn of the loop: more than the stream's queue holds
            app[HUB].publish(Notification("border-liaison@vn-mps", "message", {"n": n}))
        await asyncio.wait_for(stream.task, 10)
    assert stream.events[-1] == ("resync", {"desk": ""})
    ended = [line for line in audit_lines(log_text()) if line["event"] == "audit_stream_closed"]
    assert [(line["officer"], line["reason"], line["client"]) for line in ended] == [
        (client.creds.officer_id, "resync", CLIENT)]


async def test_a_stale_challenge_is_audited_as_a_refused_sign_in(served, log_text) -> None:
    app, clock, url = served
    async with aiohttp.ClientSession() as http:
        client = await officer(http, app, url)
        officer_id = client.creds.officer_id
        nonce = await challenge(http, url, officer_id)
        clock.advance(61)
        status, answer = await sign_in(http, url, officer_id, client.creds.signing, nonce)
    assert (status, answer["error"]) == (401, "challenge_expired")
    failed = [line for line in audit_lines(log_text()) if line["event"] == "audit_signin_failed"]
    assert [(line["officer"], line["error"], line["client"]) for line in failed] == [
        (officer_id, "challenge_expired", CLIENT)]


async def test_a_stream_whose_handler_is_cancelled_is_audited_as_cancelled(
        served, log_text) -> None:
    app, _, url = served  # the test server cancels a handler when its client goes away
    async with aiohttp.ClientSession() as http:
        client = await officer(http, app, url)
        await client.sign_in()
        async with aiohttp.ClientSession() as elsewhere:
            away = GatewayClient(elsewhere, client.creds)
            away._token = client._token
            gone = await Stream(away).open()
            gone.task.cancel()
            await asyncio.gather(gone.task, return_exceptions=True)

    def streams() -> list[tuple[str, str, str | None]]:
        return [(line["event"], line["officer"], line.get("reason"))
                for line in audit_lines(log_text()) if line["event"].startswith("audit_stream")]
    for _ in range(250):
        if len(streams()) == 2:
            break
        await asyncio.sleep(0.02)
    officer_id = client.creds.officer_id
    assert streams() == [("audit_stream_opened", officer_id, None),
                         ("audit_stream_closed", officer_id, "cancelled")]


def test_admissions_and_refused_admissions_are_audited(audited: Run) -> None:
    run = audited
    admitted = run.gateway_events("audit_admitted")
    assert [(line["officer"], line["by"], line["desk"], line["client"]) for line in admitted] == [
        (run.officers["c"], run.officers["b"], "border-liaison@vn-mps", CLIENT)]
    refused = run.gateway_events("audit_admission_refused")
    assert [(line["officer"], line["by"], line["error"]) for line in refused] == [
        (run.officers["c"], run.officers["a"], "not_a_member")]

"""Sign-in under abuse, over real HTTP on 127.0.0.1 from several loopback addresses.

Strangers flood the sign-in routes from many addresses, or from the one address that a
reverse proxy gives everyone, claiming an officer's id; the officer still signs in, and
what the strangers make the gateway hold is nothing. The clock is a ManualClock, so token
buckets do not refill while a test runs. A junk signature for a revoked officer is
answered like one for an officer nobody knows. All anonymous requests wait their turn
in one line, served at a fixed rate, so that a flood from any number of addresses is
slowed to that rate instead of taking the gateway's time from the officers' requests.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from gateway.app import create_app
from gateway.appkeys import DIRECTORY, SESSIONS, STORE
from gateway.client.api import ApiError, GatewayClient, enroll
from gateway.clock import ManualClock
from gateway.config import parse_config
from gateway.crypto.keyfile import KeyBundle
from gateway.crypto.keys import ROLE_GATEWAY_SIGNING, OfficerEncryptionKey, OfficerSigningKey
from gateway.officers.enrollment import new_code
from gateway.officers.sessions import AnonymousLine, RateLimited
from gateway.protocol.officers import code_hash, session_text
from tests.helpers import GATEWAY_KEY, enroll_body

GATEWAY_ID = "vn-mps"
NOBODY = "off-00000000deadbeef"


@dataclass
class Served:
    app: Any
    clock: ManualClock
    url: str
    http: aiohttp.ClientSession  # from 127.0.0.1

    async def officer(self) -> GatewayClient:
        code, now = new_code(), self.clock.now_ms()
        await self.app[STORE].add_enrollment_code(code_hash(code), ["border-liaison"], now,
                                                  now + 3_600_000)
        creds, _ = await enroll(self.http, self.url, code, OfficerSigningKey.generate(),
                                OfficerEncryptionKey.generate())
        return GatewayClient(self.http, creds)


@pytest.fixture
async def make_served(tmp_path, aiohttp_server) -> AsyncIterator[Any]:
    made: list[aiohttp.ClientSession] = []

    async def make(**limits: object) -> Served:
        clock = ManualClock()
        config = parse_config({
            "gateway": {"id": GATEWAY_ID, "public_url": "http://127.0.0.1:1"},
            "keys": {"file": "unused.key"}, "ledger": {"checkpoint_interval": 3600.0},
            "limits": limits}, tmp_path / f"gw{len(made)}" / "gw.toml")
        app = create_app(config, KeyBundle(GATEWAY_ID, {ROLE_GATEWAY_SIGNING: GATEWAY_KEY}),
                         clock=clock)
        server = await aiohttp_server(app)
        await app[STORE].add_desk("border-liaison", None, clock.now_ms())
        http = aiohttp.ClientSession()
        made.append(http)
        return Served(app, clock, str(server.make_url("")).rstrip("/"), http)

    yield make
    for http in made:
        await http.close()


def from_address(address: str) -> aiohttp.ClientSession:
    """A client whose connections come from ``address`` (any of 127.0.0.0/8 is loopback)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))


async def post(http: aiohttp.ClientSession, url: str, path: str,
               doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with http.post(url + path, json=doc) as response:
        return response.status, await response.json()


async def challenge(http: aiohttp.ClientSession, url: str, officer: str) -> tuple[int, str]:
    status, answer = await post(http, url, "/v1/session/challenge", {"officer": officer})
    return status, answer.get("challenge", "")


def signed(officer: str, key: OfficerSigningKey, challenge_b64: str) -> dict[str, str]:
    signature = key.sign(session_text(GATEWAY_ID, officer, base64.b64decode(challenge_b64)))
    return {"officer": officer, "challenge": challenge_b64,
            "signature": base64.b64encode(signature).decode("ascii")}


async def flood(http: aiohttp.ClientSession, url: str, officer: str,
                rounds: int = 20) -> list[int]:
    """Challenges and forged sign-ins claiming ``officer`` until refused; the statuses."""
    statuses = []
    forger = OfficerSigningKey.generate()
    for _ in range(rounds):
        status, nonce = await challenge(http, url, officer)
        statuses.append(status)
        if status == 200:
            status, _ = await post(http, url, "/v1/session", signed(officer, forger, nonce))
            statuses.append(status)
        if status == 429:
            break
    return statuses


async def test_strangers_at_many_addresses_claiming_an_officer_do_not_lock_it_out(
        make_served) -> None:
    served = await make_served(anonymous_per_second=0.01, anonymous_burst=4)
    honest = await served.officer()
    target = honest.creds.officer_id
    for n in range(2, 22):  # twenty addresses, each until refused
        async with from_address(f"127.0.0.{n}") as stranger:
            statuses = await flood(stranger, served.url, target)
        assert statuses == [200, 401, 200, 401, 429], statuses
    await honest.sign_in()  # from 127.0.0.1: its own bucket, untouched
    assert honest._token is not None
    # Nothing the strangers did is held: only the honest sign-in's challenge is remembered.
    assert served.app[SESSIONS].used_count() == 1


async def test_one_address_shared_by_many_officers_does_not_lock_them_all_out(
        make_served) -> None:
    served = await make_served(anonymous_per_second=0.01, anonymous_burst=4)
    victim, others = await served.officer(), [await served.officer() for _ in range(3)]
    # A stranger behind the same proxy (127.0.0.1, like everyone) spends what it can
    # claiming the victim's id, and once more for an id nobody has.
    assert (await flood(served.http, served.url, victim.creds.officer_id))[-1] == 429
    assert (await flood(served.http, served.url, NOBODY))[-1] == 429
    for other in others:  # the other officers at that address still sign in
        await other.sign_in()
        assert other._token is not None
    with pytest.raises(ApiError) as info:  # the id the stranger claimed waits its turn
        await victim.sign_in()
    assert info.value.code == "rate_limited"
    async with from_address("127.0.0.2") as elsewhere:  # or signs in from elsewhere
        status, nonce = await challenge(elsewhere, served.url, victim.creds.officer_id)
        status, _ = await post(elsewhere, served.url, "/v1/session",
                               signed(victim.creds.officer_id, victim.creds.signing, nonce))
    assert status == 200


async def test_one_address_has_a_budget_for_all_officer_ids_together(make_served) -> None:
    served = await make_served(signin_address_per_second=0.01, signin_address_burst=5)
    async with from_address("127.0.0.3") as stranger:
        statuses = [(await challenge(stranger, served.url, f"off-{n:016x}"))[0]
                    for n in range(8)]
    assert statuses == [200] * 5 + [429] * 3
    honest = await served.officer()
    await honest.sign_in()  # another address's budget is its own
    assert honest._token is not None


async def test_an_officers_own_budget_is_spent_only_by_valid_sign_ins(make_served) -> None:
    served = await make_served(signin_officer_per_second=0.01, signin_officer_burst=2)
    officer = await served.officer()
    oid, key = officer.creds.officer_id, officer.creds.signing
    for n in range(2, 12):  # forged sign-ins from ten addresses spend nothing of it
        async with from_address(f"127.0.0.{n}") as stranger:
            assert await flood(stranger, served.url, oid, rounds=3) == [200, 401] * 3
    outcomes = []
    for n in (30, 31, 32):  # the key signs in twice, then must wait, wherever it is
        async with from_address(f"127.0.0.{n}") as where:
            _, nonce = await challenge(where, served.url, oid)
            status, answer = await post(where, served.url, "/v1/session",
                                        signed(oid, key, nonce))
            outcomes.append((status, answer.get("error")))
    assert outcomes == [(200, None), (200, None), (429, "rate_limited")]


async def test_a_bad_signature_is_bad_signature_for_a_revoked_officer_too(make_served) -> None:
    served = await make_served()
    officer = await served.officer()
    oid, key = officer.creds.officer_id, officer.creds.signing
    await served.app[STORE].revoke_officer(oid, served.clock.now_ms())
    await served.app[DIRECTORY].reload()
    forger = OfficerSigningKey.generate()
    answers = []
    for claimed, signer in ((oid, forger), (NOBODY, forger), (oid, key)):
        _, nonce = await challenge(served.http, served.url, claimed)
        status, answer = await post(served.http, served.url, "/v1/session",
                                    signed(claimed, signer, nonce))
        answers.append((status, answer["error"]))
    # Revoked and unknown look alike to whoever lacks the key; the key holder is told.
    assert answers == [(401, "bad_signature"), (401, "bad_signature"), (401, "revoked")]


async def test_a_challenge_is_refused_for_another_officer_after_a_restart_or_reuse(
        make_served) -> None:
    served, restarted = await make_served(), await make_served()
    officer = await served.officer()
    oid, key = officer.creds.officer_id, officer.creds.signing
    _, nonce = await challenge(served.http, served.url, oid)
    _, other = await challenge(served.http, served.url, NOBODY)
    answers = []
    for url, body in ((served.url, signed(oid, key, other)),  # issued to another id
                      (restarted.url, signed(oid, key, nonce)),  # by another process
                      (served.url, signed(oid, key, nonce)),  # good
                      (served.url, signed(oid, key, nonce))):  # used
        status, answer = await post(served.http, url, "/v1/session", body)
        answers.append((status, answer.get("error")))
    assert answers == [(401, "bad_challenge"), (401, "bad_challenge"), (200, None),
                       (401, "bad_challenge")]
    served.clock.advance(60)
    _, late = await challenge(served.http, served.url, oid)
    served.clock.advance(60)
    status, answer = await post(served.http, served.url, "/v1/session", signed(oid, key, late))
    assert (status, answer["error"]) == (401, "challenge_expired")
    assert served.app[SESSIONS].used_count() == 0  # the used one was forgotten at its expiry


async def test_anonymous_requests_wait_their_turn_in_one_line() -> None:
    """At 10 a second with 1 s of waiting at most: eleven requests at once are served
    0.1 s apart, the twelfth and later are refused at once, and the line is empty again
    once its time has passed."""
    now = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))

    line = AnonymousLine(10.0, 1.0, now=lambda: now[0], sleep=sleep)
    for _ in range(11):
        await line.turn()
    assert slept == [round(0.1 * k, 6) for k in range(1, 11)]  # the first went at once
    with pytest.raises(RateLimited) as refused:
        await line.turn()
    assert refused.value.retry_after == pytest.approx(1.1)
    assert len(slept) == 10  # refused without waiting
    now[0] += 5.0
    await line.turn()
    assert len(slept) == 10  # an empty line: served at once


async def test_a_flood_of_anonymous_requests_is_slowed_to_the_lines_rate(make_served) -> None:
    """Over HTTP, from twenty addresses at once, at 20 a second and 0.5 s at most: about
    eleven are answered, spaced by the line, and the rest refused with 429 before any
    per-address limit is reached (each address sends one request)."""
    served = await make_served(anonymous_line_per_second=20.0,
                               anonymous_line_wait_seconds=0.5)
    clients = [from_address(f"127.0.7.{k + 1}") for k in range(20)]
    try:
        statuses = await asyncio.gather(*(challenge(c, served.url, NOBODY)
                                          for c in clients))
    finally:
        for c in clients:
            await c.close()
    answered = [status for status, _ in statuses if status == 200]
    refused = [status for status, _ in statuses if status == 429]
    assert len(answered) + len(refused) == 20
    assert 2 <= len(answered) <= 12 and refused  # 0.5 s at 20/s, whatever the machine


async def test_enrollment_and_sign_in_attempts_stand_in_the_same_line(make_served) -> None:
    """One request every ten seconds and no waiting: after one challenge, an enrollment
    guess and a sign-in attempt from other addresses are refused by the line."""
    served = await make_served(anonymous_line_per_second=0.1,
                               anonymous_line_wait_seconds=0.0)
    assert (await challenge(served.http, served.url, NOBODY))[0] == 200
    signing, enc = OfficerSigningKey.generate(), OfficerEncryptionKey.generate()
    attempts = [("/v1/enroll", enroll_body(new_code(), signing, enc)),
                ("/v1/session", signed(NOBODY, signing, base64.b64encode(b"x" * 32).decode()))]
    for k, (path, doc) in enumerate(attempts):
        async with from_address(f"127.0.8.{k + 1}") as other:
            status, answer = await post(other, served.url, path, doc)
        assert (status, answer["error"]) == (429, "rate_limited"), path

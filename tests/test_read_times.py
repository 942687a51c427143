"""Read acknowledgements are recorded at the gateway's time, not the officer's claim.

Over real HTTP on 127.0.0.1 with a real SQLite file; the gateway's clock is a ManualClock,
and each officer's client has a clock of its own, set off from the gateway's to play a
device that is wrong or lies. The ledger's ``read`` entry, the message's first read, the
status and the response-time metric hold the time the gateway received the
acknowledgement; the signed time is kept beside it and must lie within
``officers.clock_skew_seconds`` of the gateway's clock.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from gateway.app import create_app
from gateway.appkeys import METRICS, STORE
from gateway.client.api import ApiError, GatewayClient, enroll
from gateway.clock import ManualClock
from gateway.config import parse_config
from gateway.crypto.keyfile import KeyBundle
from gateway.crypto.keys import ROLE_GATEWAY_SIGNING, OfficerEncryptionKey, OfficerSigningKey
from gateway.officers.enrollment import new_code
from gateway.protocol.officers import code_hash
from tests.helpers import GATEWAY_KEY, members_of

GATEWAY_ID = "vn-mps"
SKEW_S = 120


@dataclass
class World:
    app: Any
    clock: ManualClock
    url: str
    http: aiohttp.ClientSession

    async def officer(self, desk: str) -> GatewayClient:
        code, now = new_code(), self.clock.now_ms()
        await self.app[STORE].add_enrollment_code(code_hash(code), [desk], now,
                                                  now + 3_600_000)
        creds, answer = await enroll(self.http, self.url, code, OfficerSigningKey.generate(),
                                     OfficerEncryptionKey.generate())
        await members_of(self.app).join(self.http, creds, answer)
        # The device's own clock, set to the gateway's; tests move it apart.
        return GatewayClient(self.http, creds, clock=ManualClock(now))

    def db(self) -> list[Any]:
        """Every row of reads and the ledger, and each message's first read."""
        path = self.app[STORE].path
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return [db.execute("SELECT * FROM reads").fetchall(),
                    db.execute("SELECT COUNT(*) FROM ledger").fetchall(),
                    db.execute("SELECT id, first_read_ms FROM messages").fetchall()]


@pytest.fixture
async def world(tmp_path, aiohttp_server) -> AsyncIterator[World]:
    clock = ManualClock()
    config = parse_config({
        "gateway": {"id": GATEWAY_ID, "public_url": "http://127.0.0.1:1"},
        "keys": {"file": "unused.key"}, "ledger": {"checkpoint_interval": 3600.0},
        "officers": {"clock_skew_seconds": SKEW_S}}, tmp_path / "gw.toml")
    app = create_app(config, KeyBundle(GATEWAY_ID, {ROLE_GATEWAY_SIGNING: GATEWAY_KEY}),
                     clock=clock)
    server = await aiohttp_server(app)
    for desk in ("trafficking", "border-liaison"):
        await app[STORE].add_desk(desk, None, clock.now_ms())
    async with aiohttp.ClientSession() as http:
        yield World(app, clock, str(server.make_url("")).rstrip("/"), http)


async def sent_and_opened(world: World) -> tuple[GatewayClient, GatewayClient, Any, int]:
    """A flash from trafficking to border-liaison, opened there; and when it was accepted."""
    a, b = await world.officer("trafficking"), await world.officer("border-liaison")
    accepted = world.clock.now_ms()
    sent = await a.send("hotline", "border-liaison", {"type": "hotline", "text": "x"},
                        priority="flash")
    return a, b, await b.open(sent["id"]), accepted


def read_seconds(world: World) -> list[float]:
    """The sum of each observed ``read`` response time (one series per route)."""
    return [sample.value for metric in world.app[METRICS].registry.collect()
            for sample in metric.samples
            if sample.name == "fpg_response_seconds_sum" and sample.labels["stage"] == "read"]


async def test_reads_are_recorded_at_the_gateways_time_with_the_claim_beside_it(
        world) -> None:
    a, b, message, accepted = await sent_and_opened(world)
    world.clock.advance(90)  # the officer reads 90 s after the accept ...
    b.clock.advance(90 - 100)  # ... on a device whose clock is 100 s behind
    assert (await b.acknowledge(message))["status"] == "recorded"
    received, claimed = accepted + 90_000, accepted - 10_000  # claimed: before the accept

    status = await a.status(message.header.id)
    assert status["first_read"] == received
    assert status["reads"] == [{"officer": b.creds.officer_id, "read": received,
                                "claimed": claimed}]
    (read_entry,) = [e for e in status["events"] if e["type"] == "read"]
    assert read_entry["t"] == received
    for _ in range(200):  # the metrics follow the ledger on their own task
        if read_seconds(world):
            break
        await asyncio.sleep(0.01)
    assert read_seconds(world) == [90.0]


async def test_a_signed_read_time_beyond_the_skew_is_refused_and_changes_nothing(
        world) -> None:
    _, b, message, accepted = await sent_and_opened(world)
    world.clock.advance(SKEW_S + 60)  # read well after the accept
    now = world.clock.now_ms()
    before = world.db()
    for claim in (accepted,  # back-dated to the accept: earlier than the skew allows
                  now - SKEW_S * 1000 - 1, now + SKEW_S * 1000 + 1):
        b.clock = ManualClock(claim)
        with pytest.raises(ApiError) as refused:
            await b.acknowledge(message)
        assert (refused.value.status, refused.value.code) == (400, "bad_time"), claim
    assert world.db() == before
    b.clock = ManualClock(now - SKEW_S * 1000)  # the edge of the skew is allowed
    assert (await b.acknowledge(message))["status"] == "recorded"


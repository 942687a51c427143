"""A stream ends when its officer may read no more: revoked, or the session expired.

A real gateway process on 127.0.0.1 with 6-second sessions; the operator revokes from
its own process, as in production. Each stream must end, with the reason, within one
second of the revocation (counted from the operator command's exit) or of the expiry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from gateway.client.api import GatewayClient
from gateway.client.cli import watch
from gateway.client.roster import Roster
from gateway.errors import ClientError
from tests.helpers import Running, enroll_invited, gateway, running_gateway

SESSION_MINUTES = 0.1  # 6 s, the shortest the configuration allows

MEMBERS = Roster()  # the module's gateway: who admits whom


@pytest.fixture(scope="module")
def running(tmp_path_factory) -> Iterator[Running]:
    with running_gateway(tmp_path_factory.mktemp("streams") / "gw", ["border-liaison"],
                         f"[officers]\nsession_minutes = {SESSION_MINUTES}\n") as gw:
        yield gw


async def officer(http: aiohttp.ClientSession, running: Running) -> GatewayClient:
    creds, answer = await enroll_invited(http, running, "border-liaison")
    await MEMBERS.join(http, creds, answer)
    return GatewayClient(http, creds)


class Stream:
    """One raw stream: its events, and when (monotonic, wall ms) it ended."""

    def __init__(self, client: GatewayClient) -> None:
        self.client = client
        self.events: list[tuple[str, Any]] = []
        self.ended_mono = self.ended_ms = 0.0
        self.connected = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for kind, data in self.client.stream(connected=self.connected):
            self.events.append((kind, data))
        self.ended_mono, self.ended_ms = time.monotonic(), time.time() * 1000

    async def open(self) -> Stream:
        await asyncio.wait_for(self.connected.wait(), 10)
        return self


def revoke(running: Running, client: GatewayClient) -> float:
    result = gateway("officers", "revoke", client.creds.officer_id, "--config",
                     str(running[1]))
    assert result.returncode == 0, result.stderr
    return time.monotonic()


def test_a_revoked_officers_stream_ends_within_a_second(running) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as http:
            a, b = await officer(http, running), await officer(http, running)
            stream_a, stream_b = await Stream(a).open(), await Stream(b).open()
            watcher = asyncio.create_task(watch(b, None, None, True))
            await asyncio.sleep(0.3)  # the watcher's stream is up (not needed for a)
            revoked = await asyncio.to_thread(revoke, running, a)
            await asyncio.wait_for(stream_a.task, 5)
            assert stream_a.events[-1] == ("ended", {"desk": "", "reason": "revoked"})
            assert {kind for kind, _ in stream_a.events[:-1]} <= {"membership"}
            assert stream_a.ended_mono - revoked < 1.0, stream_a.ended_mono - revoked
            assert not stream_b.task.done() and not watcher.done()  # b may still read

            # The officers' client stops for good on a revocation; it does not reconnect.
            revoked = await asyncio.to_thread(revoke, running, b)
            with pytest.raises(ClientError) as refused:
                await asyncio.wait_for(watcher, 5)
            assert refused.value.code == "revoked"
            await asyncio.wait_for(stream_b.task, 5)
            assert stream_b.events[-1] == ("ended", {"desk": "", "reason": "revoked"})
            assert {kind for kind, _ in stream_b.events[:-1]} <= {"membership"}
            assert stream_b.ended_mono - revoked < 1.0, stream_b.ended_mono - revoked
    asyncio.run(scenario())


def test_a_stream_ends_when_its_session_expires(running) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as http:
            c = await officer(http, running)
            await c.sign_in()
            expires = c.session_expires
            assert expires is not None
            stream = await Stream(c).open()
            await asyncio.wait_for(stream.task, SESSION_MINUTES * 60 + 5)
            assert stream.events[-1] == ("ended", {"desk": "", "reason": "session_expired"})
            assert {kind for kind, _ in stream.events[:-1]} <= {"membership"}
            assert 0 <= stream.ended_ms - expires < 1000, stream.ended_ms - expires
    asyncio.run(scenario())


def test_the_client_signs_in_again_when_its_session_expires(running, capsys) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as http:
            c = await officer(http, running)
            await c.sign_in()
            first = c.session_expires
            watcher = asyncio.create_task(watch(c, None, None, True))
            await asyncio.sleep(SESSION_MINUTES * 60 + 2)  # past the first session's end
            assert not watcher.done()
            assert c.session_expires is not None and first is not None
            assert c.session_expires > first  # it signed in again on the "ended" event
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
    asyncio.run(scenario())
    assert "reconnecting" not in capsys.readouterr().err  # at once, not after a back-off

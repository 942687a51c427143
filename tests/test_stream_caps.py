"""Live streams are capped per officer and in total, and a stream whose client stops
reading is dropped (gateway/officers/hub.py, gateway/channels/client.py).

A gateway in this process with small caps: two streams per officer, three in all. An
officer who opens a third ends its own oldest (``ended``, reason ``too_many_streams``);
a stream past the total is refused ``429 too_many_streams``. A client that never reads is
a raw socket with a small receive buffer: the gateway drops its stream once more than
``stream_buffer_bytes`` wait in its transport, or once one write has waited
``stream_write_seconds``, and frees what it held (subscription, connection, buffer).
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest
import structlog

from gateway.app import create_app
from gateway.appkeys import CLOCK, HUB, STORE
from gateway.client.cli import watch
from gateway.config import parse_config
from gateway.crypto.keyfile import KeyBundle
from gateway.crypto.keys import ROLE_GATEWAY_SIGNING
from gateway.errors import ClientError
from gateway.logs import configure_logging
from gateway.store import Notification
from tests.helpers import (
    GATEWAY,
    GATEWAY_KEY,
    Stream,
    enrolled_officer,
    until,
)

DESK = "border-liaison"
PER_OFFICER, TOTAL = 2, 3
PAD = "x" * 4000  # bytes of padding per event, so that buffers fill quickly


@pytest.fixture
def log_text() -> Iterator[Callable[[], str]]:
    saved = structlog.get_config()
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    yield stream.getvalue
    structlog.configure(**saved)


def closed_reasons(text: str) -> list[str]:
    reasons = []
    for line in text.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("event") == "audit_stream_closed":
            reasons.append(doc["reason"])
    return reasons


async def serve(tmp_path: Any, aiohttp_server: Any, **limits: Any) -> tuple[Any, Any]:
    config = parse_config({
        "gateway": {"id": GATEWAY, "public_url": "http://127.0.0.1:1",
                    "data_dir": str(tmp_path)},
        "keys": {"file": "unused.key"}, "ledger": {"checkpoint_interval": 3600.0},
        "limits": {"streams_per_officer": PER_OFFICER, "streams_total": TOTAL, **limits},
        "log": {"level": "info"}}, tmp_path / "gw.toml")
    app = create_app(config, KeyBundle(GATEWAY, {ROLE_GATEWAY_SIGNING: GATEWAY_KEY}))
    server = await aiohttp_server(app)
    await app[STORE].add_desk(DESK, None, app[CLOCK].now_ms())
    return app, server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_an_officers_stream_past_its_cap_ends_its_oldest(tmp_path, aiohttp_server,
                                                                http, log_text) -> None:
    app, server = await serve(tmp_path, aiohttp_server)
    client = await enrolled_officer(app, server, http, DESK)
    first = await Stream(client).open()
    second = await Stream(client).open()
    third = await Stream(client).open()
    await asyncio.wait_for(first.task, 5)
    assert first.events[-1] == ("ended", {"desk": "", "reason": "too_many_streams"})
    assert not second.task.done() and not third.task.done()
    assert app[HUB].subscribers() == PER_OFFICER
    app[HUB].publish(Notification(f"{DESK}@{GATEWAY}", "message", {"n": 1}))
    await until(lambda: ("message", {"desk": f"{DESK}@{GATEWAY}", "n": 1}) in third.events,
                "the newest stream still hears events")
    await until(lambda: "too_many_streams" in closed_reasons(log_text()), "the audit line")
    for stream in (second, third):
        stream.task.cancel()


async def test_a_stream_past_the_total_is_refused_429(tmp_path, aiohttp_server, http) -> None:
    app, server = await serve(tmp_path, aiohttp_server)
    a = await enrolled_officer(app, server, http, DESK)
    b = await enrolled_officer(app, server, http, DESK)
    held = [await Stream(a).open(), await Stream(a).open(), await Stream(b).open()]
    url = str(server.make_url("/v1/stream"))
    async with http.get(url, headers={"Authorization": f"Bearer {b._token}"}) as refused:
        assert refused.status == 429
        assert (await refused.json())["error"] == "too_many_streams"
    assert app[HUB].subscribers() == TOTAL
    held[0].task.cancel()  # one stream fewer: the next is let in
    await until(lambda: app[HUB].subscribers() == TOTAL - 1, "the cancelled stream's end")
    held.append(await Stream(b).open())
    for stream in held[1:]:
        stream.task.cancel()


def stalled_stream(port: int, token: str) -> socket.socket:
    """A stream whose client reads the answer's head and then nothing more."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 f"Authorization: Bearer {token}\r\n\r\n".encode())
    head = b""
    while b": connected" not in head:
        head += sock.recv(1024)
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def dropped(sock: socket.socket) -> bool:
    """Whether the gateway closed the connection (what it sent before is read and thrown
    away)."""
    sock.settimeout(5)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


async def flood_until_dropped(app: Any, before: int, seconds: float) -> float:
    """Publish padded events to the desk until no stream listens; the seconds it took."""
    started = time.monotonic()
    n = 0
    while app[HUB].subscribers() > before:
        assert time.monotonic() - started < seconds, "the stalled stream was never dropped"
        for _ in range(20):
            n += 1
            app[HUB].publish(Notification(f"{DESK}@{GATEWAY}", "message", {"n": n, "p": PAD}))
        await asyncio.sleep(0.005)
    return time.monotonic() - started


async def stalled_scenario(tmp_path, aiohttp_server, http, log_text, **limits: Any) -> None:
    app, server = await serve(tmp_path, aiohttp_server, stream_queue=100_000, **limits)
    client = await enrolled_officer(app, server, http, DESK)
    connections = len(server.runner.server.connections)
    sock = await asyncio.to_thread(stalled_stream, server.port, client._token)
    try:
        await until(lambda: app[HUB].subscribers() == 1, "the stalled stream's subscription")
        assert len(server.runner.server.connections) == connections + 1
        await flood_until_dropped(app, 0, 20)
        await until(lambda: len(server.runner.server.connections) == connections,
                    "the stalled stream's connection to be freed")
        assert await asyncio.to_thread(dropped, sock)
    finally:
        sock.close()
    assert closed_reasons(log_text()) == ["stalled"]


async def test_a_stream_that_never_reads_is_dropped_past_its_byte_cap(
        tmp_path, aiohttp_server, http, log_text) -> None:
    await stalled_scenario(tmp_path, aiohttp_server, http, log_text,
                           stream_buffer_bytes=16 * 1024, stream_write_seconds=3600)


async def test_a_stream_whose_write_waits_past_the_deadline_is_dropped(
        tmp_path, aiohttp_server, http, log_text) -> None:
    await stalled_scenario(tmp_path, aiohttp_server, http, log_text,
                           stream_buffer_bytes=64 * 1024 * 1024, stream_write_seconds=0.5)


async def test_a_watcher_replaced_by_newer_streams_stops_instead_of_taking_one_back(
        tmp_path, aiohttp_server, http) -> None:
    """Reconnecting would end the officer's oldest stream in turn, for ever."""
    app, server = await serve(tmp_path, aiohttp_server)
    client = await enrolled_officer(app, server, http, DESK)
    watcher = asyncio.create_task(watch(client, None, None, True))
    await until(lambda: app[HUB].subscribers() == 1, "the watcher's stream")
    newer = [await Stream(client).open() for _ in range(PER_OFFICER)]
    with pytest.raises(ClientError) as refused:
        await asyncio.wait_for(watcher, 5)
    assert refused.value.code == "too_many_streams"
    await asyncio.sleep(0.3)  # long enough for a reconnect to have ended one of them
    assert not any(stream.task.done() for stream in newer)
    for stream in newer:
        stream.task.cancel()

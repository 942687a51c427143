"""Slow clients ("slowloris") are cut off at a timeout; legitimate clients keep their latency.

A client that sends a request's head or body one byte at a time would otherwise hold a
connection (and, for a body, a handler and its buffers) for as long as it likes. Two
deadlines bound it:

* the request **head**: aiohttp closes a connection that has not sent a whole head
  ``keepalive_timeout`` seconds after it opened (or after its last answer), bytes
  trickling in or not; :func:`gateway.httpbody.server_settings` gives that setting (and a
  short lingering time) for ``web.AppRunner``;
* the request **body**: :func:`gateway.httpbody.read_body` gives the whole body a deadline
  (``BODY_TIMEOUT`` on the application) and answers ``408 body_timeout``.

The gateway here runs with both at one second (as ``[server] header_timeout_seconds`` and
``body_timeout_seconds`` would set them) in a thread of its own; the slow clients send one
byte every quarter of a second, so each is still sending when it is cut. The last test runs
the real ``gateway run`` with those keys in its configuration: it is an expected failure
until gateway/config.py, gateway/app.py and gateway/cli/main.py take them (see its reason).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from gateway.app import create_app
from gateway.appkeys import CONFIG
from gateway.cli.process import ServerProcess
from gateway.crypto.keyfile import KeyBundle
from gateway.crypto.keys import ROLE_GATEWAY_SIGNING, GatewaySigningKey
from gateway.federation.partners import FEDERATION_MESSAGES_PATH
from gateway.httpbody import BODY_TIMEOUT, server_settings
from tests.helpers import GATEWAY, GATEWAY_KEY, Served, dump, gateway_config
from tests.helpers import gateway as gateway_command

TIMEOUT = 1.0  # header and body deadlines of the gateway under test, seconds
LINGER = 0.3  # how long the rest of a refused body is still read
TRICKLE = 0.25  # a slow client sends one byte this often
CUT_BY = TIMEOUT + LINGER + 1.5  # a slow client must be gone by then (generous)
SLOW_CLIENTS = 20
WINDOW = 1.5  # seconds of legitimate requests measured, alone and with the slow clients


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    config = gateway_config(tmp_path_factory.mktemp("hostile-slow"),
                            GatewaySigningKey.generate())
    app = create_app(config, KeyBundle(GATEWAY, {ROLE_GATEWAY_SIGNING: GATEWAY_KEY}))
    app[BODY_TIMEOUT] = TIMEOUT  # what create_app would set from body_timeout_seconds
    with Served(app, **server_settings(header_timeout=TIMEOUT, linger=LINGER)) as s:
        yield s


# --- slow clients --------------------------------------------------------------------------


def challenge_head(length: int = 100) -> bytes:
    return (f"POST /v1/session/challenge HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()


SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 10_000
SLOW_BODY = (challenge_head(), b'{"officer":"' + b"a" * 200)
SLOW_BATCH = (f"POST {FEDERATION_MESSAGES_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              "Content-Length: 1000\r\n\r\n").encode(), b"{" * 1000


@dataclass
class Cut:
    """What happened to one slow client."""

    answer: bytes  # the status line it got, if any
    answered_after: float | None  # seconds from its last complete part to the answer
    closed_after: float | None  # seconds from connecting to the server closing (None: never)
    bytes_sent: int


async def slow_client(port: int, head: bytes, trickled: bytes, give_up: float) -> Cut:
    """Send ``head`` at once, then ``trickled`` one byte every TRICKLE seconds, until the
    server closes the connection or ``give_up`` seconds have passed."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = loop.time()
    writer.write(head)
    sent_head = loop.time()
    got = b""
    answered: float | None = None
    closed: float | None = None

    async def read() -> None:
        nonlocal got, answered, closed
        with contextlib.suppress(ConnectionError):
            while piece := await reader.read(4096):
                if not got:
                    answered = loop.time() - sent_head
                got += piece
        closed = loop.time() - started

    reading = asyncio.create_task(read())
    sent = 0
    try:
        for byte in trickled:
            if reading.done() or loop.time() - started > give_up:
                break
            with contextlib.suppress(ConnectionError):
                writer.write(bytes([byte]))
                await writer.drain()
                sent += 1
            await asyncio.sleep(TRICKLE)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(reading), max(0.0, give_up -
                                                                (loop.time() - started)))
    finally:
        reading.cancel()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return Cut(got.split(b"\r\n", 1)[0], answered, closed, sent)


async def test_a_slow_request_head_is_cut_off_at_the_header_timeout(served: Served) -> None:
    cut = await slow_client(served.port, b"", SLOW_HEAD, give_up=CUT_BY + 2)
    assert cut.closed_after is not None, "the slow head was never cut off"
    assert TIMEOUT * 0.8 <= cut.closed_after <= CUT_BY, cut
    assert cut.bytes_sent >= 3  # it was still sending: trickling bytes do not buy time
    assert not cut.answer.startswith(b"HTTP/1.1 5"), cut


async def test_a_slow_request_body_gets_408_at_the_body_timeout(served: Served) -> None:
    before = dump(served.app[CONFIG].database)
    cut = await slow_client(served.port, *SLOW_BODY, give_up=CUT_BY + 2)
    assert cut.answer.startswith(b"HTTP/1.1 408 "), cut
    assert cut.answered_after is not None and \
        TIMEOUT * 0.8 <= cut.answered_after <= TIMEOUT + 1.0, cut
    assert cut.closed_after is not None and cut.closed_after <= CUT_BY, cut
    assert cut.bytes_sent >= 3
    assert dump(served.app[CONFIG].database) == before


async def test_a_slow_unsigned_relay_batch_is_refused_before_its_body(
        served: Served) -> None:
    """No body can make an unsigned hop request valid: it is refused from its headers,
    without waiting for the body timeout."""
    before = dump(served.app[CONFIG].database)
    cut = await slow_client(served.port, *SLOW_BATCH, give_up=CUT_BY + 2)
    assert cut.answer.startswith(b"HTTP/1.1 401 "), cut
    assert cut.answered_after is not None and cut.answered_after < TIMEOUT * 0.8, cut
    assert dump(served.app[CONFIG].database) == before


async def test_a_408_is_a_json_error_with_a_stable_code(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(challenge_head(10) + b"{")
    await writer.drain()
    async with asyncio.timeout(CUT_BY):
        answer = await reader.read()  # to the close
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ") and b"X-Request-Id" in head
    assert json.loads(body)["error"] == "body_timeout"


# --- legitimate clients meanwhile -------------------------------------------------------------


async def legit_latencies(port: int, seconds: float) -> list[float]:
    """Seconds per request of a legitimate client sending for ``seconds``: health checks
    and sign-in challenges (the latter read a body), each on a new connection."""
    url = f"http://127.0.0.1:{port}"
    times: list[float] = []
    connector = aiohttp.TCPConnector(force_close=True)
    end = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=10)) as http:
        for i in range(100_000):
            if time.monotonic() > end:
                break
            started = time.perf_counter()
            if i % 2:
                async with http.get(url + "/healthz") as r:
                    assert r.status == 200
                    await r.read()
            else:
                async with http.post(url + "/v1/session/challenge",
                                     json={"officer": "off-0000000000000000"}) as r:
                    assert r.status == 200, await r.text()
                    await r.read()
            times.append(time.perf_counter() - started)
    return times


async def test_legitimate_latency_holds_while_slow_clients_are_cut(served: Served) -> None:
    await legit_latencies(served.port, 0.3)  # warm up
    quiet = await legit_latencies(served.port, WINDOW)
    stop = asyncio.Event()
    cuts: list[Cut] = []

    async def keep_slow(i: int) -> None:
        """One slow client after another (each cut is replaced), so that SLOW_CLIENTS are
        connected throughout the measurement: heads and bodies, half each."""
        while not stop.is_set():
            head, body = (b"", SLOW_HEAD) if i % 2 else SLOW_BODY
            cuts.append(await slow_client(served.port, head, body, give_up=CUT_BY + 2))

    slow = [asyncio.create_task(keep_slow(i)) for i in range(SLOW_CLIENTS)]
    await asyncio.sleep(0.3)  # all connected and trickling
    busy = await legit_latencies(served.port, WINDOW)  # spans cuts and reconnections
    stop.set()
    await asyncio.wait_for(asyncio.gather(*slow), CUT_BY + 5)

    p50_quiet, p50_busy = statistics.median(quiet), statistics.median(busy)
    print(f"legitimate p50: {p50_quiet * 1000:.2f} ms alone, {p50_busy * 1000:.2f} ms with "
          f"{SLOW_CLIENTS} slow clients ({len(quiet)} and {len(busy)} requests); "
          f"{len(cuts)} slow clients cut")
    assert p50_busy <= max(3 * p50_quiet, p50_quiet + 0.05), (p50_quiet, p50_busy)
    assert len(cuts) >= SLOW_CLIENTS
    assert all(c.closed_after is not None and c.closed_after <= CUT_BY for c in cuts), \
        [c for c in cuts if c.closed_after is None or c.closed_after > CUT_BY][:3]


# --- the real `gateway run` -------------------------------------------------------------------


def test_gateway_run_cuts_slow_clients_with_its_configured_timeouts(tmp_path: Path) -> None:
    d = tmp_path / "gw"
    assert gateway_command("init", str(d), "--id", "vn-mps", "--port", "0",
                           "--insecure-dev-keys").returncode == 0
    config = d / "gateway.toml"
    text = config.read_text()
    config.write_text(text.replace("[server]\n", f"[server]\nheader_timeout_seconds = {TIMEOUT}"
                                   f"\nbody_timeout_seconds = {TIMEOUT}\n", 1))
    with ServerProcess.gateway(config) as server:
        port = server.port

        async def both() -> tuple[Cut, Cut]:
            return (await slow_client(port, b"", SLOW_HEAD, give_up=CUT_BY + 2),
                    await slow_client(port, *SLOW_BODY, give_up=CUT_BY + 2))
        head, body = asyncio.run(both())
        assert head.closed_after is not None and head.closed_after <= CUT_BY, head
        assert body.answer.startswith(b"HTTP/1.1 408 "), body


def test_server_settings_bound_the_head_and_the_lingering() -> None:
    assert server_settings(header_timeout=2.5, linger=0.5) == {
        "keepalive_timeout": 2.5, "lingering_time": 0.5, "auto_decompress": False}
    defaults = server_settings()
    assert 0 < defaults["keepalive_timeout"] <= 60 and 0 < defaults["lingering_time"] <= 10

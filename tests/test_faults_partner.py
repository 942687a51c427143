"""A partner that misbehaves: answers 500, hangs, or closes the connection mid-answer.

VN pins KH at the address of a raw asyncio HTTP/1.1 server written here, which either
forwards each request to the real KH gateway and its answer back ("pass"), or
misbehaves on every request:

* ``http_500``: answers 500 at once, without telling KH anything;
* ``hang``: reads the request and never answers (VN's ``request_timeout_seconds`` must
  cut it, and VN must back off);
* ``headers_then_close``: forwards the request (KH stores the batch), sends the answer's
  headers, and closes;
* ``half_body_then_close``: the same, with half of the answer's body.

While it misbehaves VN's officer keeps sending; the server counts every request and
connection over a window, which must show backoff (a bounded number of attempts, the
gaps growing), not a hot loop. Then it passes everything to the real KH: every message
is delivered exactly once, VN holds one receipt for each, and every failed attempt was
counted in ``fpg_relay_retries_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

import aiohttp
import pytest

from gateway.appkeys import METRICS
from gateway.federation.partners import FEDERATION_MESSAGES_PATH
from tests.helpers import (
    FAULT_FEDERATION,
    PRIORITIES,
    FaultGw,
    fault_gw,
    free_socket,
    officers,
    pin,
    started,
    stop_all,
    until,
)

WINDOW = 2.0  # seconds of misbehaviour over which attempts are counted
MESSAGES = 12


@dataclass
class Seen:
    at: float  # time.monotonic() when the request had been read
    method: str
    path: str
    mode: str


class MisbehavingPartner:
    """A raw HTTP/1.1 server on 127.0.0.1 standing where VN believes KH is."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.mode = "pass"
        self.sock = free_socket()
        self.requests: list[Seen] = []
        self.connections: list[float] = []  # when each was accepted
        self.cut_after: list[float] = []  # hang: seconds until the caller hung up
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
        self._server = await asyncio.start_server(self._serve, sock=self.sock)

    async def stop(self) -> None:
        assert self._server is not None and self._http is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        await self._http.close()

    def seen(self, since: float, until: float, path: str | None = None) -> list[Seen]:
        return [r for r in self.requests
                if since <= r.at < until and (path is None or r.path == path)]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.append(time.monotonic())
        self._writers.add(writer)
        try:
            while await self._one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # the caller hung up
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass  # KH is not there (not started yet): neither is the connection then
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read one request and answer it as the mode says; whether to read another."""
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            if value:
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        mode = self.mode
        self.requests.append(Seen(time.monotonic(), method, target.partition("?")[0], mode))
        if mode == "hang":  # never answer; wait (bounded) until the caller gives up
            start = time.monotonic()
            try:
                await asyncio.wait_for(reader.read(), 30)
            except TimeoutError:
                pass
            self.cut_after.append(time.monotonic() - start)
            return False
        if mode == "http_500":
            writer.write(_head(500, "application/json", 47)
                         + b'{"error":"internal","message":"internal error"}')
            await writer.drain()
            return True
        status, content_type, data = await self._forward(method, target, headers, body)
        if mode == "pass":
            writer.write(_head(status, content_type, len(data)) + data)
        elif mode == "headers_then_close":
            writer.write(_head(status, content_type, len(data)))
        elif mode == "half_body_then_close":
            writer.write(_head(status, content_type, len(data)) + data[: len(data) // 2])
        else:
            raise AssertionError(f"unknown mode {mode}")
        await writer.drain()
        return mode == "pass"

    async def _forward(self, method: str, target: str, headers: dict[str, str],
                       body: bytes) -> tuple[int, str, bytes]:
        assert self._http is not None
        passed = {k: v for k, v in headers.items()
                  if k not in ("host", "content-length", "connection", "transfer-encoding")}
        async with self._http.request(method, self.target + target, data=body or None,
                                      headers=passed) as answer:
            return (answer.status, answer.headers.get("Content-Type", "text/plain"),
                    await answer.read())


def _head(status: int, content_type: str, length: int) -> bytes:
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
            ).encode("latin-1")


@contextlib.asynccontextmanager
async def behind(target: FaultGw) -> AsyncIterator[MisbehavingPartner]:
    partner = MisbehavingPartner(target.url)
    await partner.start()
    try:
        yield partner
    finally:
        await partner.stop()


BAD_MODES = ("http_500", "hang", "headers_then_close", "half_body_then_close")


@pytest.mark.parametrize("mode", BAD_MODES)
async def test_a_misbehaving_partner_is_backed_off_and_loses_nothing(
        tmp_path: Path, http: aiohttp.ClientSession, mode: str) -> None:
    vn, kh = fault_gw(tmp_path, "vn-mps"), fault_gw(tmp_path, "kh-cnp")
    async with behind(kh) as partner:
        pin(vn, kh, url=partner.url)
        await started(vn, kh)
        try:
            await misbehave_then_recover(vn, kh, partner, mode, http)
        finally:
            await stop_all(vn, kh)


async def misbehave_then_recover(vn: FaultGw, kh: FaultGw, partner: MisbehavingPartner,
                                 mode: str, http: aiohttp.ClientSession) -> None:
    assert vn.app is not None
    a, k = await officers(vn, kh, http)  # through the partner passing everything
    retries = vn.app[METRICS].value("fpg_relay_retries_total", partner="kh-cnp")
    assert retries == 0
    partner.mode = mode
    start = time.monotonic()
    sent = []
    for i in range(MESSAGES):
        answer = await a.send("hotline", "anti-trafficking@kh-cnp",
                              {"type": "hotline", "text": f"#{i}"},
                              priority=PRIORITIES[i % 4])
        assert answer["status"] == "accepted"
        sent.append(answer["id"])
    await asyncio.sleep(start + WINDOW - time.monotonic())  # real time: attempts are counted
    end = time.monotonic()

    # Backoff, not a hot loop: a few attempts, further and further apart.
    posts = partner.seen(start, end, FEDERATION_MESSAGES_PATH)
    everything = partner.seen(start, end)
    connections = [c for c in partner.connections if start <= c < end]
    timeout = FAULT_FEDERATION["request_timeout_seconds"]
    assert 2 <= len(posts) <= (4 if mode == "hang" else 10), [p.at - start for p in posts]
    # besides the batches, the partner is only probed every health_seconds
    assert len(everything) - len(posts) <= WINDOW / FAULT_FEDERATION["health_seconds"] + 2
    assert len(connections) <= len(everything)
    gaps = [b.at - a.at for a, b in itertools.pairwise(posts)]
    if mode == "hang":  # each attempt was cut by the timeout, then VN waited before the next
        assert all(timeout * 0.8 <= cut <= timeout + 1.0 for cut in partner.cut_after)
        assert all(gap >= timeout for gap in gaps)
    else:
        # The n-th wait is at least half of min(max, first * 2**(n-1)) whatever the jitter
        # drew, so the floor below is certain; a sender woken early by new messages breaks it.
        first, most = FAULT_FEDERATION["retry_first_seconds"], FAULT_FEDERATION["retry_max_seconds"]
        floors = [min(most, first * 2 ** n) / 2 for n in range(len(gaps))]
        short = [(gap, floor) for gap, floor in zip(gaps, floors, strict=True)
                 if gap < floor * 0.95]
        assert not short, (gaps, floors)
    assert vn.rows("SELECT COUNT(*) FROM outbox") == [(MESSAGES,)]  # nothing receipted
    (failures, error), = vn.rows("SELECT failures, last_error FROM partner_state")
    assert failures >= 2 and error.startswith("kh-cnp")
    if mode == "hang":
        assert error == f"kh-cnp did not answer within {timeout:g} s"
    if mode in ("http_500", "hang"):  # KH never heard of them
        assert kh.rows("SELECT COUNT(*) FROM messages") == [(0,)]

    partner.mode = "pass"  # now KH answers, through the same address
    await until(lambda: vn.rows("SELECT COUNT(*) FROM outbox") == [(0,)], "the drain", 20)
    arrived = [r[0] for r in kh.rows(
        "SELECT message_id FROM inbox WHERE desk = 'anti-trafficking@kh-cnp'")]
    assert len(arrived) == len(set(arrived)) == MESSAGES  # none duplicated
    assert set(arrived) == set(sent)  # none lost
    assert kh.rows("SELECT COUNT(*) FROM messages") == [(MESSAGES,)]
    receipts = dict(vn.rows("SELECT outcome, COUNT(*) FROM receipts GROUP BY outcome"))
    assert sum(receipts.values()) == MESSAGES and set(receipts) <= {"accepted", "duplicate"}
    if mode in ("headers_then_close", "half_body_then_close"):
        assert receipts.get("duplicate", 0) >= 1  # KH had stored what VN never heard of
    failed = [r for r in partner.requests
              if r.path == FEDERATION_MESSAGES_PATH and r.mode != "pass"]
    assert vn.app[METRICS].value("fpg_relay_retries_total", partner="kh-cnp") == len(failed)
    await until(lambda: vn.rows("SELECT failures FROM partner_state") == [(0,)],
                "the retry state to be cleared")
    inbox = await k.inbox("anti-trafficking")
    assert sorted(m["id"] for m in inbox["messages"]) == sorted(sent)

"""A lean HTTP/1.1 keep-alive client for load generation, and only for that.

The benchmarks share the machine's cores with the server they drive, so every
microsecond the generator spends is taken from the server. ``aiohttp``'s client costs
about as much per request as a trivial aiohttp handler; this one writes request bytes
built before the clock starts and reads ``Content-Length`` answers on a plain asyncio
protocol, one request at a time per connection (no pipelining). It understands exactly
what the benchmarked servers answer: a status line, headers with ``Content-Length``, a
body. Anything else (chunked bodies, a closed connection) is an error the caller counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping


class ResponseError(Exception):
    """The server answered something this client does not read, or closed the connection."""


def request_bytes(method: str, host: str, port: int, path: str, headers: Mapping[str, str],
                  body: bytes) -> bytes:
    """One complete HTTP/1.1 request, ready to write."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection(asyncio.Protocol):
    """One keep-alive connection; ``await conn.send(data)`` gives ``(status, body)``."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._transport: asyncio.Transport | None = None
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(cls, host, port)
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ResponseError(f"connection closed ({exc or 'by the server'})"))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def send(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        if self.closed or self._transport is None:
            raise ResponseError("connection closed")
        if self._waiter is not None and not self._waiter.done():
            raise RuntimeError("one request at a time per connection")
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(data)
        return self._waiter

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            self._parse()
        except (ValueError, ResponseError) as exc:
            self._fail(ResponseError(f"cannot read the answer: {exc}"))
            self.close()

    def _parse(self) -> None:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        lines = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                raise ResponseError(f"Transfer-Encoding {value.strip()} is not read here")
        if length is None:
            raise ResponseError("no Content-Length")
        total = end + 4 + length
        if len(self._buffer) < total:
            return
        body = bytes(self._buffer[end + 4:total])
        del self._buffer[:total]
        if self._waiter is None or self._waiter.done():
            raise ResponseError("an answer nobody asked for")
        self._waiter.set_result((status, body))

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

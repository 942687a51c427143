"""Bodies from outside are read whole, up to a limit (gateway/httpbody.py)."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp.base_protocol import BaseProtocol

from gateway.httpbody import read_at_most


def stream_of(*pieces: bytes) -> aiohttp.StreamReader:
    loop = asyncio.get_running_loop()
    stream = aiohttp.StreamReader(BaseProtocol(loop), 2**16, loop=loop)
    for piece in pieces:
        stream.feed_data(piece)
    stream.feed_eof()
    return stream


async def test_read_at_most_reads_every_piece_and_refuses_too_much() -> None:
    """Regression: one StreamReader.read(n) returned only the first piece of a large relay
    batch (a bad signature over half a body) or of a partner's answer."""
    assert await read_at_most(stream_of(b"a" * 10, b"b" * 10, b"c"), 21) == b"a" * 10 + \
        b"b" * 10 + b"c"
    assert await read_at_most(stream_of(b"a" * 10, b"b" * 10, b"c"), 20) is None
    assert await read_at_most(stream_of(), 5) == b""

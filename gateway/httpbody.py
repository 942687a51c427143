"""Reading HTTP bodies from outside with a size limit, whole.

``StreamReader.read(n)`` returns what has arrived so far, up to ``n`` bytes: a large body
comes in several pieces, so one call is never enough. These read to the end, and stop as
soon as more than the limit has arrived.
"""

from __future__ import annotations

import aiohttp
from aiohttp import web

from gateway.errors import TooLargeError

_PIECE = 1 << 16


async def read_at_most(stream: aiohttp.StreamReader, limit: int) -> bytes | None:
    """The whole body of ``stream``, or None if it is longer than ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(min(_PIECE, limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return None
    return b"".join(chunks)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, refused with 413 from its declared length before reading it."""
    length = request.content_length
    if length is not None and length > limit:
        raise TooLargeError(f"request body of {length} bytes exceeds the limit of {limit}")
    body = await read_at_most(request.content, limit)
    if body is None:
        raise TooLargeError(f"request body exceeds the limit of {limit} bytes")
    return body

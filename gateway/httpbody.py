"""Reading HTTP bodies from outside with a size limit and a time limit, whole.

``StreamReader.read(n)`` returns what has arrived so far, up to ``n`` bytes: a large body
comes in several pieces, so one call is never enough. These read to the end, and stop as
soon as more than the limit has arrived.

A client that sends its body slowly (one byte every few seconds: "slowloris") would hold
a handler, its buffers and a connection for as long as it likes: :func:`read_body` gives
the whole body a deadline (``BODY_TIMEOUT`` on the application, set from
``[server] body_timeout_seconds``) and answers 408 when it passes. The request head has
its own deadline, a server setting: :func:`server_settings` gives the keyword arguments
for ``web.AppRunner`` (aiohttp closes a connection that has not sent a whole request head
``keepalive_timeout`` seconds after it opened or after its last answer). They also turn off
aiohttp's decoding of ``Content-Encoding``: no client of the gateway compresses, hop
signatures cover the bytes as sent, and an encoding aiohttp cannot decode would otherwise be
refused before the application sees the request (a plain-text 400, no error code).

A body that cannot be decoded (``Content-Encoding: gzip`` over bytes that are not gzip) and
a client that goes away in the middle of its body are refusals with their own codes, not
internal errors.
"""

from __future__ import annotations

import asyncio
from typing import TypedDict

import aiohttp
from aiohttp import web

from gateway.errors import BodyTimeoutError, ClientError, TooLargeError

_PIECE = 1 << 16

#: Seconds a client has to send a whole request body (application setting).
BODY_TIMEOUT = web.AppKey("body_timeout_seconds", float)
DEFAULT_BODY_TIMEOUT_SECONDS = 120.0
#: Seconds a connection has to send a whole request head (server setting).
DEFAULT_HEADER_TIMEOUT_SECONDS = 15.0
#: Seconds the rest of a refused body is still read (and dropped) so that the client
#: sees the answer before the connection closes.
DEFAULT_LINGER_SECONDS = 2.0


class ServerSettings(TypedDict):
    keepalive_timeout: float
    lingering_time: float
    auto_decompress: bool


def server_settings(header_timeout: float = DEFAULT_HEADER_TIMEOUT_SECONDS,
                    linger: float = DEFAULT_LINGER_SECONDS) -> ServerSettings:
    """Keyword arguments for ``web.AppRunner`` bounding how long a client may take, and
    reading bodies as they are sent."""
    return {"keepalive_timeout": header_timeout, "lingering_time": linger,
            "auto_decompress": False}


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
    """The request body, refused with 413 from its declared length before reading it, or
    as soon as more than ``limit`` bytes arrived; 408 if it is not whole in time."""
    length = request.content_length
    if length is not None and length > limit:
        raise TooLargeError(f"request body of {length} bytes exceeds the limit of {limit}")
    seconds = request.app.get(BODY_TIMEOUT, DEFAULT_BODY_TIMEOUT_SECONDS)
    stream = request.content
    try:
        if stream.is_eof():
            # The whole body is here already (a small one comes with the head): reading
            # it cannot wait, so it needs no deadline (a timer per request, saved).
            body = await read_at_most(stream, limit)
        else:
            async with asyncio.timeout(seconds):
                body = await read_at_most(stream, limit)
    except TimeoutError:
        raise BodyTimeoutError(f"the request body did not arrive within {seconds:g} seconds"
                               ) from None
    except web.RequestPayloadError:
        raise ClientError("the request body cannot be decoded (its Content-Encoding or "
                          "framing is broken)", code="bad_body") from None
    except ConnectionResetError:  # the answer will not reach it: this is for the log
        raise ClientError("the client went away before its body was whole",
                          code="client_gone") from None
    if body is None:
        raise TooLargeError(f"request body exceeds the limit of {limit} bytes")
    return body

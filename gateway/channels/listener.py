"""The gateway's listening socket: connections capped in total and per client address,
the process's descriptor limit raised, and accept failures logged at a bounded rate.

Every connection costs a file descriptor and a little memory until it closes, whether or
not it ever sends a request; aiohttp closes one that sends no whole request head within
``[server] header_timeout_seconds``, but until then a client with many addresses, or a
few with patience, could hold every descriptor the process may open, and nobody else
would be answered. :class:`ConnectionCaps` counts open connections in total and per
client address; :class:`CappedSite` listens with a protocol factory that closes a
connection past either cap as soon as it is accepted, before reading anything (an abort:
no answer, nothing buffered), and counts it by the cap that refused it (``total`` or
``per_address``: ``fpg_refused_connections_total{reason}``). Under TLS a connection is
counted once its handshake is over; the handshake has the same deadline as a request head.

A process that runs out of descriptors anyway fails in ``accept()``: asyncio then logs
``socket.accept() out of system resource`` for every connection waiting, with a traceback,
and retries a second later, which came to 12,000 log lines in ten seconds.
:class:`AcceptErrorLog`, the event loop's exception handler, lets one such line through per
``every`` seconds with the count of those it held back; anything else goes on to the
handler that was there before. :func:`raise_descriptor_limit` raises the soft limit on
descriptors to the hard one at start, so that the caps, not the limit, are what bites.
"""

from __future__ import annotations

import asyncio
import resource
import ssl
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

from gateway.channels.addresses import limit_key

log = structlog.get_logger("gateway.listener")

ACCEPT_ERROR = "socket.accept() out of system resource"  # asyncio's message
ACCEPT_LOG_EVERY = 10.0  # seconds between two lines about failing accepts
#: Descriptors kept for what is not a client connection: the database, the log, the
#: partners' connections, the admin socket, the metrics listener.
DESCRIPTOR_RESERVE = 128
NR_OPEN = 1_048_576  # Linux's default ceiling, when the hard limit says "unlimited"


#: Why a connection was refused: the cap it met (the reason label of the metric).
REFUSED_TOTAL, REFUSED_PER_ADDRESS = "total", "per_address"
REFUSED_REASONS = (REFUSED_TOTAL, REFUSED_PER_ADDRESS)


class ConnectionCaps:
    """How many connections are open, in total and per client address, and whether one
    more may be; ``refused(reason)`` is called for each connection refused."""

    def __init__(self, total: int, per_address: int,
                 refused: Callable[[str], object] | None = None) -> None:
        self.total, self.per_address = total, per_address
        self.open = 0
        self.refused = 0
        self._on_refused = refused
        self._by_address: dict[str, int] = {}

    def admit(self, address: str) -> bool:
        held = self._by_address.get(address, 0)
        if self.open >= self.total or held >= self.per_address:
            self.refused += 1
            if self._on_refused is not None:
                self._on_refused(REFUSED_TOTAL if self.open >= self.total
                                 else REFUSED_PER_ADDRESS)
            return False
        self._by_address[address] = held + 1
        self.open += 1
        return True

    def release(self, address: str) -> None:
        self.open -= 1
        held = self._by_address[address] - 1
        if held:
            self._by_address[address] = held
        else:
            del self._by_address[address]

    def factory(self, make: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``create_server``: ``make()``'s protocols, behind the caps."""
        return lambda: _Capped(self, make)


class _Capped(asyncio.Protocol):
    """One connection: refused at once past the caps, else handed to the protocol ``make``
    builds (aiohttp's request handler), which sees every event of the transport."""

    __slots__ = ("address", "caps", "inner", "make")

    def __init__(self, caps: ConnectionCaps, make: Callable[[], asyncio.Protocol]) -> None:
        self.caps, self.make = caps, make
        self.inner: asyncio.Protocol | None = None
        self.address = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        # IPv6 counted by its /64: one host is given a whole /64 (addresses.limit_key).
        address = limit_key(str(peer[0])) if isinstance(peer, tuple) and peer else ""
        if not self.caps.admit(address):
            assert isinstance(transport, asyncio.Transport)
            transport.abort()  # nothing read, nothing answered: the descriptor is freed now
            return
        self.address = address
        self.inner = self.make()
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inner is not None:
            self.caps.release(self.address)
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self.inner is None else self.inner.eof_received()

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


class CappedSite(web.BaseSite):
    """A TCP site of ``runner`` whose connections pass through ``caps``."""

    __slots__ = ("_caps", "_handshake_seconds", "_host", "_port")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, caps: ConnectionCaps, *,
                 ssl_context: ssl.SSLContext | None = None,
                 handshake_seconds: float = 15.0) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host, self._port, self._caps = host, port, caps
        self._handshake_seconds = handshake_seconds

    @property
    def name(self) -> str:
        return f"{'https' if self._ssl_context else 'http'}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._caps.factory(server), self._host, self._port, backlog=self._backlog,
            ssl=self._ssl_context,
            ssl_handshake_timeout=None if self._ssl_context is None else self._handshake_seconds)


class AcceptErrorLog:
    """An event loop exception handler: at most one line per ``every`` seconds about
    failing accepts, with how many it held back since the last; the rest goes on to the
    handler installed before it (asyncio's default if none)."""

    def __init__(self, every: float = ACCEPT_LOG_EVERY,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.every, self.now = every, now
        self.held_back = 0
        self._next_at: float | None = None
        self._previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None
        self._previous = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        self._previous = loop.get_exception_handler()
        loop.set_exception_handler(self)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != ACCEPT_ERROR:
            if self._previous is not None:
                self._previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        now = self.now()
        if self._next_at is not None and now < self._next_at:
            self.held_back += 1
            return
        log.error("accept_failed", message=ACCEPT_ERROR, error=str(context.get("exception")),
                  held_back=self.held_back, every_seconds=self.every)
        self.held_back, self._next_at = 0, now + self.every


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise the soft limit on open descriptors to the hard one; the limits before and
    after (logged)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = NR_OPEN if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= want:
        log.info("descriptor_limit", soft=soft, hard=hard, raised_from=None)
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError) as exc:
        log.warning("descriptor_limit_not_raised", soft=soft, hard=hard, error=str(exc))
        return soft, soft
    log.info("descriptor_limit", soft=want, hard=hard, raised_from=soft)
    return soft, want

"""Which ``Host`` a request may name: the host of this gateway's public URL, loopback
names, and the operator's ``server.allowed_hosts``. A web page on another site that
rebinds its own name to this gateway's address (DNS rebinding) reaches it with its own
name as Host, and is refused ``421 unknown_host`` before any handler runs."""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Middleware
from yarl import URL

from gateway.channels.errors import Handler
from gateway.config import is_loopback
from gateway.errors import MisdirectedError

# Names of loopback beyond what config.is_loopback knows (which a Host header may carry).
LOOPBACK_ALIASES = frozenset({"localhost.localdomain", "ip6-localhost"})


def host_name(host_header: str) -> str | None:
    """The name in a Host header, lower case, without port or IPv6 brackets."""
    try:
        name = URL(f"http://{host_header}").host
    except ValueError:
        return None
    return name.lower().rstrip(".") if name else None


def host_middleware(allowed: Iterable[str]) -> Middleware:
    """The middleware that refuses any other Host than ``allowed`` (names) or loopback."""
    names = frozenset(name.lower().rstrip(".") for name in allowed)

    @web.middleware
    async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get("Host", "")
        name = host_name(given)
        if name is None or not (name in names or name in LOOPBACK_ALIASES
                                or is_loopback(name)):
            raise MisdirectedError(f"this gateway does not answer to {given[:100]!r}")
        return await handler(request)

    return check_host

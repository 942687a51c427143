"""Who a request comes from, for rate limits and audit lines.

The peer's address, unless the peer is one of ``server.trusted_proxies``: then the
nearest address in ``X-Forwarded-For`` that is not a trusted proxy (each proxy appends
the address it was called from, so the entries left of the last untrusted one are the
client's word and count for nothing). Limits key IPv6 addresses by their /64: one host
is given a whole /64 and could otherwise walk through it, one address per request.
"""

from __future__ import annotations

import functools
import ipaddress

from aiohttp import web

from gateway.appkeys import CONFIG

MAX_FORWARDED = 32  # hops of X-Forwarded-For looked at, nearest first

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(request: web.Request) -> str:
    """The client's address as text (``unknown`` if the peer has none, e.g. a socket)."""
    peer = _address(request.remote or "")
    if peer is None:
        return "unknown"
    trusted = _networks(request.app[CONFIG].server.trusted_proxies)
    if not any(peer in net for net in trusted):
        return str(peer)
    hops = [h for value in request.headers.getall("X-Forwarded-For", [])
            for h in value.split(",")][-MAX_FORWARDED:]
    nearest = peer
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # garbled: trust nothing further out
        nearest = address
        if not any(address in net for net in trusted):
            break
    return str(nearest)


def limit_key(address: str) -> str:
    """What a per-address limit counts under: IPv4 as is, IPv6 by its /64."""
    parsed = _address(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed) if parsed is not None else address

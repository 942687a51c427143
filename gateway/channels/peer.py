"""The peer channel: what partner gateways fetch from and send to this gateway.

So far it serves the signed descriptor at ``/.well-known/fpg/descriptor``. Hop requests,
batches and receipts arrive here with the federation work.
"""

from __future__ import annotations

from aiohttp import web

from gateway.appkeys import CLOCK, CONFIG, IDENTITY
from gateway.descriptor import DEFAULT_VALIDITY_MS, DESCRIPTOR_PATH, Descriptor, sign_descriptor

DESCRIPTOR_MEDIA_TYPE = "text/plain; charset=utf-8"


async def get_descriptor(request: web.Request) -> web.Response:
    config, identity = request.app[CONFIG], request.app[IDENTITY]
    now = request.app[CLOCK].now_ms()
    descriptor = Descriptor(
        gateway=identity.gateway_id,
        base_url=config.gateway.public_url,
        signing_key=identity.signing_key.public,
        ledger_origin=config.gateway.ledger_origin,
        issued=now,
        valid_until=now + DEFAULT_VALIDITY_MS,
    )
    body = sign_descriptor(descriptor, identity.signing_key)
    return web.Response(body=body, headers={"Content-Type": DESCRIPTOR_MEDIA_TYPE})


def add_routes(app: web.Application) -> None:
    app.router.add_get(DESCRIPTOR_PATH, get_descriptor)

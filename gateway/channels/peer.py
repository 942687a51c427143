"""The peer channel: what partner gateways fetch from and send to this gateway.

It serves the signed descriptor at ``/.well-known/fpg/descriptor`` and the ledger's
latest signed checkpoint and Merkle proofs under ``/v1/ledger/`` (hashes only: nothing
there reveals an entry). Hop requests, batches and receipts arrive here with the
federation work.
"""

from __future__ import annotations

import base64
import re

from aiohttp import web

from gateway.appkeys import CLOCK, CONFIG, IDENTITY, LEDGER, PARTNERS, STORE
from gateway.crypto.envelope import OPTIONAL_FIELDS
from gateway.errors import ClientError, LedgerError, NotFoundError, UnavailableError
from gateway.protocol.descriptor import (
    DEFAULT_VALIDITY_MS,
    DESCRIPTOR_PATH,
    Descriptor,
    Limits,
    sign_descriptor,
)

DESCRIPTOR_MEDIA_TYPE = "text/plain; charset=utf-8"
_DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII digits only: str.isdigit() accepts others


async def get_descriptor(request: web.Request) -> web.Response:
    """This gateway's descriptor, freshly signed; with ``?gateway=ID`` a partner's, as the
    partner signed it when it last answered (for officers' clients, docs/PROTOCOL.md
    10.3): 404 ``unknown_gateway`` for no partner, 503 until it has answered once."""
    config, identity = request.app[CONFIG], request.app[IDENTITY]
    gateway = request.query.get("gateway", identity.gateway_id)
    if gateway != identity.gateway_id:
        partner = request.app[PARTNERS].require(gateway)
        if partner.descriptor_note is None:
            raise UnavailableError(f"{gateway} has not answered since this gateway started",
                                   code="partner_unavailable")
        return web.Response(body=partner.descriptor_note,
                            headers={"Content-Type": DESCRIPTOR_MEDIA_TYPE})
    now = request.app[CLOCK].now_ms()
    descriptor = Descriptor(
        gateway=identity.gateway_id,
        base_url=config.gateway.public_url,
        signing_key=identity.signing_key.public,
        ledger_origin=config.gateway.ledger_origin,
        issued=now,
        valid_until=now + DEFAULT_VALIDITY_MS,
        key_history=identity.history,
        limits=Limits(envelope_bytes=config.server.max_body_bytes,
                      batch_bytes=config.federation.batch_bytes),
        header_fields=frozenset(OPTIONAL_FIELDS),
    )
    body = sign_descriptor(descriptor, identity.signing_key)
    return web.Response(body=body, headers={"Content-Type": DESCRIPTOR_MEDIA_TYPE})




def _int_param(request: web.Request, name: str) -> int:
    value = request.query.get(name, "")
    if not _DIGITS.fullmatch(value):
        raise ClientError(f"query parameter {name} must be a non-negative integer",
                          code="bad_parameter")
    return int(value)


async def get_checkpoint(request: web.Request) -> web.Response:
    latest = await request.app[STORE].latest_checkpoint()
    if latest is None:
        raise NotFoundError("no checkpoint yet", code="no_checkpoint")
    return web.Response(body=latest.note, headers={"Content-Type": DESCRIPTOR_MEDIA_TYPE})


def _b64(hashes: list[bytes]) -> list[str]:
    return [base64.b64encode(h).decode("ascii") for h in hashes]


async def _proof(request: web.Request, first: str, second: str) -> web.Response:
    """Answer a proof request named by two size/index query parameters."""
    ledger = request.app[LEDGER]
    a, b = _int_param(request, first), _int_param(request, second)
    make = ledger.inclusion_proof if first == "index" else ledger.consistency_proof
    try:
        proof = await make(a, b)
    except LedgerError as exc:
        raise ClientError(exc.message, code="bad_proof_request") from None
    return web.json_response({first: a, second: b, "proof": _b64(proof)})


async def get_inclusion_proof(request: web.Request) -> web.Response:
    return await _proof(request, "index", "size")


async def get_consistency_proof(request: web.Request) -> web.Response:
    return await _proof(request, "old", "new")


def add_routes(app: web.Application) -> None:
    app.router.add_get(DESCRIPTOR_PATH, get_descriptor)
    app.router.add_get("/v1/ledger/checkpoint", get_checkpoint)
    app.router.add_get("/v1/ledger/proof/inclusion", get_inclusion_proof)
    app.router.add_get("/v1/ledger/proof/consistency", get_consistency_proof)

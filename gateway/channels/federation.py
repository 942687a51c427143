"""The federation channel: what partner gateways call, each call a signed hop request.

``POST /v1/federation/messages`` takes a relay batch and answers one signed receipt per
message; ``POST /v1/federation/reads`` takes partner officers' read acknowledgements of
messages this gateway relayed; ``GET /v1/federation/directory`` gives this gateway's
signed desk directory to a partner (officer keys and bindings are for partners, not for
the public), ``GET /v1/federation/desks/{desk}/proofs`` its desks' membership proofs,
``GET /v1/federation/exchanged`` what it exchanged with the caller (reconciliation).
A request whose hop signature does not verify is refused (401/403) before anything is
read into the store; one that no body could make valid (no partner's, stale, replayed) is
refused before its body is read.
"""

from __future__ import annotations

from aiohttp import web

from gateway.appkeys import CONFIG, DIRECTORY, HOP, IDENTITY, LEDGER, PARTNERS, RECEIVER, STORE
from gateway.channels.client import _int_query
from gateway.crypto.keys import VerifyKey
from gateway.errors import UnsupportedMediaError
from gateway.federation.partners import (
    FEDERATION_DIRECTORY_PATH,
    FEDERATION_EXCHANGED_PATH,
    FEDERATION_MESSAGES_PATH,
    FEDERATION_PROOFS_PATH,
    FEDERATION_READS_PATH,
    Partner,
)
from gateway.federation.receiver import BATCH_MEDIA_TYPE, READS_MEDIA_TYPE
from gateway.federation.reconcile import MAX_LISTED, exchanged_json
from gateway.httpbody import read_body
from gateway.officers.proofs import membership_proofs
from gateway.protocol.membership import MAX_TREE_SIZE

DIRECTORY_MEDIA_TYPE = "text/plain; charset=utf-8"


async def _authenticated(request: web.Request,
                         limit: int) -> tuple[str, VerifyKey, bytes]:
    """The calling partner's id, its key and the body (at most ``limit`` bytes), after its
    hop signature verified; a request no body could make valid is refused unread."""
    hop = request.app[HOP]
    hop.precheck(request.headers)
    body = await read_body(request, limit)
    caller, key = await hop.authenticate(request.method, request.path_qs,
                                         request.headers, body)
    return caller, key, body


async def _partner_post(request: web.Request, media_type: str,
                        what: str) -> tuple[Partner, VerifyKey, bytes]:
    """The calling partner, the key it signed with, and the body, of a hop-signed POST of
    ``media_type`` (at most ``batch_bytes``)."""
    caller, key, body = await _authenticated(request,
                                             request.app[CONFIG].federation.batch_bytes)
    if request.content_type != media_type:
        raise UnsupportedMediaError(f"{what} {media_type}", code="unsupported_media_type")
    partner = request.app[PARTNERS].get(caller)
    assert partner is not None  # the hop check admits partners only
    return partner, key, body


async def post_messages(request: web.Request) -> web.Response:
    partner, key, body = await _partner_post(request, BATCH_MEDIA_TYPE, "a relay batch is")
    receipts, senders = await request.app[RECEIVER].receive(partner, key, body)
    await request.app[PARTNERS].learn_officers(partner, senders)
    return web.json_response({"receipts": receipts})


async def post_reads(request: web.Request) -> web.Response:
    partner, key, body = await _partner_post(request, READS_MEDIA_TYPE,
                                             "read acknowledgements are")
    results = await request.app[RECEIVER].receive_reads(partner, key, body)
    return web.json_response({"results": results})


async def get_directory(request: web.Request) -> web.Response:
    # A hop-signed GET has an empty body: read it like any other (size and time bounded).
    await _authenticated(request, 0)
    directory = await request.app[DIRECTORY].get()
    return web.Response(body=directory.signed(request.app[IDENTITY].signing_key),
                        headers={"Content-Type": DIRECTORY_MEDIA_TYPE})


async def get_proofs(request: web.Request) -> web.Response:
    """A desk's membership proofs, for a partner's officers (docs/PROTOCOL.md 7.8)."""
    await _authenticated(request, 0)
    known = _int_query(request, "known", 0, MAX_TREE_SIZE)
    app = request.app
    return web.json_response(await membership_proofs(app[LEDGER], app[STORE], app[DIRECTORY],
                                                     request.match_info["desk"], known))


async def get_exchanged(request: web.Request) -> web.Response:
    """What this gateway and the calling partner exchanged in a window (reconciliation,
    docs/PROTOCOL.md 10.11): only the caller's own messages, ids, digests and states."""
    caller, _, _ = await _authenticated(request, 0)
    since = _int_query(request, "since", 0, 2**53)
    until = _int_query(request, "until", 2**53, 2**53)
    exchanged = await request.app[STORE].exchanged(caller, since, until, MAX_LISTED)
    return web.json_response(exchanged_json(request.app[IDENTITY].gateway_id, caller, since,
                                            until, exchanged))


def add_routes(app: web.Application) -> None:
    app.router.add_post(FEDERATION_MESSAGES_PATH, post_messages)
    app.router.add_post(FEDERATION_READS_PATH, post_reads)
    app.router.add_get(FEDERATION_DIRECTORY_PATH, get_directory)
    app.router.add_get(FEDERATION_PROOFS_PATH, get_proofs)
    app.router.add_get(FEDERATION_EXCHANGED_PATH, get_exchanged)

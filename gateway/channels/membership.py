"""The officers' API for desk membership (docs/openapi.yaml, tag ``desks``).

``GET /v1/desks/{desk}/members``: the desk's members with who admitted each and when, and
the officers waiting to join, with their public keys (for the safety code); for members of
the desk and of its supervisor desk. ``POST /v1/desks/{desk}/admissions``: a member's
signed admission of a waiting officer (gateway.officers.admission checks it).
``GET /v1/desks/{desk}/proofs``: the ledger's proof of each member's admission.
"""

from __future__ import annotations

from aiohttp import web

from gateway.appkeys import CLOCK, CONFIG, DELIVERY, DIRECTORY, IDENTITY, LEDGER, PARTNERS, STORE
from gateway.channels.addresses import client_address
from gateway.channels.client import _field, _int_query, read_json, signed_in
from gateway.errors import ERRORS, ForbiddenError, NotFoundError
from gateway.officers import audit
from gateway.officers.admission import admit, may_see, pending
from gateway.officers.directory import Directory, Officer
from gateway.officers.history import keep_shares
from gateway.officers.proofs import membership_proofs
from gateway.protocol.membership import MAX_TREE_SIZE


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/desks/{desk}/members", get_members)
    app.router.add_post("/v1/desks/{desk}/admissions", post_admission)
    app.router.add_get("/v1/desks/{desk}/notices", get_notices)
    app.router.add_post("/v1/desks/{desk}/shares", post_shares)
    app.router.add_get("/v1/messages/{id}/share", get_share)
    app.router.add_get("/v1/desks/{desk}/proofs", get_proofs)


async def get_proofs(request: web.Request) -> web.Response:
    """The desk's membership proofs (docs/PROTOCOL.md 7.8), for any signed-in officer who
    may seal for it: a partner's desk's come from the partner, passed on unchanged (and
kept for when it does not answer)."""
    await signed_in(request)
    desk = request.match_info["desk"]
    known = _int_query(request, "known", 0, MAX_TREE_SIZE)
    app = request.app
    gateway = desk.partition("@")[2]
    if gateway != app[IDENTITY].gateway_id:
        body = await app[PARTNERS].membership_proofs(app[PARTNERS].require(gateway), desk,
                                                     known)
        return web.Response(body=body, content_type="application/json")
    return web.json_response(await membership_proofs(app[LEDGER], app[STORE], app[DIRECTORY],
                                                     desk, known))


async def post_shares(request: web.Request) -> web.Response:
    """A member's history shares for an officer who joined the desk after the messages."""
    officer, desk, directory = await _desk(request)
    doc = await read_json(request)
    app = request.app
    added = await keep_shares(app[STORE], directory, officer, desk, _field(doc, "officer", str),
                              _field(doc, "shares", list), app[CLOCK].now_ms(),
                              int(app[CONFIG].officers.clock_skew_seconds * 1000))
    return web.json_response({"desk": desk, "officer": doc["officer"], "stored": added},
                             status=201)


async def get_share(request: web.Request) -> web.Response:
    """The officer's share of a message sent to its desk before it joined (404 none)."""
    officer = await signed_in(request)
    message = await request.app[DELIVERY].fetch(officer, request.match_info["id"])
    share = await request.app[STORE].share_for(message.id, officer.id)
    if share is None:
        raise NotFoundError("nobody shared this message's key with you", code="no_share")
    return web.json_response(share.to_json())


async def get_notices(request: web.Request) -> web.Response:
    """The desk's membership notices after cursor ``after``, oldest first."""
    officer, desk, directory = await _desk(request)
    _check_sees(officer, directory, desk)
    page = request.app[CONFIG].limits.inbox_page
    after = _int_query(request, "after", 0, 10**18 - 1)
    limit = _int_query(request, "limit", page, page) or page
    notices = await request.app[STORE].desk_notices(desk.partition("@")[0], after, limit)
    gateway = desk.partition("@")[2]
    return web.json_response({
        "desk": desk,
        "notices": [n.to_json(gateway) for n in notices],
        "next": notices[-1].seq if len(notices) == limit else None,
    })


async def get_members(request: web.Request) -> web.Response:
    officer, desk, directory = await _desk(request)
    _check_sees(officer, directory, desk)
    entry = directory.desks[desk]
    now = request.app[CLOCK].now_ms()
    return web.json_response({
        "desk": desk,
        "supervisor": entry.supervisor,
        "members": [
            {"officer": o.id, "sign_key_id": o.sign_key.key_id, "enc_key_id": o.enc_key.key_id,
             "admitted_by": o.admissions[desk].by, "admitted_at": o.admissions[desk].at,
             "not_after": o.not_after}
            for o in entry.members
        ],
        "pending": [
            {"officer": o.id, "sign_key": o.sign_key.b64(), "enc_key": o.enc_key.b64(),
             "since": o.not_before, "not_after": o.not_after}
            for o in pending(directory, desk, now)
        ],
    })


async def post_admission(request: web.Request) -> web.Response:
    officer, desk, directory = await _desk(request)
    app, claimed = request.app, None
    try:
        doc = await read_json(request)
        claimed = doc.get("officer")
        row = await admit(app[STORE], directory, officer, desk, _field(doc, "officer", str),
                          _field(doc, "at", int), _field(doc, "signature", str),
                          app[CLOCK].now_ms(),
                          int(app[CONFIG].officers.clock_skew_seconds * 1000))
    except ERRORS as exc:
        audit.admission_refused(client_address(request), officer.id, claimed, desk, exc.code)
        raise
    audit.admitted(client_address(request), doc["officer"], desk, officer.id)
    await app[DIRECTORY].reload()
    return web.json_response({"desk": desk, "officer": doc["officer"], "admitted_by": officer.id,
                              "admitted_at": row.admitted_ms}, status=201)


async def _desk(request: web.Request) -> tuple[Officer, str, Directory]:
    """The signed-in officer, and the desk of the path, which must exist here."""
    officer = await signed_in(request)
    desk, directory = request.match_info["desk"], await request.app[DIRECTORY].get()
    if directory.desk(desk) is None:
        raise NotFoundError(f"no desk {desk[:100]!r} on this gateway", code="unknown_desk")
    return officer, desk, directory


def _check_sees(officer: Officer, directory: Directory, desk: str) -> None:
    if not may_see(officer, directory, desk):
        raise ForbiddenError(f"only members of {desk} or of its supervisor desk see its "
                             "membership", code="not_a_member")

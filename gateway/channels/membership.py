"""The officers' API for desk membership (docs/openapi.yaml, tag ``desks``).

``GET /v1/desks/{desk}/members``: the desk's members with who admitted each and when, and
the officers waiting to join, with their public keys (for the safety code); for members of
the desk and of its supervisor desk. ``POST /v1/desks/{desk}/admissions``: a member's
signed admission of a waiting officer (gateway.officers.admission checks it).
``GET /v1/desks/{desk}/notices``: the desk's stored notices (membership, breaches,
escalations, non-delivery; gateway.officers.notices) and the caller's unread count;
``GET .../notices/{cursor}`` reads one (and marks it read), ``POST .../notices/read``
marks some read.
``GET /v1/desks/{desk}/proofs``: the ledger's proof of each member's admission.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from aiohttp import web

from gateway.appkeys import CLOCK, CONFIG, DELIVERY, DIRECTORY, IDENTITY, LEDGER, PARTNERS, STORE
from gateway.channels.addresses import client_address
from gateway.channels.client import _DIGITS, _field, _int_query, read_json, signed_in
from gateway.errors import ERRORS, ClientError, ForbiddenError, NotFoundError
from gateway.officers import audit
from gateway.officers.admission import admit, may_see, pending
from gateway.officers.directory import Directory, Officer
from gateway.officers.history import keep_shares
from gateway.officers.proofs import membership_proofs
from gateway.protocol.membership import MAX_TREE_SIZE
from gateway.store import DeskNotice

MAX_CURSOR = 10**18 - 1
MAX_MARKED = 500  # notices marked read by one request


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/desks/{desk}/members", get_members)
    app.router.add_post("/v1/desks/{desk}/admissions", post_admission)
    app.router.add_get("/v1/desks/{desk}/notices", get_notices)
    app.router.add_post("/v1/desks/{desk}/notices/read", post_notices_read)
    app.router.add_get("/v1/desks/{desk}/notices/{cursor}", get_notice)
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
    """The desk's stored notices after cursor ``after``, oldest first, each with when the
    caller read it; ``unread=1``: only those it has not read. Listing marks nothing."""
    officer, desk, directory = await _desk(request)
    _check_sees(officer, directory, desk)
    page = request.app[CONFIG].limits.inbox_page
    after = _int_query(request, "after", 0, MAX_CURSOR)
    limit = _int_query(request, "limit", page, page) or page
    only_unread = _int_query(request, "unread", 0, 1) == 1
    name, gateway = desk.partition("@")[0], desk.partition("@")[2]
    store = request.app[STORE]
    notices = await store.notices_for([name], after, limit, officer.id,
                                      officer.not_before if only_unread else None)
    return web.json_response({
        "desk": desk,
        "notices": [_notice_json(n, gateway) for n in notices],
        "unread": await store.unread_notices(name, officer.id, officer.not_before),
        "next": notices[-1].seq if len(notices) == limit else None,
    })


async def get_notice(request: web.Request) -> web.Response:
    """One stored notice of the desk by its cursor; reading it marks it read."""
    officer, desk, directory = await _desk(request)
    _check_sees(officer, directory, desk)
    cursor = _path_cursor(request)
    name, gateway = desk.partition("@")[0], desk.partition("@")[2]
    store = request.app[STORE]
    found = await store.notices_for([name], cursor - 1, 1, officer.id)
    if not found or found[0].seq != cursor:
        raise NotFoundError(f"{desk} has no notice {cursor}", code="unknown_notice")
    if found[0].read_ms is None:
        now = request.app[CLOCK].now_ms()
        await store.mark_notices_read(name, officer.id, [cursor], now)
        found[0] = replace(found[0], read_ms=now)
    return web.json_response(_notice_json(found[0], gateway))


async def post_notices_read(request: web.Request) -> web.Response:
    """Mark notices of the desk read for the caller: ``{"cursors": [...]}``."""
    officer, desk, directory = await _desk(request)
    cursors = _field(await read_json(request), "cursors", list)  # (413 before anything)
    _check_sees(officer, directory, desk)
    if not 0 < len(cursors) <= MAX_MARKED or not all(
            isinstance(c, int) and not isinstance(c, bool) and 0 < c <= MAX_CURSOR
            for c in cursors):
        raise ClientError(f"cursors: 1 to {MAX_MARKED} notice cursors", code="bad_field")
    name = desk.partition("@")[0]
    store = request.app[STORE]
    marked = await store.mark_notices_read(name, officer.id, cursors,
                                           request.app[CLOCK].now_ms())
    return web.json_response({"desk": desk, "marked": marked,
                              "unread": await store.unread_notices(name, officer.id,
                                                                   officer.not_before)})


def _notice_json(notice: DeskNotice, gateway: str) -> dict[str, Any]:
    return {**notice.to_json(gateway), "read": notice.read_ms}


def _path_cursor(request: web.Request) -> int:
    value = request.match_info["cursor"]
    if not _DIGITS.fullmatch(value) or not 0 < int(value) <= MAX_CURSOR:
        raise ClientError(f"a notice cursor is an integer from 1 to {MAX_CURSOR}",
                          code="bad_parameter")
    return int(value)


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

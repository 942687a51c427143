"""The client channel: the officers' HTTP API (docs/openapi.yaml describes it).

This module only translates HTTP to the core (gateway.officers.enrollment,
gateway.officers.sessions, gateway.officers.delivery) and back. Every route but
enrollment and sign-in needs ``Authorization: Bearer <token>``; each officer is
rate-limited. Bodies larger than the
configured limit are refused from their declared length, before anything is read.
Errors are JSON ``{"error": <stable code>, "message": ...}`` (see gateway.app).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
from typing import Any

from aiohttp import web

from gateway.appkeys import (
    ANON_LIMITER,
    ANON_LINE,
    CASES,
    CLOCK,
    CONFIG,
    DELIVERY,
    DIRECTORY,
    ENROLL_BUDGET,
    HUB,
    IDENTITY,
    LIMITER,
    NOTICES,
    PARTNERS,
    REQUEST_ID,
    SESSIONS,
    SIGNIN_LIMITS,
    STORE,
)
from gateway.cases.views import MAX_LISTED as MAX_CASES
from gateway.channels.addresses import client_address, limit_key
from gateway.errors import (
    ERRORS,
    BadSignatureError,
    ClientError,
    NotFoundError,
    UnsupportedMediaError,
)
from gateway.httpbody import read_body
from gateway.officers import audit
from gateway.officers.directory import Officer
from gateway.officers.enrollment import enroll
from gateway.officers.notices import NOTICE_EVENTS
from gateway.officers.sessions import AuthError, RateLimited
from gateway.protocol import jsontext
from gateway.protocol.officers import session_text
from gateway.store import ACCEPTED, Notification

ENVELOPE_TYPE = "application/vnd.fpg.envelope"
NOTE_TYPE = "text/plain; charset=utf-8"
MAX_JSON_BODY = 64 * 1024
HEARTBEAT_SECONDS = 15.0
# How often an open stream checks that its session and the officer's binding still hold:
# with the directory's own reload every 0.2 s, a revoked officer's stream ends in < 0.5 s.
STREAM_CHECK_SECONDS = 0.25
_DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII digits only: str.isdigit() accepts others
ENVELOPE_TYPES = (ENVELOPE_TYPE, "application/octet-stream")


async def read_json(request: web.Request) -> dict[str, Any]:
    # Only a script allowed to make such requests sends application/json cross-origin:
    # a page elsewhere can post text/plain to us without asking (no CORS preflight).
    if request.content_type != "application/json":
        raise UnsupportedMediaError("send the body as application/json")
    body = await read_body(request, MAX_JSON_BODY)
    try:
        doc = jsontext.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: "[[[[..."
        raise ClientError("the body must be a JSON object", code="bad_json") from None
    if not isinstance(doc, dict):
        raise ClientError("the body must be a JSON object", code="bad_json")
    return doc


def _field(doc: dict[str, Any], name: str, kind: type) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ClientError(f"field {name!r} must be a {kind.__name__}", code="bad_field")
    return value


def _bearer(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme != "Bearer" or not token.strip():
        raise AuthError("sign in first (Authorization: Bearer <token>)", code="no_session")
    return token.strip()


async def _active(request: web.Request, officer_id: str) -> Officer:
    """The officer's binding if still active; a revoked one's sessions all end."""
    directory = await request.app[DIRECTORY].get()
    officer = directory.officers.get(officer_id)
    if officer is None or not officer.active(request.app[CLOCK].now_ms()):
        request.app[SESSIONS].end_officer(officer_id)
        raise AuthError("your binding is revoked or expired", code="revoked")
    return officer


async def signed_in(request: web.Request) -> Officer:
    """The officer behind the request's bearer token, if still active; rate-limited."""
    officer = await _active(request, request.app[SESSIONS].lookup(_bearer(request)).officer)
    request.app[LIMITER].check(officer.id)
    return officer


# --- enrollment and sign-in -------------------------------------------------------------


def limit_anonymous(request: web.Request) -> None:
    """Enrollment needs no token: limit it per client address, and all addresses
    together (codes guessed from many addresses at once)."""
    request.app[ANON_LIMITER].check(limit_key(client_address(request)))
    request.app[ENROLL_BUDGET].check("all")


def _claimed_officer(doc: dict[str, Any]) -> str:
    officer_id: str = _field(doc, "officer", str)
    if len(officer_id) > 64:
        raise ClientError("officer ids are short", code="bad_field")
    return officer_id


async def post_enroll(request: web.Request) -> web.Response:
    await request.app[ANON_LINE].turn()
    limit_anonymous(request)
    code: object = None
    try:
        doc = await read_json(request)
        code = doc.get("code")
        app = request.app
        identity, config = app[IDENTITY], app[CONFIG]
        enrolled = await enroll(
            app[STORE], identity.gateway_id, identity.signing_key, app[CLOCK],
            int(config.officers.binding_days * 86_400_000),
            _field(doc, "code", str), _field(doc, "sign_key", str), _field(doc, "enc_key", str),
            _field(doc, "signature", str),
        )
    except ERRORS as exc:
        audit.enroll_failed(client_address(request), code, exc.code)
        raise
    officer = enrolled.officer
    audit.enrolled(client_address(request), officer.id, code, officer.desks)
    directory = await app[DIRECTORY].reload()
    admitted = directory.officers[officer.id].desks
    return web.json_response({
        "officer": officer.id,
        "gateway": identity.gateway_id,
        "desks": list(enrolled.binding.desks),
        "pending": [d for d in enrolled.binding.desks if d not in admitted],
        "not_after": officer.not_after_ms,
        "binding": officer.binding.decode("utf-8"),
        "gateway_key": identity.signing_key.public.b64(),
        "fingerprint": identity.signing_key.public.fingerprint,
    }, status=201)


async def post_challenge(request: web.Request) -> web.Response:
    await request.app[ANON_LINE].turn()
    limits, address = request.app[SIGNIN_LIMITS], limit_key(client_address(request))
    limits.from_address(address)
    doc = await read_json(request)
    officer_id = _claimed_officer(doc)
    limits.claiming(address, officer_id)
    # A challenge is issued for any id, so this route tells nobody which officers exist;
    # it is MAC'd, not stored (gateway.officers.sessions), so a flood of them fills nothing.
    challenge, expires = request.app[SESSIONS].challenge(officer_id)
    return web.json_response({"challenge": base64.b64encode(challenge).decode("ascii"),
                              "expires": expires})


class UnknownOfficer(AuthError):
    """No such officer: answered as a bad signature, so that sign-in reveals nobody's id
    (only the audit line says which it was)."""


async def post_session(request: web.Request) -> web.Response:
    await request.app[ANON_LINE].turn()
    limits, address = request.app[SIGNIN_LIMITS], limit_key(client_address(request))
    limits.from_address(address)
    officer_id: object = None
    try:
        doc = await read_json(request)
        officer_id = doc.get("officer")
        limits.claiming(address, _claimed_officer(doc))
        officer, token, expires = await _sign_in(request.app, doc)
    except RateLimited:
        raise  # not audited, as before the body was read: a flood must not flood the log
    except ERRORS as exc:
        audit.signin_failed(client_address(request), officer_id, exc.code,
                            unknown_officer=isinstance(exc, UnknownOfficer))
        raise
    audit.signed_in(client_address(request), officer.id, expires)
    return web.json_response({"token": token, "expires": expires, "officer": officer.id,
                              "desks": sorted(officer.desks),
                              "pending": sorted(officer.requested - officer.desks)})


async def _sign_in(app: web.Application, doc: dict[str, Any]) -> tuple[Officer, str, int]:
    """The officer who signed the challenge, and a new session token and its expiry.

    The order of the checks is what keeps sign-in from telling a stranger anything: the
    challenge's MAC and expiry (no key needed), then the signature, and only then whether
    the officer is revoked. A bad signature is ``bad_signature`` whether the id is
    unknown, revoked or active; only the holder of the key learns it was revoked."""
    officer_id = _field(doc, "officer", str)
    try:
        challenge = base64.b64decode(_field(doc, "challenge", str), validate=True)
        signature = base64.b64decode(_field(doc, "signature", str), validate=True)
    except (binascii.Error, ValueError):
        raise ClientError("challenge and signature are base64", code="bad_field") from None
    sessions = app[SESSIONS]
    challenge_expires = sessions.check_challenge(officer_id, challenge)
    officer = (await app[DIRECTORY].get()).officers.get(officer_id)
    if officer is None:
        raise UnknownOfficer("the challenge signature does not verify", code="bad_signature")
    try:
        officer.sign_key.verify(
            session_text(app[IDENTITY].gateway_id, officer_id, challenge), signature
        )
    except BadSignatureError:
        raise AuthError("the challenge signature does not verify", code="bad_signature") from None
    if not officer.active(app[CLOCK].now_ms()):
        raise AuthError("your binding is revoked or expired", code="revoked")
    sessions.consume(challenge, challenge_expires)
    app[SIGNIN_LIMITS].signed_in(officer_id)
    token, expires = sessions.issue(officer_id)
    return officer, token, expires


# --- directory and messages -------------------------------------------------------------


async def get_directory(request: web.Request) -> web.Response:
    """This gateway's directory, or with ``?gateway=ID`` a partner's, countersigned."""
    await signed_in(request)
    gateway = request.query.get("gateway", request.app[IDENTITY].gateway_id)
    if gateway != request.app[IDENTITY].gateway_id:
        partners = request.app[PARTNERS]
        note = await partners.directory_for_clients(partners.require(gateway))
        return web.Response(body=note, headers={"Content-Type": NOTE_TYPE})
    directory = await request.app[DIRECTORY].get()
    return web.Response(body=directory.signed(request.app[IDENTITY].signing_key),
                        headers={"Content-Type": NOTE_TYPE})


async def post_message(request: web.Request) -> web.Response:
    officer = await signed_in(request)
    if request.content_type not in ENVELOPE_TYPES:
        raise UnsupportedMediaError(f"upload an envelope as {ENVELOPE_TYPE}")
    body = await read_body(request, request.app[CONFIG].server.max_body_bytes)
    outcome = await request.app[DELIVERY].send(officer, body)
    status = 201 if outcome.status == ACCEPTED else 200
    return web.json_response({"id": outcome.message_id, "status": outcome.status,
                              "ledger": list(outcome.seqs)}, status=status)


def _int_query(request: web.Request, name: str, default: int, high: int) -> int:
    value = request.query.get(name)
    if value is None:
        return default
    if not _DIGITS.fullmatch(value) or int(value) > high:
        raise ClientError(f"{name} must be an integer from 0 to {high}", code="bad_parameter")
    return int(value)


async def get_inbox(request: web.Request) -> web.Response:
    officer = await signed_in(request)
    desk = request.match_info["desk"]
    page = request.app[CONFIG].limits.inbox_page
    after = _int_query(request, "after", 0, 10**18 - 1)
    limit = _int_query(request, "limit", page, page) or page
    items = await request.app[DELIVERY].inbox(officer, desk, after, limit)
    return web.json_response({
        "desk": desk,
        "messages": [item.to_json() for item in items],
        "next": items[-1].cursor if len(items) == limit else None,
    })


_FLAG = {"0": False, "1": True, "false": False, "true": True}


def _flag_query(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "0")
    if value not in _FLAG:
        raise ClientError(f"{name} must be 0 or 1", code="bad_parameter")
    return _FLAG[value]


async def get_cases(request: web.Request) -> web.Response:
    """Requests the officer's desks made or must execute, soonest due first."""
    officer = await signed_in(request)
    q = request.query
    cases = await request.app[CASES].list(
        officer, state=q.get("state"), partner=q.get("partner"),
        overdue=_flag_query(request, "overdue"), include_closed=_flag_query(request, "closed"),
        limit=_int_query(request, "limit", MAX_CASES, MAX_CASES) or MAX_CASES)
    return web.json_response({"cases": cases})


async def get_case(request: web.Request) -> web.Response:
    """One request: where it stands and its due day."""
    officer = await signed_in(request)
    return web.json_response(await request.app[CASES].one(officer, request.match_info["id"]))
async def get_sent(request: web.Request) -> web.Response:
    """The messages the signed-in officer sent, with their status: metadata only."""
    officer = await signed_in(request)
    page = request.app[CONFIG].limits.inbox_page
    after = _int_query(request, "after", 0, 10**18 - 1)
    limit = _int_query(request, "limit", page, page) or page
    items = await request.app[DELIVERY].sent(officer, after, limit)
    return web.json_response({
        "messages": [item.to_json() for item in items],
        "next": items[-1].cursor if len(items) == limit else None,
    })


async def get_message(request: web.Request) -> web.Response:
    officer = await signed_in(request)
    message = await request.app[DELIVERY].fetch(officer, request.match_info["id"])
    return web.Response(body=message.envelope, headers={
        "Content-Type": ENVELOPE_TYPE, "X-FPG-Digest": message.digest,
    })


async def get_status(request: web.Request) -> web.Response:
    officer = await signed_in(request)
    return web.json_response(await request.app[DELIVERY].status(officer,
                                                                request.match_info["id"]))


async def post_read(request: web.Request) -> web.Response:
    officer = await signed_in(request)
    doc = await read_json(request)
    outcome = await request.app[DELIVERY].read(
        officer, request.match_info["id"], _field(doc, "read", int), _field(doc, "signature", str)
    )
    if outcome not in ("recorded", "duplicate"):
        raise NotFoundError("no such message", code="unknown_message")
    return web.json_response({"id": request.match_info["id"], "status": outcome})


class StreamStalled(Exception):
    """The stream's client took too long to take a write, or let too much queue up."""


async def get_stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events for the officer's desks: message, read, reply, the desks'
    notices (and resync). With ``since=CURSOR`` the stored notices after that cursor are
    sent first (gateway.officers.notices), then live events."""
    officer = await signed_in(request)
    wanted = request.query.getall("desk", []) or sorted(officer.desks)
    for desk in wanted:
        await request.app[DELIVERY].check_desk(officer, desk)
    since = _int_query(request, "since", 0, 10**18 - 1) if "since" in request.query else None
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
        "X-Request-Id": request.get(REQUEST_ID, ""),
    })
    # Before the answer starts, so that a gateway full of streams can say 429.
    subscription = request.app[HUB].subscribe(wanted, officer.id)
    token, loop = _bearer(request), asyncio.get_running_loop()
    client, opened = client_address(request), loop.time()
    audit.stream_opened(client, officer.id, wanted)
    quiet_until = opened + HEARTBEAT_SECONDS
    reason = "error"  # unless the loop or a handler below says why it ended
    limits = request.app[CONFIG].limits
    replayed = 0  # live notices up to this cursor were sent from the store

    async def write(data: bytes) -> None:
        # A client that does not read would hold its bytes (and the events behind them)
        # in the gateway's memory for ever: past a byte cap or a write deadline it goes.
        transport = request.transport
        if transport is not None and \
                transport.get_write_buffer_size() > limits.stream_buffer_bytes:
            raise StreamStalled
        try:
            async with asyncio.timeout(limits.stream_write_seconds):
                await response.write(data)
        except TimeoutError:
            raise StreamStalled from None

    try:
        await response.prepare(request)
        await write(b": connected\n\n")
        if since is not None:  # subscribed first, so nothing falls between the two
            stored, replayed = await request.app[NOTICES].replay(wanted, since)
            for item in stored:
                await write(_event(item))
        while True:
            try:
                item = await asyncio.wait_for(subscription.queue.get(), STREAM_CHECK_SECONDS)
            except TimeoutError:
                try:  # a revoked officer or an expired session reads nothing more
                    await _active(request, officer.id)  # first: another stream may have
                    request.app[SESSIONS].lookup(token)  # ended the session on revocation
                except AuthError as exc:
                    reason = exc.code
                    await write(
                        b'event: ended\ndata: {"desk":"","reason":"%s"}\n\n'
                        % exc.code.encode("ascii"))
                    break
                if loop.time() >= quiet_until:
                    await write(b": keep-alive\n\n")
                    quiet_until = loop.time() + HEARTBEAT_SECONDS
                continue
            if item.kind in NOTICE_EVENTS and item.data.get("cursor", 0) <= replayed:
                continue
            await write(_event(item))
            quiet_until = loop.time() + HEARTBEAT_SECONDS
            if item.kind in ("resync", "shutdown", "ended"):
                reason = item.data.get("reason", item.kind)
                break
    except ConnectionResetError:
        reason = "client_gone"
    except StreamStalled:
        reason = "stalled"
        if request.transport is not None:
            request.transport.abort()  # drops what is queued for it now, not after a flush
    except asyncio.CancelledError:
        reason = "cancelled"
        raise
    finally:
        subscription.close()
        audit.stream_closed(client, officer.id, reason, loop.time() - opened)
    return response


def _event(item: Notification) -> bytes:
    data = json.dumps({"desk": item.desk, **item.data}, separators=(",", ":"))
    return f"event: {item.kind}\ndata: {data}\n\n".encode()


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/v1/enroll", post_enroll)
    r.add_post("/v1/session/challenge", post_challenge)
    r.add_post("/v1/session", post_session)
    r.add_get("/v1/directory", get_directory)
    r.add_post("/v1/messages", post_message)
    r.add_get("/v1/messages/{id}", get_message)
    r.add_get("/v1/messages/{id}/status", get_status)
    r.add_post("/v1/messages/{id}/read", post_read)
    r.add_get("/v1/desks/{desk}/inbox", get_inbox)
    r.add_get("/v1/cases", get_cases)
    r.add_get("/v1/cases/{id}", get_case)
    r.add_get("/v1/sent", get_sent)
    r.add_get("/v1/stream", get_stream, allow_head=False)

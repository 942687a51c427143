"""The operator channel: a small HTTP API on a Unix socket in the data directory.

Only local users who may open ``<data_dir>/admin.sock`` (mode 0600: the gateway's own
user) reach it; nothing on the network does. ``gateway partners`` reads from it.

``GET /partners``
    every partner: state, retry state, queue depth and oldest queued message, read
    acknowledgements waiting, last contact, the last checkpoint witnessed, the last alarm.
``POST /partners/{id}/retry``
    wake that partner's sender now, ending its backoff.
``GET /queue`` (``?partner=ID``)
    the messages waiting for partners, in sending order: metadata only
    (gateway.federation.queue).
``GET /queue/{id}``
    one queued message's metadata, and whether the sender has it in hand now.
``POST /queue/{id}/return``
    body ``{"reason": TEXT}``: take the message out of its outbox and send its sending
    desk a signed non-delivery notice carrying the reason. Whoever reaches this socket
    may do so: it is the operator's authority (docs/SECURITY.md).
``POST /reload``
    read the configuration file again and apply what changed, as SIGHUP does
    (gateway.reload); answers what was applied, what needs a restart, or why the new
    configuration was refused.
``GET /status``
    the one-screen summary: ledger, partners, service levels and their breaches, and
    response times observed since the gateway started (counts and means per stage and
    priority, from its metrics).
``GET /report``
    requests by gateway pair and state, and how many are overdue.
``GET /reconcile/{id}?since=MS&until=MS``
    what this gateway and that partner exchanged, compared (gateway.federation.reconcile).
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway import __version__
from gateway.appkeys import (
    CLOCK,
    CONFIG,
    METRICS,
    PARTNERS,
    SERVICE_LEVELS,
    STORE,
    WITNESS,
)
from gateway.cases.report import requests_report
from gateway.channels.errors import error_middleware
from gateway.errors import ClientError, ConfigError, NotFoundError, UnavailableError
from gateway.federation.partners import Partner
from gateway.federation.queue import QueueControl
from gateway.federation.reconcile import reconcile
from gateway.httpbody import read_body
from gateway.metrics import Metrics
from gateway.protocol import jsontext
from gateway.reload import RELOADER
from gateway.store import StatusStore

MAIN = web.AppKey("main", web.Application)
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, fewer elsewhere
MAX_RETURN_BODY = 8 * 1024  # a reason of MAX_NOTE characters, each escaped, fits


async def get_partners(request: web.Request) -> web.Response:
    app = request.app[MAIN]
    return web.json_response(await partners_report(app))


async def partners_report(app: web.Application) -> dict[str, Any]:
    store: StatusStore
    store, witness, now = app[STORE], app[WITNESS], app[CLOCK].now_ms()
    queues, reads = await store.queue_stats(), await store.read_queue_depths()
    report: list[dict[str, Any]] = []
    for partner in app[PARTNERS].by_id.values():
        state = await store.partner_state(partner.id)
        queue = queues.get(partner.id)
        checkpoint = await store.partner_checkpoint(partner.id)
        alarm = witness.alarms.get(partner.id)
        contacts = [t for t in (partner.last_contact_ms, state.last_contact_ms) if t is not None]
        report.append({
            "id": partner.id,
            "url": partner.config.url,
            "state": _state(partner),
            "failures": state.failures,
            "next_attempt": state.next_attempt_ms if state.next_attempt_ms > now else None,
            "last_error": partner.last_error or state.last_error,
            "last_contact": max(contacts) if contacts else None,
            "queued": queue.depth if queue is not None else 0,
            "oldest_queued": queue.oldest_queued_ms if queue is not None else None,
            "reads_queued": reads.get(partner.id, 0),
            "checkpoint": None if checkpoint is None else {
                "size": checkpoint.size, "seen": checkpoint.made_ms},
            "alarm": None if alarm is None else {
                "reason": alarm.reason, "time": alarm.time_ms, "seen_size": alarm.seen_size,
                "kept_size": alarm.kept_size},
        })
    return {"now": now, "partners": report}


async def get_status(request: web.Request) -> web.Response:
    app = request.app[MAIN]
    store: StatusStore
    store, config = app[STORE], app[CONFIG]
    report = await partners_report(app)
    latest = await store.latest_checkpoint()
    breaches = await store.breach_counts()
    report.update({
        "gateway": config.gateway.id,
        "version": __version__,
        "ledger": {"size": store.ledger_size(),
                   "checkpoint": None if latest is None else {
                       "size": latest.size, "made": latest.made_ms}},
        "service_levels": [{
            "priority": level.priority, "stage": level.stage,
            "within_seconds": level.within_seconds, "escalate": level.escalate,
            "breaches": breaches.get((level.priority, level.stage), 0),
        } for level in app[SERVICE_LEVELS].levels],  # as reloaded
        "responses": _responses(app[METRICS]),
    })
    return web.json_response(report)


def _responses(metrics: Metrics) -> list[dict[str, Any]]:
    """Observations of fpg_response_seconds since start, by stage and priority."""
    sums: dict[tuple[str, str], list[float]] = {}
    for family in metrics.registry.collect():
        if family.name != "fpg_response_seconds":
            continue
        for sample in family.samples:
            key = (sample.labels["stage"], sample.labels["priority"])
            if sample.name.endswith("_count"):
                sums.setdefault(key, [0.0, 0.0])[0] += sample.value
            elif sample.name.endswith("_sum"):
                sums.setdefault(key, [0.0, 0.0])[1] += sample.value
    return [{"stage": stage, "priority": priority, "count": int(count),
             "mean_seconds": total / count if count else None}
            for (stage, priority), (count, total) in sorted(sums.items())]


def _state(partner: Partner) -> str:
    return {True: "up", False: "down", None: "unknown"}[partner.up]


async def post_retry(request: web.Request) -> web.Response:
    partner_id = request.match_info["partner"]
    partner = request.app[MAIN][PARTNERS].get(partner_id)
    if partner is None:
        raise NotFoundError(f"{partner_id} is not a partner of this gateway",
                            code="unknown_partner")
    partner.kick.set()
    return web.json_response({"partner": partner.id, "woken": True})


async def get_report(request: web.Request) -> web.Response:
    """The requests report (gateway.cases.report)."""
    app = request.app[MAIN]
    return web.json_response(await requests_report(app[STORE], app[CONFIG].gateway.id,
                                                   app[CLOCK].now_ms()))


async def get_reconcile(request: web.Request) -> web.Response:
    """Reconcile with one partner over ``since``..``until`` (Unix ms; default: the last
    30 days, up to 10 minutes ago so that messages in flight are not flagged)."""
    app = request.app[MAIN]
    now = app[CLOCK].now_ms()
    try:
        until = int(request.query.get("until", now - 600_000))
        since = int(request.query.get("since", until - 30 * 86_400_000))
    except ValueError:
        raise ClientError("since and until are Unix milliseconds", code="bad_parameter") from None
    if not 0 <= since < until:
        raise ClientError("since must come before until", code="bad_parameter")
    partner = request.match_info["partner"]
    if app[PARTNERS].get(partner) is None:
        raise NotFoundError(f"{partner} is not a partner of this gateway",
                            code="unknown_partner")
    return web.json_response(await reconcile(app[STORE], app[PARTNERS], partner, since, until))


def _queue(request: web.Request) -> QueueControl:
    main = request.app[MAIN]
    return QueueControl(main[STORE], main[PARTNERS], main[CLOCK])


async def get_queue(request: web.Request) -> web.Response:
    partner = request.query.get("partner") or None
    return web.json_response(await _queue(request).listing(partner))


async def get_queued(request: web.Request) -> web.Response:
    return web.json_response(await _queue(request).show(request.match_info["id"]))


async def post_return(request: web.Request) -> web.Response:
    try:
        doc = jsontext.loads(await read_body(request, MAX_RETURN_BODY))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ClientError("the body must be a JSON object", code="bad_json") from None
    reason = doc.get("reason") if isinstance(doc, dict) else None
    if not isinstance(reason, str):
        raise ClientError("give the reason as a string: {\"reason\": TEXT}",
                          code="bad_reason")
    answer = await _queue(request).return_message(request.match_info["id"], reason)
    return web.json_response(answer)


async def post_reload(request: web.Request) -> web.Response:
    reloader = request.app[MAIN].get(RELOADER)
    if reloader is None:  # a gateway not started by `gateway run`
        raise UnavailableError("this gateway cannot reload its configuration")
    return web.json_response(await reloader.reload())


def admin_app(main: web.Application) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=64 * 1024)
    app[MAIN] = main
    app.router.add_get("/partners", get_partners)
    app.router.add_get("/status", get_status)
    app.router.add_post("/partners/{partner}/retry", post_retry)
    app.router.add_get("/report", get_report)
    app.router.add_get("/reconcile/{partner}", get_reconcile)
    app.router.add_get("/queue", get_queue)
    app.router.add_get("/queue/{id}", get_queued)
    app.router.add_post("/queue/{id}/return", post_return)
    app.router.add_post("/reload", post_reload)
    return app


def admin_socket(path: Path) -> socket.socket:
    """A listening Unix socket at ``path``, readable and writable by this user only. A
    socket left by a gateway that died is replaced; one a live gateway serves is not."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise ConfigError(f"{path}: too long for a Unix socket path; use a shorter data_dir")
    if path.exists():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            path.unlink()  # left behind by a gateway that is gone
        except OSError as exc:
            raise ConfigError(f"{path}: exists and is not a usable socket ({exc})") from None
        else:
            raise ConfigError(f"{path}: another gateway is running on this data directory")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    sock.listen(16)
    return sock


@contextlib.asynccontextmanager
async def serving(main: web.Application, path: Path) -> Any:
    """Serve the admin API on ``path`` while the block runs; remove the socket after."""
    sock = admin_socket(path)
    runner = web.AppRunner(admin_app(main), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        yield
    finally:
        await runner.cleanup()
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

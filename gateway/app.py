"""``create_app(...)`` builds the whole service; nothing happens at import time.

State lives on the :class:`aiohttp.web.Application` under typed ``AppKey``s (no
singletons). Each resource that needs starting and stopping (the store, the ledger and
its checkpoints, the crypto worker, the partners' HTTP session, each family of background
loops) is a ``cleanup_ctx`` generator of its own, registered in dependency order
(:data:`RESOURCES`), so each is closed exactly when it was opened. One middleware
(gateway.channels.errors) turns every error the gateway raises on purpose into a JSON
answer with a stable error code and binds a request id to the log context.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from aiohttp import web
from yarl import URL

from gateway import __version__
from gateway.appkeys import (
    ANON_LIMITER,
    ANON_LINE,
    CASE_DEADLINES,
    CASES,
    CLOCK,
    CONFIG,
    CRYPTO_WORKER,
    DELIVERY,
    DIRECTORY,
    ENROLL_BUDGET,
    HOP,
    HUB,
    IDENTITY,
    LEDGER,
    LIMITER,
    METRICS,
    NOTICES,
    PARTNER_LOOPS,
    PARTNERS,
    RECEIVER,
    SERVICE_LEVELS,
    SESSIONS,
    SIGNIN_LIMITS,
    STAGES,
    STORE,
    WITNESS,
)
from gateway.cases.deadlines import CaseDeadlines
from gateway.cases.views import Cases
from gateway.channels import client, federation, membership, peer, webapp
from gateway.channels.errors import error_middleware
from gateway.channels.hosts import host_middleware
from gateway.clock import Clock, SystemClock
from gateway.config import Config
from gateway.crypto.keyfile import KeyBundle
from gateway.crypto.worker import CryptoWorker
from gateway.errors import LedgerError
from gateway.federation.hop import HopVerifier
from gateway.federation.identity import Identity
from gateway.federation.loops import PartnerLoops
from gateway.federation.partners import Partner, Partners
from gateway.federation.receiver import Receiver
from gateway.federation.sender import Sender
from gateway.federation.witness import Witness
from gateway.httpbody import BODY_TIMEOUT
from gateway.ledger.ledger import CheckpointSchedule, Ledger
from gateway.metrics import Metrics
from gateway.officers.delivery import Delivery
from gateway.officers.directory import DirectoryService
from gateway.officers.hub import Hub
from gateway.officers.membership import MembershipNotices
from gateway.officers.notices import StoredNotices
from gateway.officers.quotas import DAY_MS as QUOTA_DAY_MS
from gateway.officers.quotas import Quotas
from gateway.officers.sessions import AnonymousLine, RateLimiter, Sessions, SignInLimits
from gateway.protocol.checkpoint import open_checkpoint
from gateway.retention import Retention
from gateway.service_levels.levels import ServiceLevels
from gateway.service_levels.stages import Stages
from gateway.store.sqlite import SqliteStore
from gateway.tasks import background
from gateway.tls import server_tls

log = structlog.get_logger("gateway.app")


async def healthz(request: web.Request) -> web.Response:
    identity = request.app[IDENTITY]
    return web.json_response(
        {"status": "ok", "gateway": identity.gateway_id, "version": __version__}
    )


async def check_ledger(ledger: Ledger, full: bool) -> None:
    """Refuse to serve on a ledger that does not match its signed checkpoints."""
    if full:
        entries = await ledger.verify()
        log.info("ledger_verified", entries=entries)
        return
    latest = await ledger.store.latest_checkpoint()
    if latest is None:
        return
    opened = open_checkpoint(latest.note, ledger.origin, ledger.verifiers)
    if opened.size > ledger.size or not hmac.compare_digest(
        await ledger.root(opened.size), opened.root
    ):
        raise LedgerError(
            f"the stored tree does not match the last signed checkpoint (size {opened.size});"
            " run `gateway ledger verify`"
        )


# --- resources -----------------------------------------------------------------------
#
# One cleanup context per resource, registered in the order of RESOURCES: each uses only
# what the ones before it set up. aiohttp stops them in reverse order, and when one fails
# to start it stops exactly those that had started (the caller runs the cleanup either
# way: see ``gateway.cli.main.serve``). So the store outlives everything that writes to
# it, and the partners' HTTP session outlives every loop that talks to a partner.


def _hooks(app: web.Application) -> SqliteStore:
    """The store, for its after-commit hooks (which the Store protocol does not name)."""
    store = app[STORE]
    assert isinstance(store, SqliteStore)
    return store


async def database(app: web.Application) -> AsyncIterator[None]:
    """The store, open for as long as the application runs."""
    config = app[CONFIG]
    store = app[STORE] = await SqliteStore.open(config.database,
                                                max_batch=config.store.max_batch)
    yield
    await store.close()


async def crypto_worker(app: web.Application) -> AsyncIterator[None]:
    """The thread that checks batches of signatures off the event loop."""
    worker = app[CRYPTO_WORKER] = CryptoWorker()
    yield
    worker.close()


async def ledger_and_checkpoints(app: web.Application) -> AsyncIterator[None]:
    """The ledger, checked against its signed checkpoints before anything is served, and
    checkpointed every so many entries or seconds while the application runs."""
    config, identity, store = app[CONFIG], app[IDENTITY], app[STORE]
    origin = config.gateway.ledger_origin
    ledger = Ledger(store, origin, identity.checkpoint_verifiers(origin),
                    identity.checkpoint_signer(origin), app[CLOCK])
    await check_ledger(ledger, config.ledger.verify_on_start)
    app[LEDGER] = ledger
    schedule = CheckpointSchedule(
        ledger, config.ledger.checkpoint_every, config.ledger.checkpoint_interval
    )
    _hooks(app).on_commit.append(schedule.notify)
    async with background("checkpoints", schedule.run):
        yield
    await ledger.make_checkpoint()  # a clean stop leaves no entry uncovered


async def stored_notices(app: web.Application) -> AsyncIterator[None]:
    """The notices stored for desks, published on the live streams after the commit that
    stored them (gateway.officers.notices)."""
    feed = app[NOTICES] = StoredNotices(app[STORE], app[IDENTITY].gateway_id, app[HUB].publish)
    await feed.start()
    _hooks(app).on_notices.append(feed.poke)
    async with background("notices", feed.run):
        yield


async def desk_directory(app: web.Application) -> AsyncIterator[None]:
    """This gateway's desks and officers, reloaded whenever the database says they changed."""
    directory = app[DIRECTORY] = DirectoryService(app[STORE], app[IDENTITY].gateway_id,
                                                  app[CLOCK])
    identity = app[IDENTITY]
    notices = MembershipNotices(app[STORE], identity.gateway_id, app[NOTICES],
                                lambda: identity.signing_key.key_id, app[LEDGER].make_checkpoint)
    directory.listeners.append(notices.catch_up)
    await directory.reload()
    async with background("directory", directory.watch):
        yield


async def live_updates(app: web.Application) -> AsyncIterator[None]:
    """Officers' live streams hear of each commit's notifications (the streams themselves
    are ended on shutdown, before any cleanup)."""
    _hooks(app).on_notify.append(app[HUB].publish)
    yield


async def stage_times(app: web.Application) -> AsyncIterator[None]:
    """The stage durations of each message, observed from the ledger events committed."""
    stages = app[STAGES] = Stages(app[STORE], app[METRICS], app[IDENTITY].gateway_id)
    _hooks(app).on_events.append(stages.observe)
    async with background("stages", stages.run):
        yield


async def partner_sessions(app: web.Application) -> AsyncIterator[None]:
    """The partner gateways (with what was learnt of them before a restart) and the HTTP
    client session this gateway calls them with."""
    config = app[CONFIG]
    partners = app[PARTNERS] = Partners(config, app[IDENTITY], app[CLOCK], app[STORE])
    await partners.load_keys()  # key rotations followed before a restart
    await partners.load_directories()  # so that a partner down at start can be queued
    app[HOP] = HopVerifier(app[IDENTITY].gateway_id, app[CLOCK],
                           int(config.federation.hop_window_seconds * 1000),
                           partners.trusted, partners.learn_key)
    await partners.start()
    yield
    await partners.close()


async def message_paths(app: web.Application) -> AsyncIterator[None]:
    """How messages come in: relayed by partners (the receiver) and sent by this gateway's
    officers (delivery); plain services over the resources above, nothing to stop."""
    config, identity = app[CONFIG], app[IDENTITY]
    store, directory, worker = app[STORE], app[DIRECTORY], app[CRYPTO_WORKER]
    app[RECEIVER] = Receiver(store, directory, identity, app[CLOCK], worker,
                             config.server.max_body_bytes, max_ahead_ms=int(
                                 (config.officers.clock_skew_seconds
                                  + config.federation.hop_window_seconds) * 1000))
    quotas = Quotas(app[CLOCK], officer_per_day=config.limits.officer_bytes_per_day,
                    desk_per_day=config.limits.desk_bytes_per_day,
                    data_dir=config.database.parent,
                    reserve_bytes=config.store.disk_reserve_bytes)
    now = app[CLOCK].now_ms()
    quotas.restore(await store.local_sends(now - QUOTA_DAY_MS), now)  # a restart resets none
    app[DELIVERY] = Delivery(
        store, directory, app[CLOCK], worker, gateway=identity.gateway_id,
        max_envelope=config.server.max_body_bytes,
        clock_skew_ms=int(config.officers.clock_skew_seconds * 1000), partners=app[PARTNERS],
        quotas=quotas,
    )
    app[CASES] = Cases(store, app[CLOCK], identity.gateway_id)
    yield


async def service_levels(app: web.Application) -> AsyncIterator[None]:
    """The service-level checks, run every ``check_seconds`` (nothing to do while no level
    is configured)."""
    config, identity = app[CONFIG], app[IDENTITY]
    levels = app[SERVICE_LEVELS] = ServiceLevels(
        config.service_levels, app[STORE], app[DIRECTORY], app[STAGES], app[METRICS],
        app[CLOCK], identity.signing_key, identity.gateway_id, config.metrics.check_seconds)
    levels.feed = app[NOTICES]
    # Run also with no level configured: a reload may add some.
    async with background("service_levels", levels.run):
        yield


async def case_deadlines(app: web.Application) -> AsyncIterator[None]:
    """Reminders and escalations of requests' due days (gateway.cases.deadlines)."""
    config, identity = app[CONFIG], app[IDENTITY]
    deadlines = app[CASE_DEADLINES] = CaseDeadlines(
        config.cases, config.case_reminders, app[STORE], app[DIRECTORY], app[METRICS],
        app[CLOCK], identity.signing_key, identity.gateway_id)
    deadlines.feed = app[NOTICES]
    async with background("case_deadlines", deadlines.run):
        yield


def _per_partner(app: web.Application, family: str,
                 loop_of: Callable[[Partner], Callable[[], Awaitable[None]]]
                 ) -> contextlib.AbstractAsyncContextManager[None]:
    """One supervised task ``family:<partner>`` per partner, with the partner's id bound
    to every log line the task writes; started too for partners a reload adds."""
    return app[PARTNER_LOOPS].family(family, loop_of, list(app[PARTNERS].by_id.values()))


async def partner_refreshes(app: web.Application) -> AsyncIterator[None]:
    """Each partner's descriptor and directory kept fresh, and its health with them."""
    partners = app[PARTNERS]
    async with _per_partner(app, "refresh",
                            lambda p: functools.partial(partners.refresh_loop, p)):
        yield


async def relay_senders(app: web.Application) -> AsyncIterator[None]:
    """One sender per partner, draining that partner's outbox."""
    config, partners = app[CONFIG], app[PARTNERS]

    def sender(partner: Partner) -> Callable[[], Awaitable[None]]:
        return Sender(partner, partners, app[STORE], app[CLOCK], config.federation,
                      app[IDENTITY].gateway_id, app[CRYPTO_WORKER], metrics=app[METRICS]).run

    async with _per_partner(app, "relay", sender):
        yield


async def witnesses(app: web.Application) -> AsyncIterator[None]:
    """Each partner's ledger checkpoints, checked to only ever grow."""
    witness = app[WITNESS] = Witness(app[STORE], app[PARTNERS], app[CLOCK], app[METRICS],
                                     app[CONFIG].federation.witness_seconds)
    async with _per_partner(app, "witness", lambda p: functools.partial(witness.run, p)):
        yield


async def retention(app: web.Application) -> AsyncIterator[None]:
    """Old ciphertext deleted, if ``store.retention_days`` is set (gateway.retention)."""
    days = app[CONFIG].store.retention_days
    if not days:
        yield
        return
    async with background("retention", Retention(app[STORE], app[CLOCK], days).run):
        yield


RESOURCES = (
    database, crypto_worker, ledger_and_checkpoints, stored_notices, desk_directory,
    live_updates,
    stage_times, partner_sessions, message_paths, service_levels, case_deadlines,
    partner_refreshes,
    relay_senders, witnesses, retention,
)


async def _end_streams(app: web.Application) -> None:
    app[HUB].close_all()


def create_app(config: Config, bundle: KeyBundle, *, clock: Clock | None = None) -> web.Application:
    """The gateway as an aiohttp application, ready for a runner or a test server."""
    public_host = URL(config.gateway.public_url).host or ""
    app = web.Application(
        middlewares=[error_middleware,
                     host_middleware((public_host, *config.server.allowed_hosts))],
        client_max_size=config.server.max_body_bytes,
    )
    app[CONFIG] = config
    app[BODY_TIMEOUT] = config.server.body_timeout_seconds
    app[IDENTITY] = Identity.from_bundle(config.gateway.id, bundle)
    app[CLOCK] = clock or SystemClock()
    app[METRICS] = Metrics()
    app[METRICS].info.labels(config.gateway.id, __version__).set(1)
    # Plain objects: built here, the resources that need starting in RESOURCES.
    app[SESSIONS] = Sessions(app[CLOCK], ttl_seconds=config.officers.session_minutes * 60)
    app[LIMITER] = RateLimiter(app[CLOCK], config.limits.requests_per_second,
                               config.limits.burst)
    app[ANON_LIMITER] = RateLimiter(app[CLOCK], config.limits.anonymous_per_second,
                                    config.limits.anonymous_burst)
    limits = config.limits
    app[ENROLL_BUDGET] = RateLimiter(app[CLOCK], limits.enroll_per_second, limits.enroll_burst)
    app[SIGNIN_LIMITS] = SignInLimits(
        RateLimiter(app[CLOCK], limits.anonymous_per_second, limits.anonymous_burst),
        RateLimiter(app[CLOCK], limits.signin_address_per_second, limits.signin_address_burst),
        RateLimiter(app[CLOCK], limits.signin_officer_per_second, limits.signin_officer_burst),
    )
    app[ANON_LINE] = AnonymousLine(limits.anonymous_line_per_second,
                                   limits.anonymous_line_wait_seconds)
    app[PARTNER_LOOPS] = PartnerLoops()
    app[HUB] = Hub(limits.stream_queue, limits.streams_per_officer, limits.streams_total)
    app.cleanup_ctx.extend(RESOURCES)
    app.on_shutdown.append(_end_streams)
    app.router.add_get("/healthz", healthz)
    peer.add_routes(app)
    federation.add_routes(app)
    client.add_routes(app)
    membership.add_routes(app)
    webapp.add_routes(app)
    return app


def ssl_context(config: Config) -> ssl.SSLContext | None:
    """The TLS context of the officers' and partners' listener (None: plain HTTP)."""
    return server_tls(config.server.tls_cert_file, config.server.tls_key_file)


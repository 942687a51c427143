"""``create_app(...)`` builds the whole service; nothing happens at import time.

State lives on the :class:`aiohttp.web.Application` under typed ``AppKey``s (no
singletons). Resources that need starting and stopping are ``cleanup_ctx`` generators,
so each is closed exactly when it was opened. One middleware
(gateway.channels.errors) turns every error the gateway raises on purpose into a JSON
answer with a stable error code and binds a request id to the log context.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import ssl
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from gateway import __version__
from gateway.appkeys import (
    ANON_LIMITER,
    CLOCK,
    CONFIG,
    CRYPTO_WORKER,
    DELIVERY,
    DIRECTORY,
    HOP,
    HUB,
    IDENTITY,
    LEDGER,
    LIMITER,
    METRICS,
    PARTNERS,
    RECEIVER,
    SERVICE_LEVELS,
    SESSIONS,
    STAGES,
    STORE,
    WITNESS,
)
from gateway.channels import client, federation, peer
from gateway.channels.errors import error_middleware
from gateway.clock import Clock, SystemClock
from gateway.config import Config
from gateway.crypto.keyfile import KeyBundle
from gateway.crypto.worker import CryptoWorker
from gateway.errors import LedgerError
from gateway.federation.hop import HopVerifier
from gateway.federation.identity import Identity
from gateway.federation.partners import Partners
from gateway.federation.receiver import Receiver
from gateway.federation.sender import Sender
from gateway.federation.witness import Witness
from gateway.httpbody import BODY_TIMEOUT
from gateway.ledger.ledger import CheckpointSchedule, Ledger, open_checkpoint
from gateway.metrics import Metrics
from gateway.officers.delivery import Delivery
from gateway.officers.directory import DirectoryService
from gateway.officers.hub import Hub
from gateway.officers.sessions import RateLimiter, Sessions
from gateway.service_levels.levels import ServiceLevels
from gateway.service_levels.stages import Stages
from gateway.store.sqlite import SqliteStore
from gateway.tasks import background

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


async def store_and_ledger(app: web.Application) -> AsyncIterator[None]:
    """Open the store, verify the ledger, keep checkpoints coming; close it all after."""
    config, identity = app[CONFIG], app[IDENTITY]
    origin = config.gateway.ledger_origin
    store = await SqliteStore.open(config.database, max_batch=config.store.max_batch)
    worker = app[CRYPTO_WORKER] = CryptoWorker()
    try:
        ledger = Ledger(store, origin, identity.checkpoint_verifiers(origin),
                        identity.checkpoint_signer(origin), app[CLOCK])
        await check_ledger(ledger, config.ledger.verify_on_start)
        app[STORE], app[LEDGER] = store, ledger
        schedule = CheckpointSchedule(
            ledger, config.ledger.checkpoint_every, config.ledger.checkpoint_interval
        )
        store.on_commit.append(schedule.notify)
        directory = DirectoryService(store, identity.gateway_id, app[CLOCK])
        await directory.reload()
        hub = Hub(config.limits.stream_queue)
        store.on_notify.append(hub.publish)
        stages = app[STAGES] = Stages(store, app[METRICS], identity.gateway_id)
        store.on_events.append(stages.observe)
        app[DIRECTORY], app[HUB] = directory, hub
        app[SESSIONS] = Sessions(app[CLOCK], ttl_seconds=config.officers.session_minutes * 60)
        app[LIMITER] = RateLimiter(app[CLOCK], config.limits.requests_per_second,
                                   config.limits.burst)
        app[ANON_LIMITER] = RateLimiter(app[CLOCK], config.limits.anonymous_per_second,
                                        config.limits.anonymous_burst)
        partners = app[PARTNERS] = Partners(config, identity, app[CLOCK], store)
        await partners.load_keys()  # key rotations followed before a restart
        await partners.load_directories()  # so that a partner down at start can be queued
        app[HOP] = HopVerifier(identity.gateway_id, app[CLOCK],
                               int(config.federation.hop_window_seconds * 1000),
                               partners.trusted, partners.learn_key)
        app[RECEIVER] = Receiver(store, directory, identity, app[CLOCK], worker,
                                 config.server.max_body_bytes, max_ahead_ms=int(
                                     (config.officers.clock_skew_seconds
                                      + config.federation.hop_window_seconds) * 1000))
        app[DELIVERY] = Delivery(
            store, directory, app[CLOCK], worker, gateway=identity.gateway_id,
            max_envelope=config.server.max_body_bytes,
            clock_skew_ms=int(config.officers.clock_skew_seconds * 1000), partners=partners,
        )
        witness = app[WITNESS] = Witness(store, partners, app[CLOCK], app[METRICS],
                                         config.federation.witness_seconds)
        levels = app[SERVICE_LEVELS] = ServiceLevels(
            config.service_levels, store, directory, stages, app[METRICS], app[CLOCK],
            identity.signing_key, identity.gateway_id, config.metrics.check_seconds)
        levels.listeners.append(hub.publish)
        async with contextlib.AsyncExitStack() as tasks:
            await partners.start()
            tasks.push_async_callback(partners.close)  # after every task below has ended
            await tasks.enter_async_context(background("checkpoints", schedule.run))
            await tasks.enter_async_context(background("directory", directory.watch))
            await tasks.enter_async_context(background("stages", stages.run))
            if config.service_levels:
                await tasks.enter_async_context(background("service_levels", levels.run))
            for partner in partners.by_id.values():
                sender = Sender(partner, partners, store, app[CLOCK], config.federation,
                                identity.gateway_id, worker, metrics=app[METRICS])
                await tasks.enter_async_context(
                    background(f"refresh:{partner.id}",
                               functools.partial(partners.refresh_loop, partner)))
                await tasks.enter_async_context(background(f"relay:{partner.id}", sender.run))
                await tasks.enter_async_context(
                    background(f"witness:{partner.id}",
                               functools.partial(witness.run, partner)))
            yield
        await ledger.make_checkpoint()  # a clean stop leaves no entry uncovered
    finally:
        worker.close()
        await store.close()


async def _end_streams(app: web.Application) -> None:
    if HUB in app:
        app[HUB].close_all()


def create_app(config: Config, bundle: KeyBundle, *, clock: Clock | None = None) -> web.Application:
    """The gateway as an aiohttp application, ready for a runner or a test server."""
    app = web.Application(
        middlewares=[error_middleware], client_max_size=config.server.max_body_bytes
    )
    app[CONFIG] = config
    app[BODY_TIMEOUT] = config.server.body_timeout_seconds
    app[IDENTITY] = Identity.from_bundle(config.gateway.id, bundle)
    app[CLOCK] = clock or SystemClock()
    app[METRICS] = Metrics()
    app[METRICS].info.labels(config.gateway.id, __version__).set(1)
    app.cleanup_ctx.append(store_and_ledger)
    app.on_shutdown.append(_end_streams)
    app.router.add_get("/healthz", healthz)
    peer.add_routes(app)
    federation.add_routes(app)
    client.add_routes(app)
    return app


def ssl_context(config: Config) -> ssl.SSLContext | None:
    server = config.server
    if server.tls_cert_file is None or server.tls_key_file is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(server.tls_cert_file, server.tls_key_file)
    return ctx

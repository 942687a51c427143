"""The metrics channel: ``GET /metrics`` in Prometheus' text format, on a listener of its
own (``[metrics]`` host and port), apart from the officers' and partners' port.

On loopback it needs no credentials. Anywhere else the configuration must name a token
file, and every scrape must send ``Authorization: Bearer <token>`` (compared in constant
time). Gauges that describe stored state (queues, ledger, partners) are read from the
store at each scrape, so they are never stale.
"""

from __future__ import annotations

import contextlib
import hmac
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.appkeys import CLOCK, METRICS, PARTNERS, STORE
from gateway.config import MetricsSection
from gateway.errors import ConfigError
from gateway.files import write_port_file
from gateway.httpbody import server_settings
from gateway.store import StatusStore
from gateway.tls import server_tls

MAIN = web.AppKey("main", web.Application)
TOKEN = web.AppKey("token", bytes)
MAX_TOKEN_BYTES = 512


async def refresh(main: web.Application) -> None:
    """Set the gauges that mirror stored state from the store, now."""
    store: StatusStore
    metrics, store, now = main[METRICS], main[STORE], main[CLOCK].now_ms()
    queues, reads = await store.queue_stats(), await store.read_queue_depths()
    for partner in main[PARTNERS].by_id.values():
        queue = queues.get(partner.id)
        depth = queue.depth if queue is not None else 0
        oldest = queue.oldest_queued_ms if queue is not None else None
        metrics.outbox_depth.labels(partner.id).set(depth)
        metrics.outbox_oldest.labels(partner.id).set(
            0 if oldest is None else max(now - oldest, 0) / 1000)
        metrics.reads_queued.labels(partner.id).set(reads.get(partner.id, 0))
        if partner.up is not None:
            metrics.partner_up.labels(partner.id).set(1 if partner.up else 0)
    size = store.ledger_size()
    metrics.ledger_size.set(size)
    latest = await store.latest_checkpoint()
    metrics.checkpoint_age.set(0 if latest is None else max(now - latest.made_ms, 0) / 1000)
    metrics.uncovered.set(size - (latest.size if latest is not None else 0))


async def get_metrics(request: web.Request) -> web.Response:
    token = request.app.get(TOKEN)
    if token is not None:
        given = request.headers.get("Authorization", "").encode()[:MAX_TOKEN_BYTES + 16]
        if not hmac.compare_digest(given, b"Bearer " + token):
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": "Bearer"})
    main = request.app[MAIN]
    await refresh(main)
    body = generate_latest(main[METRICS].registry)
    response = web.Response(body=body)
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    response.charset = "utf-8"
    return response


def read_token(path: Path) -> bytes:
    try:
        token = path.read_bytes().split(b"\n", 1)[0].strip()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the metrics token ({exc.strerror})") from None
    if not 16 <= len(token) <= MAX_TOKEN_BYTES or not token.isascii():
        raise ConfigError(f"{path}: the metrics token must be 16 to {MAX_TOKEN_BYTES} ASCII "
                          "characters on the first line")
    return token


def metrics_app(main: web.Application, settings: MetricsSection) -> web.Application:
    app = web.Application(client_max_size=1024)
    app[MAIN] = main
    if settings.token_file is not None:
        app[TOKEN] = read_token(settings.token_file)
    app.router.add_get("/metrics", get_metrics)
    return app


@contextlib.asynccontextmanager
async def serving(main: web.Application, settings: MetricsSection,
                  tls: ssl.SSLContext | None = None) -> AsyncIterator[int | None]:
    """Serve ``/metrics`` while the block runs; yields the bound port (None: disabled).
    ``tls``: the listener's TLS context, if the caller keeps it (to reload its
    certificate, gateway.reload); by default one is made from ``settings``."""
    if not settings.enabled:
        yield None
        return
    runner = web.AppRunner(metrics_app(main, settings), access_log=None,
                           handle_signals=False, **server_settings())
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, ssl_context=tls or server_tls(
            settings.tls_cert_file, settings.tls_key_file))
        await site.start()
        port = int(runner.addresses[0][1])
        if settings.port_file is not None:
            write_port_file(settings.port_file, port)
        yield port
    finally:
        await runner.cleanup()

"""The application over real HTTP on 127.0.0.1: health, descriptor, ledger endpoints."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.app import create_app
from gateway.appkeys import CRYPTO_WORKER, LEDGER, STORE
from gateway.cli.main import serve
from gateway.config import parse_config
from gateway.crypto.keyfile import KeyBundle
from gateway.crypto.keys import ROLE_GATEWAY_SIGNING, GatewaySigningKey
from gateway.errors import ConfigError
from gateway.ledger.events import READ, LedgerEvent
from gateway.protocol.checkpoint import open_checkpoint
from gateway.protocol.descriptor import verify_descriptor
from gateway.protocol.merkle import leaf_hash, verify_consistency, verify_inclusion
from gateway.store.sqlite import SqliteStore
from tests.helpers import GATEWAY_KEY, T0


def make_config(tmp_path: Path, **ledger: object):
    return parse_config(
        {"gateway": {"id": "vn-mps", "public_url": "http://127.0.0.1:1"},
         "keys": {"file": "unused.key"}, "ledger": ledger},
        tmp_path / "gw.toml",
    )


@pytest.fixture
async def client(tmp_path, aiohttp_client):
    bundle = KeyBundle("vn-mps", {ROLE_GATEWAY_SIGNING: GATEWAY_KEY})
    app = create_app(make_config(tmp_path, checkpoint_interval=3600.0), bundle)
    return await aiohttp_client(app)


async def test_health_and_descriptor(client) -> None:
    health = await client.get("/healthz")
    assert health.status == 200 and (await health.json())["gateway"] == "vn-mps"
    data = await (await client.get("/.well-known/fpg/descriptor")).read()
    descriptor = verify_descriptor(data, "vn-mps", GATEWAY_KEY.public)
    assert descriptor.base_url == "http://127.0.0.1:1"


async def test_ledger_endpoints_serve_verifiable_proofs(client) -> None:
    app = client.server.app
    assert (await (await client.get("/v1/ledger/checkpoint")).json())["error"] == "no_checkpoint"
    events = [LedgerEvent(READ, f"{i:032x}", T0 + i) for i in range(11)]
    await app[STORE].append_events(events)
    await app[LEDGER].make_checkpoint()
    note = await (await client.get("/v1/ledger/checkpoint")).read()
    cp = open_checkpoint(note, "fpg/vn-mps", app[LEDGER].verifiers)
    assert cp.size == 11
    leaves = [leaf_hash(e.encode(i)) for i, e in enumerate(events)]
    for index in (0, 5, 10):
        doc = await (await client.get(f"/v1/ledger/proof/inclusion?index={index}&size=11")).json()
        verify_inclusion(leaves[index], index, 11, [base64.b64decode(p) for p in doc["proof"]],
                         cp.root)
    doc = await (await client.get("/v1/ledger/proof/consistency?old=4&new=11")).json()
    old_root = await app[LEDGER].root(4)
    verify_consistency(4, 11, old_root, cp.root, [base64.b64decode(p) for p in doc["proof"]])


@pytest.mark.parametrize(
    "query",
    ["inclusion?index=11&size=11", "inclusion?index=0&size=99", "inclusion?index=-1&size=3",
     "inclusion?size=3", "consistency?old=5&new=2", "consistency?old=x&new=2",
     "inclusion?index=99999999999999999999&size=1"],
)
async def test_bad_proof_requests_are_400(client, query: str) -> None:
    await client.server.app[STORE].append_events([LedgerEvent(READ, "a" * 32, T0)] * 11)
    response = await client.get(f"/v1/ledger/proof/{query}")
    assert response.status == 400
    assert (await response.json())["error"] in ("bad_parameter", "bad_proof_request")


async def test_clean_stop_leaves_a_checkpoint(tmp_path, aiohttp_client) -> None:
    bundle = KeyBundle("vn-mps", {ROLE_GATEWAY_SIGNING: GATEWAY_KEY})
    app = create_app(make_config(tmp_path, checkpoint_interval=3600.0), bundle)
    client = await aiohttp_client(app)
    store = app[STORE]
    await store.append_events([LedgerEvent(READ, "b" * 32, T0)])
    await client.close()
    from gateway.store.sqlite import SqliteStore

    reopened = await SqliteStore.open(make_config(tmp_path).database)
    try:
        assert (await reopened.latest_checkpoint()).size == 1
    finally:
        await reopened.close()


# --- resources: one cleanup context each -----------------------------------------------------

RESOURCE_ORDER = [
    "database", "crypto_worker", "ledger_and_checkpoints", "stored_notices", "desk_directory",
    "live_updates", "stage_times", "partner_sessions", "message_paths", "service_levels",
    "case_deadlines", "partner_refreshes", "relay_senders", "witnesses", "retention",
]
# The tasks each resource runs (the store's two are named after its file).
RESOURCE_TASKS = {
    "database": {"store-committer:gateway.sqlite3", "store-wal:gateway.sqlite3"},
    "ledger_and_checkpoints": {"checkpoints"}, "stored_notices": {"notices"},
    "desk_directory": {"directory"},
    "stage_times": {"stages"}, "service_levels": {"service_levels"},
    "case_deadlines": {"case_deadlines"},
    "partner_refreshes": {"refresh:kh-cnp"}, "relay_senders": {"relay:kh-cnp"},
    "witnesses": {"witness:kh-cnp"}, "retention": {"retention"},
}
ALL_TASKS = set().union(*RESOURCE_TASKS.values())


def federated_config(tmp_path: Path, **extra: object):
    """vn-mps with one partner (kh-cnp, at a closed loopback port) and a service level, so
    that every resource has something to run."""
    doc = {"gateway": {"id": "vn-mps", "public_url": "http://127.0.0.1:1"},
           "keys": {"file": "unused.key"},
           "ledger": {"checkpoint_interval": 3600.0},
           "partners": [{"id": "kh-cnp", "url": "http://127.0.0.1:1",
                         "fingerprint": GatewaySigningKey.generate().public.fingerprint}],
           "service_levels": [{"priority": "flash", "stage": "read", "within_seconds": 60}],
           "store": {"retention_days": 3650},
           **extra}
    return parse_config(doc, tmp_path / "gw.toml")


def running_tasks() -> set[str]:
    return {t.get_name() for t in asyncio.all_tasks() if not t.done()} & ALL_TASKS


def traced(app: web.Application) -> list[tuple[str, str, set[str]]]:
    """Wrap each of the app's cleanup contexts to record, as (what, resource, tasks running
    then), when it has started, failed to start, and stopped."""
    trace: list[tuple[str, str, set[str]]] = []

    def wrap(ctx: Any) -> Any:
        @contextlib.asynccontextmanager
        async def run(app: web.Application) -> AsyncIterator[None]:
            try:
                async with contextlib.asynccontextmanager(ctx)(app):
                    trace.append(("started", ctx.__name__, running_tasks()))
                    yield
            except BaseException:
                trace.append(("failed", ctx.__name__, running_tasks()))
                raise
            trace.append(("stopped", ctx.__name__, running_tasks()))
        return run

    contexts = list(app.cleanup_ctx)
    app.cleanup_ctx.clear()
    app.cleanup_ctx.extend(wrap(c) for c in contexts)
    return trace


async def test_resources_start_in_dependency_order_and_stop_in_reverse(
        tmp_path, aiohttp_client) -> None:
    bundle = KeyBundle("vn-mps", {ROLE_GATEWAY_SIGNING: GATEWAY_KEY})
    app = create_app(federated_config(tmp_path), bundle)
    trace = traced(app)
    client = await aiohttp_client(app)
    assert (await client.get("/healthz")).status == 200
    await client.close()
    started = [name for what, name, _ in trace if what == "started"]
    stopped = [name for what, name, _ in trace if what == "stopped"]
    assert started == RESOURCE_ORDER
    assert stopped == RESOURCE_ORDER[::-1]
    # Each resource's tasks appear when it starts, and are gone when it has stopped while
    # those of every resource started before it still run.
    expected: set[str] = set()
    for name, (what, traced_name, tasks) in zip(RESOURCE_ORDER, trace, strict=False):
        assert (what, traced_name) == ("started", name)
        expected |= RESOURCE_TASKS.get(name, set())
        assert tasks == expected, name
    for what, name, tasks in trace[len(RESOURCE_ORDER):]:
        expected -= RESOURCE_TASKS.get(name, set())
        assert (what, tasks) == ("stopped", expected), name
    assert expected == set() and running_tasks() == set()


async def test_a_resource_that_fails_to_start_stops_those_started_before_it(tmp_path) -> None:
    bad = tmp_path / "bad.roster"
    bad.write_bytes(b"not a roster\n")
    anchor = {"id": "asean-ta", "roster": str(bad),
              "fingerprint": GatewaySigningKey.generate().public.fingerprint}
    config = federated_config(tmp_path, trust_anchors=[anchor])
    app = create_app(config, KeyBundle("vn-mps", {ROLE_GATEWAY_SIGNING: GATEWAY_KEY}))
    trace = traced(app)
    runner = web.AppRunner(app, handle_signals=False)
    with pytest.raises(ConfigError, match="roster"):
        await runner.setup()  # the partners cannot be trusted: partner_sessions fails
    before = RESOURCE_ORDER[:RESOURCE_ORDER.index("partner_sessions")]
    assert [(what, name) for what, name, _ in trace] == (
        [("started", name) for name in before] + [("failed", "partner_sessions")])
    assert trace[-1][2] == {"store-committer:gateway.sqlite3", "store-wal:gateway.sqlite3",
                            "checkpoints", "notices", "directory", "stages"}
    await runner.cleanup()
    assert [(what, name) for what, name, _ in trace[len(before) + 1:]] == (
        [("stopped", name) for name in reversed(before)])
    assert running_tasks() == set()
    with pytest.raises(ValueError):  # closed: its connections are gone
        await app[STORE].latest_checkpoint()
    with pytest.raises(RuntimeError, match="closed"):
        app[CRYPTO_WORKER].check_all([])
    # The stop was clean: the ledger's last checkpoint was signed.
    reopened = await SqliteStore.open(config.database)
    try:
        assert (await reopened.latest_checkpoint()).size == 0
    finally:
        await reopened.close()


async def test_gateway_run_stops_what_started_when_a_resource_fails(tmp_path) -> None:
    bad = tmp_path / "bad.roster"
    bad.write_bytes(b"not a roster\n")
    anchor = {"id": "asean-ta", "roster": str(bad),
              "fingerprint": GatewaySigningKey.generate().public.fingerprint}
    config = federated_config(tmp_path, trust_anchors=[anchor],
                              server={"host": "127.0.0.1", "port": 0})
    with pytest.raises(ConfigError, match="roster"):
        await serve(config, KeyBundle("vn-mps", {ROLE_GATEWAY_SIGNING: GATEWAY_KEY}))
    assert running_tasks() == set()  # the store's committer among them


@pytest.mark.parametrize(("host", "status"), [
    ("127.0.0.1:8443", 200), ("localhost", 200), ("[::1]:8443", 200),
    ("gw.vn-mps.example", 200),  # the public URL's host
    ("proxy.vn-mps.example:443", 200),  # named in server.allowed_hosts
    ("attacker.example", 421), ("gw.vn-mps.example.attacker.example", 421), ("", 421),
    ("[not an address", 421),
])
async def test_only_this_gateways_host_names_are_answered(tmp_path, aiohttp_client, host: str,
                                                          status: int) -> None:
    """DNS rebinding: a page on another site whose name now points here reaches the
    gateway with that name as Host, and is refused before any handler runs."""
    config = parse_config(
        {"gateway": {"id": "vn-mps", "public_url": "https://gw.vn-mps.example"},
         "keys": {"file": "unused.key"}, "server": {"allowed_hosts": ["proxy.vn-mps.example"]}},
        tmp_path / "gw.toml")
    client = await aiohttp_client(create_app(config, KeyBundle(
        "vn-mps", {ROLE_GATEWAY_SIGNING: GATEWAY_KEY})))
    answer = await client.get("/healthz", headers={"Host": host})
    assert answer.status == status
    if status == 421:
        assert (await answer.json())["error"] == "unknown_host"

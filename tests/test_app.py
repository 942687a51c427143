"""The application over real HTTP on 127.0.0.1: health, descriptor, ledger endpoints."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.appkeys import LEDGER, STORE
from gateway.config import parse_config
from gateway.crypto.keyfile import KeyBundle
from gateway.crypto.keys import ROLE_GATEWAY_SIGNING
from gateway.ledger.events import READ, LedgerEvent
from gateway.ledger.ledger import open_checkpoint
from gateway.ledger.merkle import leaf_hash, verify_consistency, verify_inclusion
from gateway.protocol.descriptor import verify_descriptor
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

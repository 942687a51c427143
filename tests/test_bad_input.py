"""Bad input gets a clear error with a stable code and changes nothing, byte for byte."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import aiohttp
import pytest

from gateway.app import create_app
from gateway.appkeys import CLOCK, CONFIG, STORE
from gateway.client.api import ENVELOPE_TYPE, GatewayClient
from gateway.config import parse_config
from gateway.crypto.keyfile import KeyBundle
from gateway.crypto.keys import ROLE_GATEWAY_SIGNING, OfficerSigningKey
from tests.helpers import GATEWAY_KEY, enrolled_officer, sealed


def db_fingerprint(app) -> str:
    """SHA-256 over the database file and its write-ahead log."""
    path = app[CONFIG].database
    h = hashlib.sha256()
    for suffix in ("", "-wal"):
        p = Path(f"{path}{suffix}")
        h.update(p.read_bytes() if p.exists() else b"<absent>")
    return h.hexdigest()


async def make_world(tmp_path: Path, aiohttp_server, **limits: object):
    cfg = parse_config(
        {"gateway": {"id": "vn-mps", "public_url": "http://127.0.0.1:1"},
         "keys": {"file": "unused.key"}, "ledger": {"checkpoint_interval": 3600.0},
         "server": {"max_body_bytes": 64 * 1024}, "limits": limits},
        tmp_path / "gw.toml",
    )
    app = create_app(cfg, KeyBundle("vn-mps", {ROLE_GATEWAY_SIGNING: GATEWAY_KEY}))
    server = await aiohttp_server(app)
    for desk in ("trafficking", "border-liaison"):
        await app[STORE].add_desk(desk, None, app[CLOCK].now_ms())
    return app, server


@pytest.fixture
async def world(tmp_path, aiohttp_server):
    app, server = await make_world(tmp_path, aiohttp_server)
    async with aiohttp.ClientSession() as http:
        a = await enrolled_officer(app, server, http, "trafficking")
        b = await enrolled_officer(app, server, http, "border-liaison")
        yield app, server, http, a, b


async def post_envelope(http, server, client: GatewayClient, data: bytes, **headers: str):
    async with http.post(server.make_url("/v1/messages"), data=data, headers={
        "Authorization": f"Bearer {client._token}", "Content-Type": ENVELOPE_TYPE, **headers,
    }) as response:
        return response.status, await response.json()


async def test_bad_envelopes_change_nothing(world) -> None:
    app, server, http, a, b = world
    good = sealed(a, [b])
    flipped = bytearray(good)
    flipped[40] ^= 1
    other = OfficerSigningKey.generate()
    by_other = bytearray(good)
    by_other[5:13] = other.public.key_id_bytes
    cases = {
        "malformed": (os.urandom(300), 400, "malformed"),
        "not an envelope": (b"hello", 400, "malformed"),
        "bad signature": (bytes(flipped), 400, "bad_signature"),
        "signed by someone else": (bytes(by_other), 403, "signer_mismatch"),
        "unknown desk": (sealed(a, [b], to="nowhere@vn-mps"), 404, "unknown_desk"),
        "unknown gateway": (sealed(a, [b], to="desk@xx-nowhere"), 404, "unknown_gateway"),
        "not my desk": (sealed(a, [b], frm="border-liaison@vn-mps"), 403, "not_a_member"),
        "wrong recipients": (sealed(a, [a]), 409, "recipients_mismatch"),
        "expired": (sealed(a, [b], expires_in=-1), 400, "expired"),
    }
    before, size = db_fingerprint(app), app[STORE].ledger_size()
    for name, (data, status, code) in cases.items():
        got_status, body = await post_envelope(http, server, a, data)
        assert (got_status, body["error"]) == (status, code), name
        assert body["message"] and "\n" not in body["message"]
    assert db_fingerprint(app) == before and app[STORE].ledger_size() == size
    assert (await post_envelope(http, server, a, good))[0] == 201  # and the good one passes
    assert db_fingerprint(app) != before


async def test_reading_and_acknowledging_refusals_change_nothing(world) -> None:
    app, server, http, a, b = world
    mid = (await a.send("hotline", "border-liaison", {"type": "hotline", "text": "x"}))["id"]
    before = db_fingerprint(app)
    auth_a = {"Authorization": f"Bearer {a._token}"}
    auth_b = {"Authorization": f"Bearer {b._token}"}
    checks = [
        ("GET", "/v1/desks/border-liaison@vn-mps/inbox", auth_a, None, 403, "not_a_member"),
        ("GET", "/v1/desks/nowhere@vn-mps/inbox", auth_a, None, 404, "unknown_desk"),
        ("GET", "/v1/desks/trafficking@vn-mps/inbox?limit=abc", auth_a, None, 400,
         "bad_parameter"),
        ("GET", f"/v1/messages/{'0' * 32}", auth_b, None, 404, "unknown_message"),
        ("GET", "/v1/directory", {}, None, 401, "no_session"),
        ("GET", "/v1/directory", {"Authorization": "Bearer forged"}, None, 401, "no_session"),
        ("POST", f"/v1/messages/{mid}/read", auth_b, {"read": 1, "signature": "AAAA"}, 400,
         "bad_time"),
        ("POST", f"/v1/messages/{mid}/read", auth_b,
         {"read": app[CLOCK].now_ms(), "signature": "AAAA"}, 400, "bad_signature"),
        ("POST", f"/v1/messages/{mid}/read", auth_b, {"read": "soon"}, 400, "bad_field"),
        ("POST", f"/v1/messages/{mid}/read", auth_a,
         {"read": app[CLOCK].now_ms(), "signature": "AAAA"}, 403, "not_a_member"),
        ("POST", "/v1/session", {}, {"officer": b.creds.officer_id, "challenge": "AAAA",
                                     "signature": "AAAA"}, 401, "bad_challenge"),
        ("POST", "/v1/session", {}, {"officer": "off-nobody", "challenge": "AAAA",
                                     "signature": "AAAA"}, 401, "bad_challenge"),
        ("POST", "/v1/enroll", {}, {"code": "FPG-AAAA-AAAA-AAAA-AAAA-AAAA", "sign_key": "x",
                                    "enc_key": "y", "signature": "z"}, 400, "bad_key"),
        ("POST", "/v1/session", {}, [1, 2], 400, "bad_json"),
    ]
    for method, path, headers, body, status, code in checks:
        async with http.request(method, server.make_url(path), headers=headers,
                                json=body) as response:
            doc = await response.json()
            assert (response.status, doc["error"]) == (status, code), path
    assert db_fingerprint(app) == before


async def test_oversized_bodies_are_refused_before_being_read(world) -> None:
    app, server, http, a, _ = world
    before = db_fingerprint(app)
    status, body = await post_envelope(http, server, a, b"\0" * (64 * 1024 + 1))
    assert (status, body["error"]) == (413, "too_large")

    async def chunks():
        for _ in range(100):
            yield b"\0" * 4096

    async with http.post(server.make_url("/v1/messages"), data=chunks(), headers={
        "Authorization": f"Bearer {a._token}", "Content-Type": ENVELOPE_TYPE,
    }) as response:  # no Content-Length: cut off once the limit is passed
        assert response.status == 413

    # A client that announces 100 MB and sends nothing gets its answer at once.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000000\r\n"
        f"Authorization: Bearer {a._token}\r\nContent-Type: {ENVELOPE_TYPE}\r\n\r\n".encode()
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), timeout=5)
    assert b" 413 " in status_line
    writer.close()
    assert db_fingerprint(app) == before


async def test_too_many_requests_is_429(tmp_path, aiohttp_server) -> None:
    app, server = await make_world(tmp_path, aiohttp_server, requests_per_second=0.5, burst=3)
    async with aiohttp.ClientSession() as http:
        a = await enrolled_officer(app, server, http, "trafficking")
        before = db_fingerprint(app)
        statuses = []
        for _ in range(6):
            async with http.get(server.make_url("/v1/desks/trafficking@vn-mps/inbox"),
                                headers={"Authorization": f"Bearer {a._token}"}) as response:
                statuses.append((response.status, (await response.json()).get("error")))
        assert statuses[:3] == [(200, None)] * 3
        assert statuses[3:] == [(429, "rate_limited")] * 3
        assert db_fingerprint(app) == before

"""Schemathesis against docs/openapi.yaml: requests generated from the documented schema
(valid and not), sent to a real `gateway run` process on 127.0.0.1 with an enrolled
officer's session, never get a 5xx. tests/test_hostile_http.py covers the routes the
document does not describe (federation) and checks that refusals change nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from gateway.cli.process import ServerProcess
from gateway.client.api import GatewayClient, enroll
from gateway.crypto.keys import OfficerEncryptionKey, OfficerSigningKey
from tests.helpers import gateway

ROOT = Path(__file__).resolve().parent.parent
# GET /v1/stream is an open event stream, not a request and answer: tests/test_openapi.py
# checks it against the schema.
schema = schemathesis.openapi.from_path(ROOT / "docs" / "openapi.yaml").exclude(
    path="/v1/stream")


@schemathesis.serializer("application/vnd.fpg.envelope")
def _envelope(ctx: object, value: object) -> bytes:
    """A sealed envelope is bytes; generated values go as their bytes or text."""
    return value if isinstance(value, bytes) else str(value).encode()


async def _session(url: str, code: str, fingerprint: str) -> str:
    async with aiohttp.ClientSession() as http:
        creds, _ = await enroll(http, url, code, OfficerSigningKey.generate(),
                                OfficerEncryptionKey.generate(), fingerprint=fingerprint)
        client = GatewayClient(http, creds)
        await client.sign_in()
        assert client._token is not None
        return client._token


@pytest.fixture(scope="module")
def target(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """A running gateway and the bearer token of an officer of desk trafficking."""
    d = tmp_path_factory.mktemp("fuzz") / "gw"
    assert gateway("init", str(d), "--id", "vn-mps", "--port", "0",
                   "--insecure-dev-keys").returncode == 0
    cfg = d / "gateway.toml"
    with open(cfg, "a") as fh:  # no rate limiter may turn the fuzzing into 429s only
        fh.write("\n[limits]\nrequests_per_second = 100000\nburst = 1000000\n"
                 "anonymous_per_second = 100000\nanonymous_burst = 1000000\n"
                 "enroll_per_second = 100000\nenroll_burst = 1000000\n"
                 "signin_address_per_second = 100000\nsignin_address_burst = 1000000\n"
                 "signin_officer_per_second = 100000\nsignin_officer_burst = 1000000\n")
    for desk in ("trafficking", "border-liaison"):
        assert gateway("desks", "add", desk, "--config", str(cfg)).returncode == 0
    code = gateway("officers", "invite", "--desk", "trafficking", "--config", str(cfg))
    fingerprint = gateway("keys", "show", "--config", str(cfg)).stdout.split(
        "fingerprint: ")[1].strip()
    with ServerProcess.gateway(cfg) as server:
        token = asyncio.run(_session(server.url, code.stdout.strip(), fingerprint))
        yield server.url, token
    assert server.returncode == 0, "the gateway did not stop cleanly after the fuzzing"


@schema.parametrize()
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_generated_requests_never_get_a_server_error(case, target) -> None:
    url, token = target
    headers = {"Authorization": f"Bearer {token}", **(case.headers or {})}
    response = case.call(base_url=url, headers=headers, timeout=10)
    assert response.status_code < 500, (case.method, case.path, response.status_code,
                                        response.text[:300])

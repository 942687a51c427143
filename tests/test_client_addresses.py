"""Who a request comes from (gateway/channels/addresses.py): behind a trusted reverse
proxy the client named in X-Forwarded-For, never a client's own word; IPv6 limited by
/64; enrollment limited for all addresses together too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app
from gateway.channels.addresses import limit_key
from gateway.config import parse_config
from gateway.crypto.keyfile import KeyBundle
from gateway.crypto.keys import ROLE_GATEWAY_SIGNING, GatewaySigningKey
from gateway.errors import ConfigError

KEY = GatewaySigningKey(b"\x51" * 32)
JUNK = {"code": "FPG-AAAA-AAAA-AAAA-AAAA-AAAA", "sign_key": "x", "enc_key": "x",
        "signature": "x"}


def test_limits_count_ipv6_by_its_64() -> None:
    assert limit_key("2001:db8:1:2::1") == limit_key("2001:db8:1:2:ffff::9") == \
        "2001:db8:1:2::/64"
    assert limit_key("2001:db8:1:3::1") != limit_key("2001:db8:1:2::1")
    assert limit_key("203.0.113.7") == "203.0.113.7"
    assert limit_key("::ffff:203.0.113.7") == "203.0.113.7"


async def served(tmp_path: Path, aiohttp_client: Any, **config: Any) -> Any:
    doc = {"gateway": {"id": "vn-mps", "public_url": "http://127.0.0.1:1",
                       "data_dir": str(tmp_path)},
           "keys": {"file": "unused.key"}, "log": {"level": "error"}, **config}
    app = create_app(parse_config(doc, tmp_path / "gw.toml"),
                     KeyBundle("vn-mps", {ROLE_GATEWAY_SIGNING: KEY}))
    return await aiohttp_client(app)


async def statuses(client: Any, forwarded: list[str]) -> list[int]:
    out = []
    for address in forwarded:
        answer = await client.post("/v1/enroll", json=JUNK,
                                   headers={"X-Forwarded-For": address})
        out.append(answer.status)
    return out


async def test_a_trusted_proxys_clients_are_limited_each_on_their_own(tmp_path,
                                                                    aiohttp_client) -> None:
    client = await served(tmp_path, aiohttp_client,
                          server={"trusted_proxies": ["127.0.0.0/8"]},
                          limits={"anonymous_per_second": 0.01, "anonymous_burst": 2})
    # The rightmost entry not a trusted proxy is the client; what it says before that is
    # its own word ("198.51.100.9" here) and does not buy a fresh bucket.
    assert await statuses(client, ["203.0.113.7", "198.51.100.9, 203.0.113.7",
                                   "203.0.113.7, 127.0.0.5"]) == [400, 400, 429]
    assert await statuses(client, ["203.0.113.8"]) == [400]  # another officer behind it
    assert await statuses(client, ["2001:db8::1", "2001:db8::2", "2001:db8::3"]) == [
        400, 400, 429]  # one /64


async def test_a_client_cannot_name_itself_without_a_trusted_proxy(tmp_path,
                                                                  aiohttp_client) -> None:
    client = await served(tmp_path, aiohttp_client,
                          limits={"anonymous_per_second": 0.01, "anonymous_burst": 2})
    assert await statuses(client, ["203.0.113.1", "203.0.113.2", "203.0.113.3"]) == [
        400, 400, 429]


async def test_enrollment_is_limited_for_all_addresses_together(tmp_path,
                                                                aiohttp_client) -> None:
    client = await served(tmp_path, aiohttp_client,
                          server={"trusted_proxies": ["127.0.0.1"]},
                          limits={"enroll_per_second": 0.01, "enroll_burst": 3})
    assert await statuses(client, [f"203.0.113.{i}" for i in range(1, 6)]) == [
        400, 400, 400, 429, 429]


def test_trusted_proxies_must_be_addresses(tmp_path) -> None:
    with pytest.raises(ConfigError, match="trusted_proxies"):
        parse_config({"gateway": {"id": "vn-mps", "public_url": "http://127.0.0.1:1"},
                      "keys": {"file": "unused.key"},
                      "server": {"trusted_proxies": ["proxy.example"]}}, tmp_path / "g.toml")

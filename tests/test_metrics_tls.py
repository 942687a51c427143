"""The metrics listener off loopback: only over TLS and with the scrapers' token, so the
token never travels in clear (certificates from a throwaway CA made by trustme)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme

from gateway.app import create_app
from gateway.channels.metrics import serving
from gateway.config import parse_config
from gateway.crypto.keyfile import KeyBundle
from gateway.crypto.keys import ROLE_GATEWAY_SIGNING, GatewaySigningKey
from gateway.errors import ConfigError

KEY = GatewaySigningKey(b"\x71" * 32)
TOKEN = "scrape-token-0123456789"
ANYWHERE = "0.0.0.0"  # noqa: S104 -- parsed, never bound


def config(tmp_path: Path, **metrics: Any) -> Any:
    return parse_config({"gateway": {"id": "vn-mps", "public_url": "http://127.0.0.1:1",
                                     "data_dir": str(tmp_path)},
                         "keys": {"file": "unused.key"}, "log": {"level": "error"},
                         "metrics": {"port": 0, **metrics}}, tmp_path / "gw.toml")


def test_metrics_off_loopback_need_tls_as_well_as_a_token(tmp_path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    with pytest.raises(ConfigError, match=r"\[metrics\] tls_cert_file: required"):
        config(tmp_path, host=ANYWHERE, token_file=str(token))
    with pytest.raises(ConfigError, match=r"\[metrics\] token_file: required"):
        config(tmp_path, host=ANYWHERE, tls_cert_file="c.pem", tls_key_file="k.pem")
    with pytest.raises(ConfigError, match="go together"):
        config(tmp_path, tls_cert_file="c.pem")
    config(tmp_path, host=ANYWHERE, token_file=str(token), tls_cert_file="c.pem",
           tls_key_file="k.pem")


async def test_metrics_are_scraped_over_tls_with_the_token(tmp_path, aiohttp_server) -> None:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "metrics.pem", tmp_path / "metrics.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    cfg = config(tmp_path, host="127.0.0.1", token_file=str(token),
                 tls_cert_file=str(cert), tls_key_file=str(key))
    main = create_app(cfg, KeyBundle("vn-mps", {ROLE_GATEWAY_SIGNING: KEY}))
    await aiohttp_server(main)  # its store and partners, which a scrape reads
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)
    async with serving(main, cfg.metrics) as port, aiohttp.ClientSession() as http:
        url = f"https://127.0.0.1:{port}/metrics"
        async with http.get(url, ssl=trusted,
                            headers={"Authorization": f"Bearer {TOKEN}"}) as answer:
            assert answer.status == 200
            assert "fpg_" in await answer.text()
        async with http.get(url, ssl=trusted) as answer:
            assert answer.status == 401
        with pytest.raises(aiohttp.ClientError):  # plain HTTP is not spoken there
            async with http.get(f"http://127.0.0.1:{port}/metrics",
                                headers={"Authorization": f"Bearer {TOKEN}"}) as answer:
                await answer.read()

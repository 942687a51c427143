"""TLS both ways: `gateway init --tls-cert/--tls-key`, partners behind a private CA
(``ca_file``), a client certificate shown to partners, each partner its own session.

Certificates come from throwaway CAs made by trustme; every server is real and listens
on 127.0.0.1."""

from __future__ import annotations

import datetime
import ssl
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from structlog.testing import capture_logs

from gateway.appkeys import PARTNERS
from gateway.channels import admin
from gateway.cli.admin import admin_request
from gateway.cli.process import ServerProcess
from gateway.clock import SystemClock
from gateway.config import load_config, parse_config
from gateway.crypto.keys import AnchorSigningKey, GatewaySigningKey
from gateway.errors import ConfigError, PeerError
from gateway.federation.identity import Identity
from gateway.federation.partners import Partners
from gateway.federation.roster import RosterEntry, make_roster
from gateway.tls import server_tls
from tests.helpers import (
    Gw,
    free_socket,
    free_socket_on,
    gateway,
    officers,
    one_line_error,
    pin,
    started,
    stop_all,
    until,
)

ANYWHERE = "0.0.0.0"  # noqa: S104 -- written in a configuration, never bound


def issue(ca: trustme.CA, directory: Path, name: str, *identities: str,
          **options: Any) -> tuple[Path, Path]:
    """A certificate chain and key from ``ca`` for ``identities``, as PEM files."""
    directory.mkdir(parents=True, exist_ok=True)
    issued = ca.issue_cert(*(identities or ("127.0.0.1",)), **options)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    return cert, key


def ca_file(ca: trustme.CA, path: Path) -> Path:
    ca.cert_pem.write_to_path(str(path))
    return path


def everything(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# --- gateway init --tls-cert --tls-key --------------------------------------------------


async def test_init_with_a_certificate_makes_a_gateway_that_serves_tls(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = issue(ca, tmp_path / "from-ca", "gw")
    key.chmod(0o644)  # as a careless copy left it: the gateway's copy is 0600 anyway
    # Off loopback (the configuration only: tests listen on loopback).
    anywhere = tmp_path / "anywhere"
    made = gateway("init", str(anywhere), "--id", "vn-mps", "--passphrase-env", "PW",
                   "--host", ANYWHERE, "--public-url", "https://gw.vn-mps.example",
                   "--tls-cert", str(cert), "--tls-key", str(key),
                   env={"PW": "a passphrase long enough"})
    assert made.returncode == 0, made.stderr
    config = load_config(anywhere / "gateway.toml")
    assert config.server.host == ANYWHERE and not config.server.loopback
    assert config.server.tls_cert_file == anywhere.resolve() / "tls" / "gateway.crt"
    assert config.server.tls_key_file == anywhere.resolve() / "tls" / "gateway.key"
    assert (anywhere / "tls" / "gateway.crt").read_bytes() == cert.read_bytes()
    assert (anywhere / "tls" / "gateway.key").read_bytes() == key.read_bytes()
    assert stat.S_IMODE((anywhere / "tls" / "gateway.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((anywhere / "tls").stat().st_mode) == 0o700

    # On loopback, run: https with the CA's trust, nothing in plain HTTP.
    here = tmp_path / "here"
    made = gateway("init", str(here), "--id", "vn-mps", "--insecure-dev-keys", "--port", "0",
                   "--tls-cert", str(cert), "--tls-key", str(key))
    assert made.returncode == 0, made.stderr
    assert load_config(here / "gateway.toml").gateway.public_url == "https://127.0.0.1:0"
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)
    with ServerProcess.gateway(here / "gateway.toml") as server:
        port = server.port
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
            async with http.get(f"https://127.0.0.1:{port}/healthz", ssl=trusted) as answer:
                assert answer.status == 200
            with pytest.raises(aiohttp.ClientConnectorCertificateError):  # not system-trusted
                async with http.get(f"https://127.0.0.1:{port}/healthz") as answer:
                    await answer.read()
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/healthz") as answer:
                    await answer.read()


def _bad_pairs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    ca = trustme.CA()
    cert, key = issue(ca, tmp_path, "good")
    _, other_key = issue(ca, tmp_path, "other")
    expired, expired_key = issue(ca, tmp_path, "expired", not_after=datetime.datetime(
        2020, 1, 1, tzinfo=datetime.UTC))
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate\n")
    return {
        "mismatched key": (["--tls-cert", str(cert), "--tls-key", str(other_key)],
                           "not a PEM certificate chain and the key it was issued for"),
        "expired": (["--tls-cert", str(expired), "--tls-key", str(expired_key)],
                    "certificate has expired"),
        "not PEM": (["--tls-cert", str(garbage), "--tls-key", str(key)],
                    "not a PEM certificate chain"),
        "missing": (["--tls-cert", str(tmp_path / "none.crt"), "--tls-key", str(key)],
                    "none.crt: cannot read (No such file or directory)"),
        "cert alone": (["--tls-cert", str(cert)], "--tls-cert and --tls-key go together"),
    }


@pytest.mark.parametrize("case", ["mismatched key", "expired", "not PEM", "missing",
                                  "cert alone"])
def test_init_with_unusable_tls_files_fails_and_leaves_nothing(tmp_path: Path,
                                                               case: str) -> None:
    options, expected = _bad_pairs(tmp_path / "files")[case]
    target = tmp_path / "out" / "gw"
    failed = gateway("init", str(target), "--id", "vn-mps", "--insecure-dev-keys", *options)
    assert failed.returncode == 2, failed.stdout
    assert expected in one_line_error(failed)
    assert everything(tmp_path / "out") == [] and not (tmp_path / "out").exists()


# --- partners behind a private CA ------------------------------------------------------


@dataclass
class TlsGw(Gw):
    """A :class:`Gw` that may serve https (``tls``: its certificate and key) and gives
    its partners' tables and its [federation] table more keys (``partner_keys``,
    ``federation_keys``: the TLS files)."""

    tls: tuple[Path, Path] | None = None
    partner_keys: dict[str, dict[str, str]] = field(default_factory=dict)
    federation_keys: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def config_doc(self) -> dict[str, Any]:
        doc = super().config_doc()
        doc["federation"] = {**doc["federation"], **self.federation_keys}
        for table in doc["partners"]:
            table.update(self.partner_keys.get(table["id"], {}))
        return doc

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.sock.fileno() < 0:
            self.sock = free_socket_on(self.port_was)
        from gateway.app import create_app
        from gateway.crypto.keyfile import KeyBundle
        from gateway.crypto.keys import ROLE_GATEWAY_SIGNING
        self.app = create_app(self.config(), KeyBundle(self.id, {ROLE_GATEWAY_SIGNING: self.key}))
        self.runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await self.runner.setup()
        context = server_tls(*self.tls) if self.tls else None
        await web.SockSite(self.runner, self.sock, ssl_context=context).start()


def tls_gw(tmp_path: Path, name: str, tls: tuple[Path, Path] | None = None) -> TlsGw:
    return TlsGw(name, GatewaySigningKey.generate(), tmp_path / name, free_socket(), tls=tls)


async def test_a_partner_behind_a_private_ca_is_reached_only_with_its_ca_file(
        tmp_path: Path) -> None:
    ca = trustme.CA()
    kh = tls_gw(tmp_path, "kh-cnp", tls=issue(ca, tmp_path / "kh-tls", "kh"))
    vn = tls_gw(tmp_path, "vn-mps")
    pin(vn, kh)
    assert vn.partners["kh-cnp"][0].startswith("https://127.0.0.1:")
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)  # the officers' clients trust the CA too
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusted),
                                 timeout=aiohttp.ClientTimeout(total=30))
    socket_path = tmp_path / "admin.sock"
    try:
        # Without the CA: refused at the handshake (before any request is sent), said in
        # `gateway partners`.
        await started(vn, kh)
        assert vn.app is not None
        async with admin.serving(vn.app, socket_path):
            async def kh_report() -> dict[str, Any]:
                (entry,) = (await admin_request(socket_path, "GET", "/partners"))["partners"]
                return entry
            # (KH starts after VN: its first error may be a refused connection.)
            await until(lambda: _tls_error(kh_report()), "KH reported with a TLS error")
            entry = await kh_report()
        assert entry["state"] == "down", entry
        assert "TLS certificate does not verify" in entry["last_error"]
        assert "ca_file" in entry["last_error"]
        await vn.stop()

        # With KH's CA as its ca_file: the partner is up and a message crosses over TLS.
        vn.partner_keys["kh-cnp"] = {"ca_file": str(ca_file(ca, tmp_path / "kh-ca.pem"))}
        await vn.start()
        a, k = await officers(vn, kh, http)
        sent = await a.send("hotline", "anti-trafficking@kh-cnp",
                            {"type": "hotline", "text": "over TLS"}, priority="flash")
        assert sent["status"] == "accepted"
        await until(lambda: kh.rows("SELECT COUNT(*) FROM messages WHERE id = ?",
                                    sent["id"]) == [(1,)], "the message at KH")
        opened = await k.read(sent["id"])
        assert opened.payload["text"] == "over TLS"
        assert vn.app[PARTNERS].by_id["kh-cnp"].up is True
    finally:
        await http.close()
        await stop_all(vn, kh)


async def _tls_error(report: Any) -> bool:
    return "TLS" in ((await report)["last_error"] or "")


# --- the client certificate shown to partners ------------------------------------------


@dataclass
class AskingPartner:
    """A stand-in partner on https that asks for a client certificate issued by one CA
    (CERT_REQUIRED) and records the subject of each one shown; answers 404."""

    url: str
    seen: list[str]


@pytest.fixture
async def asking(tmp_path: Path) -> AsyncIterator[tuple[AskingPartner, trustme.CA, Path]]:
    """The stand-in, the CA its clients' certificates must come from, and the CA file
    its own certificate verifies with."""
    server_ca, client_ca = trustme.CA(), trustme.CA()
    context = server_tls(*issue(server_ca, tmp_path / "standin", "standin"))
    assert context is not None
    context.verify_mode = ssl.CERT_REQUIRED
    client_ca.configure_trust(context)
    seen: list[str] = []

    async def anything(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        seen.append(dict(peer["subject"][-1])["commonName"] if peer else "-")
        return web.Response(status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = free_socket()
    await web.SockSite(runner, sock, ssl_context=context).start()
    try:
        yield (AskingPartner(f"https://127.0.0.1:{sock.getsockname()[1]}", seen), client_ca,
               ca_file(server_ca, tmp_path / "standin-ca.pem"))
    finally:
        await runner.cleanup()


def _client_cert(ca: trustme.CA, directory: Path, name: str) -> dict[str, str]:
    cert, key = issue(ca, directory, name, f"{name}.example", common_name=name)
    return {"client_cert_file": str(cert), "client_key_file": str(key)}


def _partners(tmp_path: Path, federation: dict[str, Any],
              partners: list[dict[str, Any]]) -> Partners:
    me = GatewaySigningKey.generate()
    config = parse_config({
        "gateway": {"id": "vn-mps", "public_url": "http://127.0.0.1:1",
                    "data_dir": str(tmp_path)},
        "keys": {"file": "unused.key"}, "log": {"level": "error"},
        "federation": {"request_timeout_seconds": 5.0, **federation},
        "partners": [{"fingerprint": GatewaySigningKey.generate().public.fingerprint, **p}
                     for p in partners]}, tmp_path / "gw.toml")
    return Partners(config, Identity("vn-mps", me), SystemClock())


@pytest.mark.parametrize("where", ["federation", "partner", "partner over federation"])
async def test_the_configured_client_certificate_is_shown_to_a_partner_that_asks(
        tmp_path: Path, asking: tuple[AskingPartner, trustme.CA, Path], where: str) -> None:
    standin, client_ca, standin_ca = asking
    federation: dict[str, Any] = {"ca_file": str(standin_ca)}
    partner: dict[str, Any] = {"id": "kh-cnp", "url": standin.url}
    if where != "partner":
        federation.update(_client_cert(client_ca, tmp_path / "certs", "vn-fed"))
    if where != "federation":
        partner.update(_client_cert(client_ca, tmp_path / "certs", "vn-for-kh"))
    partners = _partners(tmp_path, federation, [partner])
    await partners.start()
    try:
        status, _ = await partners.request(partners.by_id["kh-cnp"], "GET", "/anything")
    finally:
        await partners.close()
    assert status == 404
    assert standin.seen == ["vn-fed" if where == "federation" else "vn-for-kh"]


async def test_without_a_client_certificate_a_partner_that_asks_refuses_the_handshake(
        tmp_path: Path, asking: tuple[AskingPartner, trustme.CA, Path]) -> None:
    standin, _, standin_ca = asking
    # One from a CA the partner does not trust is no better than none.
    for federation in ({}, _client_cert(trustme.CA(), tmp_path / "other", "stranger")):
        partners = _partners(tmp_path, {"ca_file": str(standin_ca), **federation},
                             [{"id": "kh-cnp", "url": standin.url}])
        await partners.start()
        try:
            with pytest.raises(PeerError, match=r"kh-cnp.*client certificate"):
                await partners.request(partners.by_id["kh-cnp"], "GET", "/anything")
        finally:
            await partners.close()
    assert standin.seen == []


async def test_each_partner_has_its_own_session_closed_when_the_gateway_stops(
        tmp_path: Path, asking: tuple[AskingPartner, trustme.CA, Path]) -> None:
    standin, client_ca, standin_ca = asking
    partners = _partners(tmp_path, {"ca_file": str(standin_ca)}, [
        {"id": "kh-cnp", "url": standin.url, **_client_cert(client_ca, tmp_path, "for-kh")},
        {"id": "la-mps", "url": standin.url, **_client_cert(client_ca, tmp_path, "for-la")}])
    await partners.start()
    for partner in ("kh-cnp", "la-mps", "kh-cnp"):
        status, _ = await partners.request(partners.by_id[partner], "GET", "/")
        assert status == 404
    sessions = [partners.session_of(p) for p in ("kh-cnp", "la-mps")]
    assert sessions[0] is not None and sessions[1] is not None
    assert sessions[0] is not sessions[1]
    assert sessions[0].connector is not sessions[1].connector
    assert standin.seen == ["for-kh", "for-la", "for-kh"]  # each its own certificate
    await partners.close()
    assert all(s is not None and s.closed for s in sessions)
    assert partners.session_of("kh-cnp") is None
    with pytest.raises(PeerError, match="not started"):
        await partners.request(partners.by_id["kh-cnp"], "GET", "/")


# --- configuration ----------------------------------------------------------------------


def _config(tmp_path: Path, federation: dict[str, Any] | None = None,
            **partner: Any) -> Any:
    return parse_config({
        "gateway": {"id": "vn-mps", "public_url": "http://127.0.0.1:1"},
        "keys": {"file": "unused.key"}, "federation": federation or {},
        "partners": [{"id": "kh-cnp", "url": "https://gw.kh-cnp.example",
                      "fingerprint": GatewaySigningKey.generate().public.fingerprint,
                      **partner}]}, tmp_path / "gw.toml")


def test_partner_tls_files_are_checked_when_the_configuration_loads(tmp_path: Path) -> None:
    ca = trustme.CA()
    good_ca = ca_file(ca, tmp_path / "ca.pem")
    cert, key = issue(ca, tmp_path, "client")
    _, other_key = issue(ca, tmp_path, "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("no certificate here\n")
    cases: list[tuple[dict[str, Any], dict[str, Any], str]] = [
        ({}, {"ca_file": "missing.pem"},
         r"\[\[partners\]\] #1 ca_file: .*missing.pem: cannot read \(No such file"),
        ({"ca_file": str(garbage)}, {},
         r"\[federation\] ca_file: .*garbage.pem: no PEM CA certificate"),
        ({"client_cert_file": str(cert)}, {},
         r"\[federation\] client_key_file: client_cert_file and client_key_file go together"),
        ({}, {"client_cert_file": str(cert), "client_key_file": str(other_key)},
         r"\[\[partners\]\] #1 client_cert_file: .*not a PEM certificate chain and the key"),
        ({}, {"url": "http://gw.kh-cnp.example:8443"},
         r"\[\[partners\]\] #1 url: plain http:// is only allowed on loopback"),
        ({}, {"url": "http://127.0.0.1:8443", "ca_file": str(good_ca)},
         r"\[\[partners\]\] #1 ca_file: the partner's URL is plain http://"),
    ]
    for federation, partner, expected in cases:
        with pytest.raises(ConfigError, match=expected):
            _config(tmp_path, federation, **partner)
    # Loopback in plain HTTP stays allowed (the demo, tests).
    _config(tmp_path, url="http://127.0.0.1:8443")
    _config(tmp_path, url="http://[::1]:8443")

    # A partner's own files win over [federation]'s; the client pair goes as a pair.
    other_ca = ca_file(trustme.CA(), tmp_path / "other-ca.pem")
    fed = {"ca_file": str(good_ca), "client_cert_file": str(cert), "client_key_file": str(key)}
    config = _config(tmp_path, fed)
    files = config.partner_tls(config.partners[0])
    assert (files.ca_file, files.client_cert_file) == (good_ca, cert)
    config = _config(tmp_path, fed, ca_file=str(other_ca))
    assert config.partner_tls(config.partners[0]).ca_file == other_ca
    assert config.partner_tls(config.partners[0]).client_cert_file == cert


def test_a_roster_entry_in_plain_http_off_loopback_is_ignored(tmp_path: Path) -> None:
    # A trust anchor's roster is checked like the configuration: its gateways are reached
    # over https, or in plain http:// on loopback only.
    anchor = AnchorSigningKey.generate()
    now = int(time.time() * 1000)
    entries = [RosterEntry(gw, url, GatewaySigningKey.generate().public.fingerprint,
                           now - 1000, now + 60_000)
               for gw, url in (("kh-cnp", "http://gw.kh-cnp.example:8443"),
                               ("la-mps", "https://gw.la-mps.example"),
                               ("th-rtp", "http://127.0.0.1:9"))]
    roster = tmp_path / "asean.roster"
    roster.write_bytes(make_roster("asean-ta", anchor, entries, now - 1000, now + 60_000))
    config = parse_config({
        "gateway": {"id": "vn-mps", "public_url": "http://127.0.0.1:1"},
        "keys": {"file": "unused.key"},
        "trust_anchors": [{"id": "asean-ta", "fingerprint": anchor.public.fingerprint,
                           "roster": str(roster)}]}, tmp_path / "gw.toml")
    with capture_logs() as logs:
        partners = Partners(config, Identity("vn-mps", GatewaySigningKey.generate()),
                            SystemClock())
    assert sorted(partners.by_id) == ["la-mps", "th-rtp"]
    (ignored,) = [e for e in logs if e["event"] == "roster_entry_ignored"]
    assert ignored["url"] == "http://gw.kh-cnp.example:8443"
    assert "only allowed on loopback" in ignored["reason"]

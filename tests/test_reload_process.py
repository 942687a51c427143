"""`gateway run` processes and signals: SIGHUP reloads, a new certificate is served to new
connections while open ones carry on, and no signal ends the gateway without a log line."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509

from gateway.cli.process import ServerProcess
from tests.helpers import gateway


def init(directory: Path, config: str = "") -> Path:
    assert gateway("init", str(directory), "--id", "vn-mps", "--port", "0",
                   "--insecure-dev-keys").returncode == 0
    cfg = directory / "gateway.toml"
    text = cfg.read_text()
    cfg.write_text(text.replace("[server]\n", "[server]\n" + config, 1))
    return cfg


def log_lines(server: ServerProcess) -> list[dict[str, Any]]:
    lines = []
    for line in server.output().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def wait_for(server: ServerProcess, event: str, count: int = 1,
             seconds: float = 20.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = [e for e in log_lines(server) if e.get("event") == event]
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no {event} line in time:\n{server.log_tail(12)}")


def send(server: ServerProcess, sig: signal.Signals) -> None:
    os.kill(server.pid, sig)


def test_sighup_reloads_and_other_signals_are_logged_and_ignored(tmp_path: Path) -> None:
    cfg = init(tmp_path / "vn")
    with ServerProcess.gateway(cfg) as server:
        send(server, signal.SIGHUP)
        (reloaded,) = wait_for(server, "reloaded")
        assert reloaded["changes"] == 0 and reloaded["needs_restart"] == 0
        assert wait_for(server, "reload_requested")[0]["signal"] == "SIGHUP"
        for i, sig in enumerate((signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM)):
            send(server, sig)
            ignored = wait_for(server, "signal_ignored", i + 1)
            assert ignored[-1]["signal"] == sig.name
            time.sleep(0.2)
            assert server.running
        cfg.write_text(cfg.read_text().replace('level = "info"', 'level = "loud"'))
        send(server, signal.SIGHUP)
        (refused,) = wait_for(server, "reload_refused")
        assert "[log] level: must be one of" in refused["error"]
        assert server.running
    assert server.returncode == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGQUIT])
def test_every_signal_that_stops_the_gateway_logs_which(tmp_path: Path,
                                                        sig: signal.Signals) -> None:
    cfg = init(tmp_path / "vn")
    server = ServerProcess.gateway(cfg)
    server.start()
    try:
        send(server, sig)
        assert server.proc is not None and server.proc.wait(30) == 0
    finally:
        server.kill()
    (stopping,) = [e for e in log_lines(server) if e.get("event") == "stopping"]
    assert stopping["signal"] == sig.name and stopping["gateway"] == "vn-mps"


def test_a_fault_signal_ends_the_gateway_with_a_traceback(tmp_path: Path) -> None:
    cfg = init(tmp_path / "vn")
    server = ServerProcess.gateway(cfg)
    server.start()
    try:
        send(server, signal.SIGABRT)
        assert server.proc is not None and server.proc.wait(30) == -signal.SIGABRT
    finally:
        server.kill()
    assert "Fatal Python error: Aborted" in server.output()


# --- certificates ----------------------------------------------------------------------


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def write_cert(ca: trustme.CA, directory: Path) -> int:
    """A new certificate for 127.0.0.1 at tls/gateway.crt and .key; its serial number."""
    cert = ca.issue_cert("127.0.0.1", "localhost")
    (directory / "tls").mkdir(exist_ok=True)
    for name, blob in (("gateway.crt", cert.cert_chain_pems[0].bytes()),
                       ("gateway.key", cert.private_key_pem.bytes())):
        tmp = directory / "tls" / (name + ".tmp")
        tmp.write_bytes(blob)
        tmp.replace(directory / "tls" / name)
    return int(x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes()).serial_number)


@pytest.fixture
def connections(ca: trustme.CA) -> Iterator[list[ssl.SSLSocket]]:
    opened: list[ssl.SSLSocket] = []
    yield opened
    for conn in opened:
        conn.close()


def connect(ca: trustme.CA, port: int, opened: list[ssl.SSLSocket]) -> ssl.SSLSocket:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    conn = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                           server_hostname="127.0.0.1")
    opened.append(conn)
    return conn


def serial(conn: ssl.SSLSocket) -> int:
    cert = conn.getpeercert()
    assert cert is not None
    return int(str(cert["serialNumber"]), 16)


def healthz(conn: ssl.SSLSocket) -> str:
    """One request on the connection (kept alive); the answer's status line."""
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        assert chunk, "the connection was closed"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += conn.recv(4096)
    return head.split(b"\r\n")[0].decode()


def test_a_reloaded_certificate_is_served_to_new_connections_and_open_ones_stay(
        tmp_path: Path, ca: trustme.CA, connections: list[ssl.SSLSocket]) -> None:
    directory = tmp_path / "vn"
    cfg = init(directory, 'tls_cert_file = "tls/gateway.crt"\n'
                          'tls_key_file = "tls/gateway.key"\n')
    first = write_cert(ca, directory)
    with ServerProcess.gateway(cfg) as server:
        old = connect(ca, server.port, connections)
        assert serial(old) == first and healthz(old) == "HTTP/1.1 200 OK"
        second = write_cert(ca, directory)
        assert second != first
        reloaded = gateway("reload", "--config", str(cfg))
        assert reloaded.returncode == 0, reloaded.stderr
        assert "server certificate" in reloaded.stdout
        assert wait_for(server, "certificate_reloaded")[0]["listener"] == "server"
        new = connect(ca, server.port, connections)
        assert serial(new) == second and healthz(new) == "HTTP/1.1 200 OK"
        assert healthz(old) == "HTTP/1.1 200 OK" and serial(old) == first  # not dropped
        # A certificate file that does not load is refused; the one in force stays.
        (directory / "tls" / "gateway.crt").write_text("not a certificate\n")
        refused = gateway("reload", "--config", str(cfg))
        assert refused.returncode == 2
        assert "reload refused, the configuration in force is unchanged" in refused.stderr
        assert "[server] tls_cert_file: cannot load" in refused.stderr
        assert serial(connect(ca, server.port, connections)) == second
        assert healthz(old) == "HTTP/1.1 200 OK"
    assert server.returncode == 0

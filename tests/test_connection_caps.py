"""Connections are capped in total and per client address, idle ones are closed, the
descriptor limit is raised at start and failing accepts are logged at a bounded rate
(gateway/channels/listener.py, gateway/cli/main.py).

Real ``gateway run`` processes on 127.0.0.1 with small caps: five connections per address
and eight in all. Clients connect from other loopback addresses (127.0.0.2, 127.0.0.3)
to stand for other machines. A connection past a cap is closed as soon as it is accepted,
before its request is read: it gets no answer at all, not even after the header timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.channels.listener import ACCEPT_ERROR, AcceptErrorLog, ConnectionCaps
from gateway.cli.process import ServerProcess, gateway_command
from tests.helpers import gateway

PER_ADDRESS, TOTAL = 5, 8
HEADER_TIMEOUT = 3.0  # seconds; a refused connection must be closed long before this
REFUSED_WITHIN = 1.0


def gateway_dir(directory: Path, server: str) -> Path:
    """``gateway init`` in ``directory`` with ``server`` added to its [server] table and
    the metrics port written to ``metrics-port`` beside it."""
    assert gateway("init", str(directory), "--id", "vn-mps", "--port", "0",
                   "--insecure-dev-keys").returncode == 0
    cfg = directory / "gateway.toml"
    text = cfg.read_text().replace("[server]\n", "[server]\n" + server, 1)
    cfg.write_text(text.replace("[metrics]", "[metrics]\nport_file = \"metrics-port\"", 1))
    return cfg


@contextlib.contextmanager
def serving(cfg: Path, *prefix: str) -> Iterator[ServerProcess]:
    """``gateway run`` on ``cfg`` (its command after ``prefix``, e.g. ``prlimit``)."""
    port_file = cfg.with_name("port")
    with ServerProcess([*prefix, *gateway_command(cfg, port_file)], port_file=port_file,
                       log=cfg.with_name("gateway.log")) as server:
        yield server
    assert server.returncode == 0, server.log_tail(20)


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    cfg = gateway_dir(tmp_path_factory.mktemp("caps") / "gw",
                      f"max_connections = {TOTAL}\n"
                      f"max_connections_per_address = {PER_ADDRESS}\n"
                      f"header_timeout_seconds = {HEADER_TIMEOUT}\n")
    with serving(cfg) as server:
        yield server


def connect(port: int, source: str, wait: float = 0.05) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    time.sleep(wait)  # accepted and counted before the next one comes
    return sock


def closed(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` within ``within`` seconds, answering nothing."""
    sock.settimeout(within)
    try:
        data = sock.recv(4096)
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    assert data == b"", data  # a refused connection is never answered
    return True


def healthz(port: int, source: str) -> int:
    """The status of ``GET /healthz`` from ``source`` (0: the connection was closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5,
                                  source_address=(source, 0)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        try:
            head = sock.recv(64)
        except ConnectionResetError:
            return 0
    return int(head.split()[1]) if head.startswith(b"HTTP/1.1 ") else 0


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settle(port: int) -> None:
    """Until the server has counted every closed connection out again."""
    for _ in range(100):
        held = [connect(port, f"127.0.1.{n % 2}") for n in range(TOTAL)]  # 4 and 4
        ok = not any(closed(sock, 0.05) for sock in held)
        for sock in held:
            sock.close()
        if ok:
            return
        time.sleep(0.05)
    raise AssertionError("the server kept counting closed connections")


def test_past_the_cap_per_address_a_connection_is_closed_unread(capped) -> None:
    port = capped.port
    held = [connect(port, "127.0.0.1") for _ in range(PER_ADDRESS)]
    try:
        one_more = connect(port, "127.0.0.1")
        one_more.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        started = time.monotonic()
        assert closed(one_more, HEADER_TIMEOUT)
        assert time.monotonic() - started < REFUSED_WITHIN
        one_more.close()
        assert healthz(port, "127.0.0.2") == 200  # another address is served
        assert healthz(port, "127.0.0.1") == 0
        assert not any(closed(sock, 0.05) for sock in held)  # the five are kept
        held.pop().close()
        time.sleep(0.2)
        assert healthz(port, "127.0.0.1") == 200  # a place freed is taken again
    finally:
        for sock in held:
            sock.close()
    settle(port)


def test_past_the_total_cap_every_address_is_refused(capped) -> None:
    port = capped.port
    held = [connect(port, "127.0.0.1") for _ in range(PER_ADDRESS)]
    held += [connect(port, "127.0.0.2") for _ in range(TOTAL - PER_ADDRESS)]
    try:
        assert healthz(port, "127.0.0.3") == 0
        assert not any(closed(sock, 0.05) for sock in held)
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert healthz(port, "127.0.0.3") == 200
    settle(port)


def test_a_flood_of_idle_connections_holds_no_descriptors_and_others_are_served(
        capped) -> None:
    """Sixty idle connections from one address: five are held, the rest closed at once."""
    port, before = capped.port, descriptors(capped.pid)
    flood = [connect(port, "127.0.0.1", wait=0) for _ in range(60)]
    try:
        time.sleep(0.3)
        started = time.monotonic()
        assert healthz(port, "127.0.0.2") == 200
        assert time.monotonic() - started < 1.0
        assert descriptors(capped.pid) <= before + PER_ADDRESS + 2
        assert sum(closed(sock, 0.05) for sock in flood) == 60 - PER_ADDRESS
    finally:
        for sock in flood:
            sock.close()
    settle(port)


def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout(capped) -> None:
    sock = connect(capped.port, "127.0.0.4")
    started = time.monotonic()
    with sock:
        assert not closed(sock, HEADER_TIMEOUT / 2)
        assert closed(sock, HEADER_TIMEOUT + 2)
    assert HEADER_TIMEOUT - 0.5 < time.monotonic() - started < HEADER_TIMEOUT + 2
    settle(capped.port)


def refused_connections(cfg: Path) -> dict[str, float]:
    """``fpg_refused_connections_total`` by reason, scraped from the metrics listener."""
    port = int((cfg.parent / "metrics-port").read_text())
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        text = b"".join(iter(lambda: sock.recv(65536), b"")).decode()
    found = re.findall(r'^fpg_refused_connections_total\{reason="(\w+)"\} (\S+)$', text, re.M)
    return {reason: float(value) for reason, value in found}


def test_refused_connections_are_counted_by_the_cap_they_met(capped) -> None:
    cfg = Path(capped.command[capped.command.index("--config") + 1])
    before = refused_connections(cfg)
    assert set(before) == {"total", "per_address"}  # both exported from the start
    port = capped.port
    held = [connect(port, "127.0.0.1") for _ in range(PER_ADDRESS)]
    try:
        assert healthz(port, "127.0.0.1") == 0  # the sixth from one address
        assert healthz(port, "127.0.0.1") == 0
        held += [connect(port, "127.0.0.2") for _ in range(TOTAL - PER_ADDRESS)]
        assert healthz(port, "127.0.0.3") == 0  # the ninth in all
    finally:
        for sock in held:
            sock.close()
    after = refused_connections(cfg)
    assert after["per_address"] - before["per_address"] == 2
    assert after["total"] - before["total"] == 1
    settle(port)


# --- descriptors ---------------------------------------------------------------------------


def limits_of(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-files line")


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one(tmp_path: Path) -> None:
    cfg = gateway_dir(tmp_path / "gw", "")
    with serving(cfg, "prlimit", "--nofile=256:4096", "--") as server:
        assert limits_of(server.pid) == (4096, 4096)
    assert '"raised_from": 256' in server.output() or "raised_from=256" in server.output()


def test_failing_accepts_are_logged_once_per_interval(tmp_path: Path) -> None:
    """With 96 descriptors at most and no cap below, a hundred idle connections make
    accept() fail over and over: asyncio would log each failure (hundreds a second)."""
    cfg = gateway_dir(tmp_path / "gw", "max_connections_per_address = 1000\n"
                                       "header_timeout_seconds = 30\n")
    with serving(cfg, "prlimit", "--nofile=96:96", "--") as server:
        flood = [socket.create_connection(("127.0.0.1", server.port), timeout=5)
                 for _ in range(100)]
        try:
            time.sleep(2.5)
            lines = [line for line in server.output().splitlines() if ACCEPT_ERROR in line]
            assert len(lines) == 1, len(lines)
        finally:
            for sock in flood:
                sock.close()
        time.sleep(1.5)  # asyncio listens again a second after a failure
        assert healthz(server.port, "127.0.0.1") == 200


def test_the_accept_log_lets_one_line_through_per_interval_with_a_count(
        capsys: pytest.CaptureFixture[str]) -> None:
    now = [0.0]
    passed_on: list[str] = []
    loop = asyncio.new_event_loop()
    try:
        loop.set_exception_handler(lambda _, context: passed_on.append(context["message"]))
        limiter = AcceptErrorLog(every=10.0, now=lambda: now[0])
        limiter.install(loop)
        logged: list[int] = []
        for n in range(12_000):  # 12,000 failures in 12 seconds
            now[0] = n / 1000
            before = limiter.held_back
            loop.call_exception_handler({"message": ACCEPT_ERROR,
                                         "exception": OSError(errno.EMFILE, "Too many")})
            if limiter.held_back <= before:
                logged.append(before)
        loop.call_exception_handler({"message": "something else"})
    finally:
        loop.close()
    assert logged == [0, 9_999]  # at 0 s, then at 10 s with what was held back meanwhile
    assert passed_on == ["something else"]


def test_ipv6_connections_are_counted_by_their_64() -> None:
    """One host is given a whole /64: walking through it buys no fresh connections."""
    caps = ConnectionCaps(total=100, per_address=2)

    class Peer(asyncio.Transport):
        def __init__(self, address: str) -> None:
            super().__init__()
            self.address, self.aborted = address, False

        def get_extra_info(self, name: str, default: object = None) -> object:
            return (self.address, 443, 0, 0) if name == "peername" else default

        def abort(self) -> None:
            self.aborted = True

    peers = [Peer(f"2001:db8:0:1::{i}") for i in range(1, 4)] + [Peer("2001:db8:0:2::1")]
    for peer in peers:
        caps.factory(asyncio.Protocol)().connection_made(peer)
    assert [p.aborted for p in peers] == [False, False, True, False]

"""The unlock agent of `gateway-client` (like ssh-agent): keys opened once, used by the
other commands of the profile, never handed out.

In process: a real agent on a real Unix socket with real keys, served on a thread (its
clock faked for expiry): it signs and opens key wraps, gives no key away, answers only
its own user, listens only in a closed directory, and ends at expiry or `lock`. As
officers run it: a passphrase-protected profile, `gateway-client agent` in the
background, then commands against a real gateway process that ask no passphrase, until
`lock`.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import resource
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.client.agent import (
    SOCKET_FILE,
    AgentError,
    AgentServer,
    _no_dumps,
    agent_keys,
    agent_running,
    lock,
    parse_duration,
)
from gateway.crypto.envelope import open_envelope, seal_envelope, verify_envelope
from gateway.crypto.keys import (
    DelegatedSigningKey,
    OfficerEncryptionKey,
    OfficerSigningKey,
)
from gateway.errors import BadKeyError, BadSignatureError, DecryptionError
from tests.helpers import envelope_header, running_gateway

TIMEOUT = 60
PR_GET_DUMPABLE = 3


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Served:
    def __init__(self, server: AgentServer) -> None:
        self.server = server
        self.result: list[str] = []
        self.thread = threading.Thread(target=lambda: self.result.append(server.serve()))
        self.thread.start()

    def ended(self) -> str:
        self.thread.join(10)
        assert not self.thread.is_alive()
        return self.result[0]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    directory = tmp_path / "p"
    directory.mkdir(mode=0o700)
    return directory


KEYS = (OfficerSigningKey.generate(), OfficerEncryptionKey.generate())


def agent(directory: Path, clock: Callable[[], float] = time.monotonic,
          **kw: Any) -> AgentServer:
    server = AgentServer(directory, "off-0123456789abcdef", *KEYS, expires=clock() + 60,
                         expires_ms=int(time.time() * 1000) + 60_000, clock=clock, **kw)
    server.bind()
    return server


@pytest.fixture
def served(home: Path) -> Iterator[Served]:
    running = Served(agent(home))
    yield running
    lock(home)
    running.ended()


def test_the_agent_signs_and_opens_key_wraps_for_its_officer(served: Served,
                                                             home: Path) -> None:
    signing, encryption = KEYS
    delegated = agent_keys(home, signing.public, encryption.public)
    assert delegated is not None
    d_sign, d_enc = delegated
    header = envelope_header(sender="trafficking@vn-mps")
    data = seal_envelope(header, b"n\xe1\xba\xa1n nh\xc3\xa2n", d_sign, [encryption.public])
    envelope = verify_envelope(data, signing.public)  # signed with the officer's key
    assert open_envelope(envelope, d_enc) == open_envelope(envelope, encryption)
    other = OfficerEncryptionKey.generate()
    foreign = verify_envelope(seal_envelope(header, b"x", signing, [other.public]),
                              signing.public)
    with pytest.raises(DecryptionError):  # a wrap for another key does not open here
        d_enc.unwrap(foreign.wraps[0])


def test_the_agent_never_hands_out_a_key(served: Served, home: Path) -> None:
    signing, encryption = KEYS
    d_sign, d_enc = agent_keys(home, signing.public, encryption.public) or (None, None)
    assert d_sign is not None and d_enc is not None
    for key in (d_sign, d_enc):
        with pytest.raises(BadKeyError, match="agent"):
            key.seed  # noqa: B018
    hello = json.dumps(agent_running(home))
    for secret in (signing.seed, encryption.seed):
        assert secret.hex() not in hello and base64.b64encode(secret).decode() not in hello
    for op in ("export", "seed", "keys", ""):
        with pytest.raises(AgentError, match="unknown operation"):
            ask(home, op)
    with pytest.raises(AgentError, match="80 bytes"):
        ask(home, "unwrap", b"x" * 10)


def ask(directory: Path, op: str, data: bytes = b"") -> bytes:
    from gateway.client.agent import _ask
    return _ask(directory, op, data)


def test_a_signature_not_of_the_officers_key_is_refused(served: Served, home: Path) -> None:
    """A process answering in the agent's place (holding other keys) cannot make the
    client send its signatures: each is checked against the key file's public key."""
    impostor = OfficerSigningKey.generate()
    key = DelegatedSigningKey(KEYS[0].public, impostor.sign)
    with pytest.raises(BadSignatureError, match="not this officer's"):
        key.sign(b"text")
    with pytest.raises(AgentError) as info:  # an agent of other keys is not used at all
        agent_keys(home, impostor.public, KEYS[1].public)
    assert info.value.code == "agent_mismatch"


def test_another_users_connection_is_closed_unanswered(home: Path) -> None:
    running = Served(agent(home, uid=os.getuid() + 1))  # as if we were someone else
    try:
        assert agent_running(home) is None
        with pytest.raises(ConnectionError):
            ask(home, "sign", b"text")
        assert running.server.refused == 2
    finally:
        running.server.expires = 0  # ends at its next look at the clock
        assert running.ended() == "expired"


def test_the_socket_is_private_and_only_in_a_closed_directory(home: Path,
                                                              tmp_path: Path) -> None:
    server = agent(home)
    try:
        mode = os.lstat(home / SOCKET_FILE).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        with pytest.raises(AgentError) as info:  # one agent per profile
            agent(home)
        assert info.value.code == "agent_running" or "already" in info.value.message
    finally:
        server.close()
    assert not (home / SOCKET_FILE).exists()
    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o700)
    open_dir.chmod(0o750)
    with pytest.raises(AgentError) as info:
        agent(open_dir)
    assert info.value.code == "agent_unsafe_directory" and "chmod 700" in info.value.message
    assert not (open_dir / SOCKET_FILE).exists()


def test_a_stale_socket_is_replaced_and_a_file_is_not(home: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(os.fspath(home / SOCKET_FILE))
    stale.close()  # an agent that died: its socket file left behind
    agent(home).close()
    (home / SOCKET_FILE).write_text("not a socket")
    with pytest.raises(AgentError, match="not a socket"):
        agent(home)


def test_the_agent_ends_at_expiry_and_forgets_the_keys(home: Path) -> None:
    clock = Clock()
    running = Served(agent(home, clock))
    assert agent_running(home) is not None
    clock.now += 59
    assert agent_running(home) is not None
    clock.now += 2
    assert running.ended() == "expired"
    assert not (home / SOCKET_FILE).exists() and agent_running(home) is None
    assert agent_keys(home, KEYS[0].public, KEYS[1].public) is None


def test_lock_ends_the_agent(home: Path) -> None:
    running = Served(agent(home))
    assert lock(home) is not None
    assert running.ended() == "locked"
    assert not (home / SOCKET_FILE).exists()
    assert lock(home) is None


def test_the_agent_process_cannot_be_dumped_or_traced() -> None:
    pid = os.fork()
    if pid == 0:  # the child: as the agent makes itself, then report what it is
        status = 99
        try:
            _no_dumps()
            dumpable = ctypes.CDLL(None).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)
            core = resource.getrlimit(resource.RLIMIT_CORE)
            status = 0 if (dumpable, core) == (0, (0, 0)) else 1
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_durations() -> None:
    assert [parse_duration(t) for t in ("90s", "30m", "8h", "1h30m", "45", "1h0m5s")] == \
        [90, 1800, 28800, 5400, 2700, 3605]
    for bad in ("", "0s", "25h", "1d", "-5m", "m", "1.5h", "30 m"):
        with pytest.raises(ValueError):
            parse_duration(bad)


# --- as officers run it ----------------------------------------------------------------

SECRET = "mật khẩu của tôi — ពាក្យសម្ងាត់"


def run_client(profile: Path, *args: str, env: dict[str, str] | None = None,
               stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("FPG_CLIENT_PROFILE",
                                                                  "FPG_TEST_PASS")}
    # A session of its own: no terminal to ask a passphrase at, as in a script.
    result = subprocess.run([sys.executable, "-m", "gateway.client.cli", "--profile",
                             str(profile), *args], capture_output=True, timeout=TIMEOUT,
                            env={**environ, **(env or {})}, input=stdin,
                            start_new_session=True)
    return subprocess.CompletedProcess(result.args, result.returncode,
                                       result.stdout.decode("utf-8"),
                                       result.stderr.decode("utf-8"))


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def test_commands_use_the_agent_instead_of_the_passphrase_until_lock(tmp_path: Path) -> None:
    pw = {"FPG_TEST_PASS": SECRET}
    with running_gateway(tmp_path / "gw", ("trafficking", "border-liaison")) as gw:
        def invite(desk: str) -> bytes:
            made = subprocess.run([sys.executable, "-m", "gateway", "officers", "invite",
                                   "--desk", desk, "--config", str(gw.cfg)],
                                  capture_output=True, text=True, timeout=TIMEOUT)
            return made.stdout.strip().encode() + b"\n"

        officer, peer = tmp_path / "officer", tmp_path / "peer"
        ok(run_client(officer, "--passphrase-env", "FPG_TEST_PASS", "enroll", gw.url,
                      stdin=invite("trafficking"), env=pw))
        ok(run_client(peer, "enroll", gw.url, "--insecure-dev-keys",
                      stdin=invite("border-liaison")))
        assert "no passphrase" in run_client(officer, "desks").stderr

        started = json.loads(ok(run_client(officer, "agent", "--for", "5m", "--json",
                                           "--passphrase-env", "FPG_TEST_PASS", env=pw)))
        try:
            assert started["running"] is True and started["pid"] != os.getpid()
            assert started["until"] > time.time() * 1000 + 4 * 60_000
            status = json.loads(ok(run_client(officer, "agent", "--status", "--json")))
            assert status["running"] and status["pid"] == started["pid"]
            again = run_client(officer, "agent", "--passphrase-env", "FPG_TEST_PASS", env=pw)
            assert again.returncode == 1 and "agent_running" in again.stderr

            # No passphrase from here on: signing (sign-in, envelopes) and opening.
            assert "border-liaison@vn-mps" in ok(run_client(officer, "desks"))
            sent = json.loads(ok(run_client(officer, "send", "hotline", "border-liaison",
                                            "--text", "khẩn", "--json")))
            ok(run_client(peer, "reply", sent["id"], "--text", "đã rõ"))
            ok(run_client(officer, "inbox"))
            opened = json.loads(ok(run_client(officer, "read", "1", "--json")))
            assert opened["payload"]["text"] == "đã rõ" and opened["acknowledged"] is True
            shown = ok(run_client(officer, "agent", "--status"))
            assert f"pid {started['pid']}" in shown
        finally:
            locked = run_client(officer, "lock")
        assert "ended" in ok(locked)
        assert not (officer / SOCKET_FILE).exists()
        assert json.loads(ok(run_client(officer, "agent", "--status", "--json"))) == {
            "running": False}
        assert "no passphrase" in run_client(officer, "desks").stderr
        assert "no agent was running" in ok(run_client(officer, "agent", "--stop"))

        # In the foreground (for a service manager): SIGTERM ends it cleanly.
        environ = {k: v for k, v in os.environ.items() if k != "FPG_CLIENT_PROFILE"}
        foreground = subprocess.Popen(
            [sys.executable, "-m", "gateway.client.cli", "--profile", str(officer), "agent",
             "--foreground", "--for", "1m", "--passphrase-env", "FPG_TEST_PASS"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**environ, **pw},
            start_new_session=True)
        try:
            assert foreground.stdout is not None
            assert f"agent pid {foreground.pid}" in foreground.stdout.readline().decode()
            assert "border-liaison@vn-mps" in ok(run_client(officer, "desks"))
            foreground.send_signal(signal.SIGTERM)
            assert foreground.wait(TIMEOUT) == 0
        finally:
            if foreground.poll() is None:
                foreground.kill()
                foreground.wait()
        assert not (officer / SOCKET_FILE).exists()
        for path in officer.iterdir():
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes()

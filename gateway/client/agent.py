"""The unlock agent: one officer's keys kept open for a while, like ssh-agent.

``gateway-client agent --for 30m`` asks the passphrase once, opens the key file and
keeps the keys in a process of its own, listening on ``agent.sock`` in the profile
directory, until the time is up or ``gateway-client lock``. Other commands of the same
profile find the socket and ask the agent to do the two private-key operations a client
needs: **sign** bytes with the officer's signing key, and **unwrap** one sealed
content-key wrap with the officer's encryption key. The private keys never leave the
agent: there is no operation that returns them, and no flow of the client needs them
(making and enrolling keys do not use the agent).

Who may ask: the socket is mode 0600 in the profile directory, which must be 0700 and
the officer's own (the agent refuses to start otherwise); every connection's peer is
checked with ``SO_PEERCRED`` and one from another user is closed unanswered; the client
checks the agent's user the same way. As with ssh-agent, any process of the officer's
own user can use the keys while the agent runs: that is the threat model (see
docs/SECURITY.md). The agent also makes itself non-dumpable (no core file, no
``ptrace`` or ``/proc/PID/mem`` for other processes of the user).

Wire format, one request per connection: a 4-byte big-endian length, then
``OP "\\n" DATA``; the answer is framed the same way, ``"ok\\n" DATA`` or ``"error\\n"
MESSAGE``. Operations: ``hello`` (JSON: officer, key ids, expiry, pid), ``sign``,
``unwrap`` and ``lock`` (the agent answers, then exits, forgetting the keys).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import resource
import signal
import socket
import stat
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.crypto.envelope import MAX_ENVELOPE_SIZE, WRAP_SIZE
from gateway.crypto.keys import (
    ROLE_OFFICER_ENCRYPTION,
    ROLE_OFFICER_SIGNING,
    DelegatedEncryptionKey,
    DelegatedSigningKey,
    EncryptionPublicKey,
    OfficerEncryptionKey,
    OfficerSigningKey,
    VerifyKey,
)
from gateway.errors import ClientError, CryptoError, DecryptionError

SOCKET_FILE = "agent.sock"
MAX_REQUEST = MAX_ENVELOPE_SIZE + 64  # the largest envelope a client may sign, and the op
MAX_ANSWER = 64 * 1024
CONNECTION_SECONDS = 30.0  # a connection that sends its request slower than this is cut
POLL_SECONDS = 0.5  # how often a waiting agent looks at the clock
MAX_SOCKET_PATH = 107  # bytes of sun_path, without its final NUL
MAX_LIFETIME = 24 * 3600  # seconds: an agent lives one working day at most
DEFAULT_LIFETIME = 30 * 60
_DURATION = re.compile(r"(?:(\d{1,3})h)?(?:(\d{1,4})m)?(?:(\d{1,6})s)?")
_PEERCRED = struct.Struct("3i")  # pid, uid, gid
_LENGTH = struct.Struct(">I")
PR_SET_DUMPABLE = 4


class AgentError(ClientError):
    """The agent cannot start, or answered with a refusal."""

    code = "agent"


def parse_duration(text: str) -> int:
    """Seconds from ``90s``, ``30m``, ``8h`` or ``1h30m`` (a bare number is minutes),
    from one second up to MAX_LIFETIME; ValueError otherwise."""
    value = text.strip().lower()
    if value.isascii() and value.isdigit():
        value += "m"
    m = _DURATION.fullmatch(value)
    if not value or m is None:
        raise ValueError(f"{text!r} is not a duration like 90s, 30m, 8h or 1h30m")
    hours, minutes, seconds = (int(g or 0) for g in m.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if not 1 <= total <= MAX_LIFETIME:
        raise ValueError(f"{text!r}: an agent lives from 1 second to {MAX_LIFETIME // 3600} "
                         "hours")
    return total


def socket_path(directory: Path) -> Path:
    return directory / SOCKET_FILE


def peer_uid(conn: socket.socket) -> int:
    """The user id of the process at the other end of a Unix socket (SO_PEERCRED)."""
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    return int(_PEERCRED.unpack(raw)[1])


def _send(conn: socket.socket, data: bytes) -> None:
    conn.sendall(_LENGTH.pack(len(data)) + data)


def _recv_exact(conn: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = conn.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError("the other end closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _recv(conn: socket.socket, limit: int) -> bytes:
    (size,) = _LENGTH.unpack(_recv_exact(conn, _LENGTH.size))
    if size > limit:
        raise ConnectionError(f"a frame of {size} bytes is over the limit of {limit}")
    return _recv_exact(conn, size)


def check_directory(directory: Path) -> None:
    """The profile directory must be the officer's own and closed to everyone else."""
    info = os.stat(directory)
    if info.st_uid != os.getuid():
        raise AgentError(f"{directory} belongs to another user; the agent will not listen "
                         "there", code="agent_unsafe_directory")
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise AgentError(f"{directory} may be entered by other users (mode "
                         f"{stat.S_IMODE(info.st_mode):04o}): chmod 700 it first",
                         code="agent_unsafe_directory")


def _no_dumps() -> None:
    """No core file, and no ptrace or /proc/PID/mem for the user's other processes (best
    effort: Linux's prctl; elsewhere the core limit alone)."""
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


class _Stop(Exception):
    """SIGTERM or SIGINT reached the agent."""


@dataclass
class AgentServer:
    """The agent's side: a listening socket and the open keys, served one request at a
    time until ``expires`` (by ``clock``, in seconds) or a ``lock`` request."""

    directory: Path
    officer_id: str
    signing: OfficerSigningKey
    encryption: OfficerEncryptionKey
    expires: float  # by clock()
    expires_ms: int  # the same moment, Unix ms, for `hello`
    clock: Callable[[], float] = time.monotonic
    uid: int = -1  # the user allowed to ask; default: this process's
    listener: socket.socket | None = None
    _inode: int = 0
    refused: int = 0  # connections closed for their peer's user id

    def __post_init__(self) -> None:
        if self.uid < 0:
            self.uid = os.getuid()

    @property
    def path(self) -> Path:
        return socket_path(self.directory)

    def bind(self) -> None:
        """Listen on the profile's socket: 0600, in a 0700 directory; a stale socket of
        an agent that died is replaced, a live agent's is not."""
        check_directory(self.directory)
        path = self.path
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise AgentError(f"{path}: too long a path for a Unix socket; use a shorter "
                             "--profile directory", code="agent_path")
        if _listening(path):
            raise AgentError("an agent already runs for this profile (`gateway-client lock` "
                             "ends it)", code="agent_running")
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                raise AgentError(f"{path} exists and is not a socket; remove it first",
                                 code="agent_path")
            path.unlink()  # left by an agent that did not end cleanly
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            listener.bind(os.fspath(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        listener.listen(8)
        self._inode = os.lstat(path).st_ino
        self.listener = listener

    def close(self) -> None:
        """Stop listening, remove the socket (if it is still this agent's)."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        with contextlib.suppress(OSError):
            if os.lstat(self.path).st_ino == self._inode:
                self.path.unlink()

    def serve(self) -> str:
        """Answer requests until expiry (``"expired"``) or ``lock`` (``"locked"``); the
        socket is removed either way."""
        assert self.listener is not None
        try:
            while True:
                left = self.expires - self.clock()
                if left <= 0:
                    return "expired"
                self.listener.settimeout(min(left, POLL_SECONDS))
                try:
                    conn, _ = self.listener.accept()
                except TimeoutError:
                    continue
                with conn:
                    if self.handle(conn):
                        return "locked"
        except _Stop:
            return "stopped"
        finally:
            self.close()

    def handle(self, conn: socket.socket) -> bool:
        """One request; whether it was ``lock``."""
        if peer_uid(conn) != self.uid:
            self.refused += 1
            return False  # closed unanswered: another user learns nothing
        conn.settimeout(CONNECTION_SECONDS)
        try:
            request = _recv(conn, MAX_REQUEST)
        except (OSError, ConnectionError):
            return False
        op, _, data = request.partition(b"\n")
        try:
            answer = self.answer(op.decode("ascii", "replace"), data)
        except (CryptoError, ValueError) as exc:
            with contextlib.suppress(OSError):
                _send(conn, b"error\n" + str(getattr(exc, "message", exc)).encode()[:1000])
            return False
        with contextlib.suppress(OSError):
            _send(conn, b"ok\n" + answer)
        return op == b"lock"

    def answer(self, op: str, data: bytes) -> bytes:
        if op == "hello":
            return json.dumps({
                "officer": self.officer_id, "sign_key_id": self.signing.key_id,
                "enc_key_id": self.encryption.key_id, "expires": self.expires_ms,
                "pid": os.getpid(),
            }).encode("ascii")
        if op == "sign":
            return self.signing.sign(data)
        if op == "unwrap":
            if len(data) != WRAP_SIZE:
                raise ValueError(f"a wrapped content key is {WRAP_SIZE} bytes")
            return self.encryption.unwrap(data)
        if op == "lock":
            return b""
        raise ValueError(f"unknown operation {op[:40]!r}")

    def run_detached(self) -> int:
        """Fork: the child (a session of its own, standard streams on /dev/null) serves
        and exits; the parent gets the child's pid and forgets the keys."""
        pid = os.fork()
        if pid:
            if self.listener is not None:
                self.listener.close()  # the child's now; the parent leaves the file alone
                self.listener = None
            return pid
        status = 0
        try:
            os.setsid()
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            self.run()
        except BaseException:  # never let the child return into the parent's code
            status = 1
        finally:
            os._exit(status)

    def run(self) -> str:
        """Serve in this process, as a daemon would: not dumpable, stopped cleanly by
        SIGTERM or SIGINT (the socket removed)."""
        _no_dumps()

        def stop(signum: int, frame: Any) -> None:
            raise _Stop

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        return self.serve()


# --- the client's side -------------------------------------------------------------


def _ask(directory: Path, op: str, data: bytes = b"", *, limit: int = MAX_ANSWER) -> bytes:
    """One request to the profile's agent. ConnectionError when none listens."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with conn:
        conn.settimeout(CONNECTION_SECONDS)
        try:
            conn.connect(os.fspath(socket_path(directory)))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ConnectionError("no agent") from exc
        if peer_uid(conn) != os.getuid():
            raise AgentError("the agent socket is served by another user: not used",
                             code="agent_foreign")
        _send(conn, op.encode("ascii") + b"\n" + data)
        answer = _recv(conn, limit)
    status, _, body = answer.partition(b"\n")
    if status != b"ok":
        raise AgentError(f"the unlock agent refused: {body.decode('utf-8', 'replace')}",
                         code="agent_refused")
    return body


def _listening(path: Path) -> bool:
    """Whether a process accepts connections on ``path`` (a live agent, however busy)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with probe:
        try:
            probe.connect(os.fspath(path))
        except OSError:  # none there, or a socket nobody listens on any more
            return False
    return True


def agent_running(directory: Path) -> dict[str, Any] | None:
    """The running agent's ``hello`` (officer, key ids, expiry, pid), or None."""
    try:
        doc = json.loads(_ask(directory, "hello"))
    except (ConnectionError, OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def lock(directory: Path) -> dict[str, Any] | None:
    """Tell the agent to forget the keys and exit; what it was (``hello``), or None."""
    hello = agent_running(directory)
    if hello is None:
        return None
    with contextlib.suppress(ConnectionError, OSError):
        _ask(directory, "lock")
    return hello


def agent_keys(directory: Path, sign_public: VerifyKey,
               enc_public: EncryptionPublicKey) -> tuple[DelegatedSigningKey,
                                                         DelegatedEncryptionKey] | None:
    """Keys that ask the profile's running agent, or None when none runs. The public
    keys are the officer's own (from the key file); an agent holding others is refused."""
    hello = agent_running(directory)
    if hello is None:
        return None
    if (hello.get("sign_key_id"), hello.get("enc_key_id")) != (sign_public.key_id,
                                                               enc_public.key_id):
        raise AgentError("the running agent holds other keys than this profile's: end it "
                         "with `gateway-client lock`", code="agent_mismatch")

    def sign(data: bytes) -> bytes:
        return _delegate(directory, "sign", data)

    def unwrap(data: bytes) -> bytes:
        try:
            return _delegate(directory, "unwrap", data)
        except AgentError as exc:
            raise DecryptionError(exc.message) from None

    return DelegatedSigningKey(sign_public, sign), DelegatedEncryptionKey(enc_public, unwrap)


def _delegate(directory: Path, op: str, data: bytes) -> bytes:
    try:
        return _ask(directory, op, data)
    except (ConnectionError, OSError):
        raise AgentError("the unlock agent went away (locked or expired): run the command "
                         "again", code="agent_gone") from None


def public_keys(public: dict[str, str]) -> tuple[VerifyKey, EncryptionPublicKey]:
    """The officer's public keys from a key file's public part (role -> base64)."""
    try:
        return (VerifyKey.from_b64(public[ROLE_OFFICER_SIGNING], ROLE_OFFICER_SIGNING),
                EncryptionPublicKey.from_b64(public[ROLE_OFFICER_ENCRYPTION]))
    except KeyError:
        raise AgentError("the key file holds no officer keys", code="agent_keys") from None

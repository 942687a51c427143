"""A server started as its own process, waited for until it listens, and stopped: the one
way the demo, the tests and the benchmarks run ``gateway run`` (and the benchmarks' own
small servers).

A server says that it listens by writing the port it bound to a file (``gateway run
--port-file``; :func:`gateway.cliutil.until_stopped` writes it only once its SIGINT and
SIGTERM handlers are in place, so a SIGTERM sent as soon as the file appears stops it
cleanly). :class:`ServerProcess` starts the command in a session and process group of its
own (a Ctrl-C at the terminal reaches the program that started it, which stops its
servers in order; and the server has no terminal to prompt on, so a missing passphrase is
an error, never a hang), with standard output and error appended to a log file; waits
for the port file with a deadline; and stops it with SIGTERM, then SIGKILL after a grace
period. :meth:`ServerProcess.kill` is the SIGKILL of the crash tests. The same object
starts its command again after a stop or a kill.

Every wait has a blocking form and an ``async`` one that polls, so that an asyncio
program (the demo, the crash suite) keeps serving meanwhile and can cancel it. A server
that ends before it listens raises :class:`ServerExited`, one that does not listen in
time is killed and raises :class:`ServerError`; both messages end with the tail of its
log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from gateway.errors import GatewayError

HOST = "127.0.0.1"
START_SECONDS = 30.0  # from the command to the port file
STOP_SECONDS = 20.0  # from SIGTERM to the end of the process, before SIGKILL
POLL_SECONDS = 0.01


class ServerError(GatewayError, RuntimeError):
    """A server process did not start, did not listen in time, or did not stop (never an
    HTTP answer: it has no code of its own)."""


class ServerExited(ServerError):
    """The server process ended before it wrote its port file."""


def gateway_command(config: Path, port_file: Path) -> list[str]:
    """``gateway run`` on ``config``, announcing its port in ``port_file``."""
    return [sys.executable, "-m", "gateway", "run", "--config", str(config),
            "--port-file", str(port_file)]


def log_tail(path: Path, lines: int = 5, width: int | None = None) -> str:
    """The last ``lines`` of a log, indented (each cut at ``width``)."""
    try:
        tail = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "    (no log)"
    return "\n".join("    " + line[:width] for line in tail[-lines:])


class ServerProcess:
    """One server command: started, waited for until it listens, stopped or killed.

    ``port_file`` is where the server writes its port (removed before each start),
    ``log`` the file its output is appended to, ``name`` what the errors call it.
    """

    def __init__(self, command: Sequence[str], *, port_file: Path, log: Path,
                 name: str = "the server", cwd: Path | None = None,
                 start_seconds: float = START_SECONDS,
                 stop_seconds: float = STOP_SECONDS) -> None:
        self.command = list(command)
        self.port_file = port_file
        self.log = log
        self.name = name
        self.cwd = cwd
        self.start_seconds = start_seconds
        self.stop_seconds = stop_seconds
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0  # once it listens
        self.spawned_at = 0.0  # time.monotonic() when the current process was started
        self.ready_at = 0.0  # time.monotonic() when its port file was seen

    @classmethod
    def gateway(cls, config: Path, *, port_file: Path | None = None, log: Path | None = None,
                name: str | None = None, cwd: Path | None = None,
                start_seconds: float = START_SECONDS,
                stop_seconds: float = STOP_SECONDS) -> ServerProcess:
        """``gateway run --config config``; the port file and the log default to ``port``
        and ``gateway.log`` beside the configuration."""
        port_file = port_file or config.with_name("port")
        return cls(gateway_command(config, port_file), port_file=port_file,
                   log=log or config.with_name("gateway.log"),
                   name=name or f"the gateway of {config}", cwd=cwd,
                   start_seconds=start_seconds, stop_seconds=stop_seconds)

    # --- state ---------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ServerError(f"{self.name} was not started")
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status of the last process once it ended (negative: by that signal)."""
        return None if self.proc is None else self.proc.poll()

    @property
    def listening(self) -> bool:
        """Running, and its port file written (no wait)."""
        return self.running and self._port_written() is not None

    def log_tail(self, lines: int = 8, width: int | None = 400) -> str:
        return log_tail(self.log, lines, width)

    def output(self) -> str:
        """Everything in the log so far."""
        return self.log.read_text(encoding="utf-8", errors="replace")

    # --- start ---------------------------------------------------------------------------

    def spawn(self) -> None:
        """Start the command; does not wait."""
        if self.running:
            raise ServerError(f"{self.name} is already running")
        self.port_file.unlink(missing_ok=True)
        self.port = 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.spawned_at = time.monotonic()

    def wait_ready(self) -> int:
        """Until the server listens: its port."""
        while not self._ready():
            time.sleep(POLL_SECONDS)
        return self.port

    async def wait_ready_async(self) -> int:
        while True:  # a file and a process to watch: polled, as nothing signals either
            if self._ready():
                return self.port
            await asyncio.sleep(POLL_SECONDS)

    def start(self) -> int:
        """Start and wait until the server listens: its port."""
        self.spawn()
        return self.wait_ready()

    async def start_async(self) -> int:
        self.spawn()
        return await self.wait_ready_async()

    def _port_written(self) -> int | None:
        try:
            text = self.port_file.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return int(text) if text.isdigit() else None

    def _ready(self) -> bool:
        """One look: True once the port file is there; ServerExited if the process ended,
        ServerError (after a kill) past the deadline."""
        if self.proc is None:
            raise ServerError(f"{self.name} was not started")
        port = self._port_written()
        if port is not None:
            self.port, self.ready_at = port, time.monotonic()
            return True
        status = self.proc.poll()
        if status is not None:
            raise ServerExited(f"{self.name} stopped at start (status {status}); the end of "
                               f"{self.log}:\n{self.log_tail()}")
        if time.monotonic() - self.spawned_at > self.start_seconds:
            self._signal(signal.SIGKILL)
            self.proc.wait()
            raise ServerError(f"{self.name} did not listen within {self.start_seconds:g} s "
                              f"(killed); the end of {self.log}:\n{self.log_tail()}")
        return False

    # --- stop ----------------------------------------------------------------------------

    def stop(self) -> int | None:
        """SIGTERM, and wait up to ``stop_seconds``: the exit status (None if it was never
        started). ServerError if it had to be killed after that."""
        if self.proc is None:
            return None
        self._signal(signal.SIGTERM)
        try:
            return self.proc.wait(self.stop_seconds)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.proc.wait()
        raise self._not_stopped()

    async def stop_async(self) -> int | None:
        if self.proc is None:
            return None
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_seconds
        while (status := self.proc.poll()) is None:
            if time.monotonic() > deadline:
                await self.kill_async()
                raise self._not_stopped()
            await asyncio.sleep(POLL_SECONDS)
        return status

    def kill(self) -> int | None:
        """SIGKILL and reap: the exit status (None if it was never started)."""
        if self.proc is None:
            return None
        self._signal(signal.SIGKILL)
        return self.proc.wait()

    async def kill_async(self) -> int | None:
        if self.proc is None:
            return None
        self._signal(signal.SIGKILL)
        while True:  # a killed process ends at once
            status = self.proc.poll()
            if status is not None:
                return status
            await asyncio.sleep(POLL_SECONDS)

    def _signal(self, sig: signal.Signals) -> None:
        """``sig`` to the server's process group, unless it has ended and been reaped (its
        id may belong to another process by then)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def _not_stopped(self) -> ServerError:
        return ServerError(f"{self.name} did not stop within {self.stop_seconds:g} s after "
                           f"SIGTERM; killed. The end of {self.log}:\n{self.log_tail()}")

    # --- with ----------------------------------------------------------------------------

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.stop()
        elif self.running:  # already failing: stop it without a second error
            with contextlib.suppress(ServerError):
                self.stop()

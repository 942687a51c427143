"""What the command-line tools share: passphrase sources, the error boundary, and how a
server says where it listens and waits to be stopped.

Every command runs inside :func:`run_command`: an error the gateway raises on purpose
(gateway.errors.ERRORS) becomes one line on standard error and exit status 2 for
configuration errors, 1 for the rest; never a traceback. Output into a pipe whose reader
went away (``gateway status | head -1``) ends the command quietly with status 141, as if
SIGPIPE had ended it the way it ends most Unix tools; :func:`parse_args` does the same
for ``--help`` and ``--version``. Passphrases come from a prompt,
an environment variable or a file, and are handed on as bytes without ever being printed
or logged.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import signal
import stat
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway.errors import ERRORS, ConfigError, KeyFileError
from gateway.logs import get_logger

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_CLOSED_PIPE = 128 + signal.SIGPIPE  # what a shell reports for a process SIGPIPE ended
MAX_PASSPHRASE_FILE = 4096
MIN_PASSPHRASE = 12  # characters, for a new key file


def read_passphrase_file(path: Path) -> bytes:
    """The first line of a passphrase file that only its owner may read."""
    try:
        with open(path, "rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            if mode & 0o077:
                raise KeyFileError(f"{path}: the passphrase file may be read by others (mode "
                                   f"{stat.S_IMODE(mode):04o}); chmod 600 it")
            data = fh.read(MAX_PASSPHRASE_FILE)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read passphrase file ({exc.strerror})") from None
    line = data.split(b"\n", 1)[0].rstrip(b"\r")
    if not line:
        raise KeyFileError(f"{path}: passphrase file is empty")
    return line


def passphrase_from_env(name: str) -> bytes:
    value = os.environ.get(name)
    if not value:
        raise KeyFileError(f"environment variable {name} is not set or empty")
    return value.encode("utf-8")


def _have_terminal() -> bool:
    """getpass reads from the controlling terminal, even when stdin is a pipe."""
    try:
        with open("/dev/tty", "rb"):
            return True
    except OSError:
        return sys.stdin.isatty()


def prompt_passphrase(what: str, *, confirm: bool) -> bytes:
    if not _have_terminal():
        raise KeyFileError(
            f"no passphrase for {what}: give --passphrase-env or --passphrase-file, "
            "or run on a terminal"
        )
    first = getpass.getpass(f"Passphrase for {what}: ")
    if confirm and getpass.getpass("Repeat the passphrase: ") != first:
        raise KeyFileError("the two passphrases differ")
    if not first:
        raise KeyFileError("an empty passphrase is not allowed")
    return first.encode("utf-8")


def get_passphrase(
    what: str, *, env: str | None, file: Path | None, confirm: bool = False
) -> bytes:
    """The passphrase from ``env`` or ``file`` if given, else from a prompt; ``confirm``:
    for a new key (asked twice at a prompt, and held to :func:`new_key_passphrase`)."""
    if env and file:
        raise KeyFileError("give a passphrase environment variable or file, not both")
    if env:
        passphrase = passphrase_from_env(env)
    elif file:
        passphrase = read_passphrase_file(file)
    else:
        passphrase = prompt_passphrase(what, confirm=confirm)
    return new_key_passphrase(passphrase) if confirm else passphrase


def new_key_passphrase(passphrase: bytes) -> bytes:
    """A passphrase for a new key file: at least MIN_PASSPHRASE characters (a key file
    that leaves the machine is guessed offline; Argon2id only slows each guess)."""
    if len(passphrase.decode("utf-8", "replace")) < MIN_PASSPHRASE:
        raise KeyFileError(f"a new key's passphrase needs at least {MIN_PASSPHRASE} "
                           "characters; a short sentence is easiest to remember")
    return passphrase


def _silence_stdout() -> None:
    """Point standard output at /dev/null: what is still buffered, and the interpreter's
    flush at exit, go there instead of failing again on the closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)``; ``--help`` and ``--version`` print and exit, and
    that output is flushed here, so that a closed pipe ends them quietly too."""
    try:
        return parser.parse_args(argv)
    except SystemExit:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _silence_stdout()
        raise


def error_line(prog: str, code: str, message: str, *, as_json: bool = False) -> str:
    """An error as one line: ``prog: error: message`` for a person, or with ``as_json``
    one JSON object ``{"error": code, "message": message}`` for a program."""
    if as_json:
        return json.dumps({"error": code, "message": message}, ensure_ascii=False,
                          sort_keys=True)
    return f"{prog}: error: {message}"


def run_command(prog: str, func: Callable[[], int], *, json_errors: bool = False) -> int:
    """Run ``func`` at the boundary: typed errors become one line and an exit status; with
    ``json_errors`` that line is a JSON object (same standard error, same status)."""

    def fail(code: str, message: str, status: int) -> int:
        print(error_line(prog, code, message, as_json=json_errors), file=sys.stderr)
        return status

    try:
        status = func()
        sys.stdout.flush()  # here, not at exit, where a closed pipe would be reported
        return status
    except BrokenPipeError:  # the reader went away (`| head`): not worth a word
        _silence_stdout()
        return EXIT_CLOSED_PIPE
    except ConfigError as exc:
        return fail(exc.code, exc.message, EXIT_CONFIG)
    except ERRORS as exc:
        return fail(exc.code, exc.message, EXIT_FAILURE)
    except KeyboardInterrupt:
        if json_errors:
            return fail("interrupted", "interrupted", 130)
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return fail("os_error", f"{where}{exc.strerror or exc}", EXIT_FAILURE)


# What a gateway process does with each signal whose default action would end it (all
# but SIGKILL, which cannot be caught): nothing ends it without a log line.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)
RELOAD_SIGNAL = signal.SIGHUP
# Ended the process by default, mean nothing to a gateway: logged and otherwise ignored.
# (SIGPIPE is ignored by Python itself: a closed connection is an error on the write.
# Faults, SIGSEGV SIGBUS SIGFPE SIGILL SIGABRT, print a traceback: faulthandler.)
IGNORED_SIGNALS = tuple(getattr(signal, name) for name in (
    "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGVTALRM", "SIGPROF", "SIGIO", "SIGPWR", "SIGXCPU",
    "SIGXFSZ", "SIGSTKFLT") if hasattr(signal, name))


async def until_stopped(ready: Callable[[], object] | None = None,
                        reload: Callable[[], Awaitable[object]] | None = None) -> str:
    """Return when the process receives SIGINT, SIGTERM or SIGQUIT: the signal's name.
    SIGHUP runs ``reload`` (one at a time; without one, SIGHUP stops too), and the other
    signals that would end the process are logged and ignored. ``ready`` (announcing
    that the process serves, e.g. by writing its port file) is called once the handlers
    are in place: whoever saw the announcement may stop the process at once, and it
    stops cleanly instead of being killed by the signal's default action."""
    log = get_logger("gateway.signals")
    stopped: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[object]] = set()

    def stop(sig: signal.Signals) -> None:
        if not stopped.done():
            stopped.set_result(sig.name)

    def hangup() -> None:
        assert reload is not None
        log.info("reload_requested", signal=RELOAD_SIGNAL.name)
        task: asyncio.Task[object] = loop.create_task(_run(reload))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    def ignore(sig: signal.Signals) -> None:
        log.warning("signal_ignored", signal=sig.name,
                    detail="the gateway keeps running; SIGTERM stops it, SIGHUP reloads")

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop, sig)
    if reload is not None:
        loop.add_signal_handler(RELOAD_SIGNAL, hangup)
    else:
        loop.add_signal_handler(RELOAD_SIGNAL, stop, RELOAD_SIGNAL)
    for sig in IGNORED_SIGNALS:
        loop.add_signal_handler(sig, ignore, sig)
    try:
        if ready is not None:
            ready()
        return await stopped
    finally:
        for task in list(reloads):  # the handlers stay: a second SIGTERM while
            task.cancel()  # stopping does not cut the shutdown short


async def _run(reload: Callable[[], Awaitable[object]]) -> object:
    try:
        return await reload()
    except Exception:  # a bug: logged, and the gateway serves on with what it had
        get_logger("gateway.signals").exception("reload_failed")
        return None

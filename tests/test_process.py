"""gateway.cli.process, the one harness that starts, waits for and stops server processes.

The servers here are small real Python processes that behave as ``gateway run`` does
(write the port file once their SIGTERM handler is in place), or misbehave on purpose:
exit at start, never listen, ignore SIGTERM. ``gateway run`` itself goes through the
same harness in test_cli, test_rotation, test_compose and the crash suite.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from gateway.cli.process import ServerError, ServerExited, ServerProcess

# argv[1]: the port file. Writes it (atomically) once SIGTERM is handled, then waits.
SERVES = """\
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("serving", flush=True)
tmp = sys.argv[1] + ".tmp"
with open(tmp, "w") as fh:
    fh.write("4242\\n")
os.replace(tmp, sys.argv[1])
while True:
    time.sleep(1)
"""
FAILS = "import sys; print('no such key file', file=sys.stderr); sys.exit(3)"
NEVER_LISTENS = "import time; time.sleep(60)"
IGNORES_SIGTERM = SERVES.replace("lambda *_: sys.exit(0)", "signal.SIG_IGN")


def server(tmp_path: Path, code: str, **options: float) -> ServerProcess:
    port_file = tmp_path / "port"
    return ServerProcess([sys.executable, "-c", code, str(port_file)], port_file=port_file,
                         log=tmp_path / "server.log", name="the test server", **options)


def test_start_waits_for_the_port_file_and_stop_ends_the_process_cleanly(tmp_path) -> None:
    s = server(tmp_path, SERVES)
    (tmp_path / "port").write_text("1\n")  # an earlier run's file must not count
    with s:
        assert s.port == 4242 and s.url == "http://127.0.0.1:4242"
        assert s.running and s.listening
        assert os.getpgid(s.pid) == s.pid != os.getpgrp()  # a process group of its own
    assert s.returncode == 0 and not s.running
    assert "serving" in s.output()
    assert s.start() == 4242  # the same object starts the command again
    assert s.kill() == -signal.SIGKILL
    assert s.output().count("serving") == 2  # the log is appended to


def test_a_server_ending_at_start_is_an_error_with_the_end_of_its_log(tmp_path) -> None:
    s = server(tmp_path, FAILS)
    with pytest.raises(ServerExited) as failed:
        s.start()
    assert "the test server stopped at start (status 3)" in failed.value.message
    assert "no such key file" in failed.value.message


def test_a_server_that_does_not_listen_in_time_is_killed(tmp_path) -> None:
    s = server(tmp_path, NEVER_LISTENS, start_seconds=0.5)
    with pytest.raises(ServerError) as failed:
        s.start()
    assert not isinstance(failed.value, ServerExited)
    assert "did not listen within 0.5 s (killed)" in failed.value.message
    assert s.returncode == -signal.SIGKILL


def test_a_server_ignoring_sigterm_is_killed_after_the_grace_period(tmp_path) -> None:
    s = server(tmp_path, IGNORES_SIGTERM, stop_seconds=0.5)
    s.start()
    with pytest.raises(ServerError, match=r"did not stop within 0\.5 s after SIGTERM; killed"):
        s.stop()
    assert s.returncode == -signal.SIGKILL


async def test_the_async_forms_start_stop_and_kill(tmp_path) -> None:
    s = server(tmp_path, SERVES)
    assert await s.start_async() == 4242
    assert await s.stop_async() == 0
    await s.start_async()
    assert await s.kill_async() == -signal.SIGKILL
    s = server(tmp_path, IGNORES_SIGTERM, stop_seconds=0.5)
    await s.start_async()
    with pytest.raises(ServerError, match="killed"):
        await s.stop_async()
    assert s.returncode == -signal.SIGKILL
    with pytest.raises(ServerExited, match="status 3"):
        await server(tmp_path, FAILS).start_async()

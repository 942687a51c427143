"""`gateway-client enroll` keeps its one secret off the wire and out of `ps`.

A real gateway process on 127.0.0.1 and the real client as a subprocess. Plain http:// is
refused (`insecure_url`) unless the gateway is on this machine, and so is a profile whose
URL was edited to break that rule. The refused runs happen under a network guard: the
client process is started with `socket.getaddrinfo` and `socket.socket.connect` replaced
by an immediate exit with status 99, so a refusal that came after a connection attempt
(or a DNS lookup) cannot pass; the guard is seen to trip on every URL that is allowed.
The one-time code is read from standard input, from `--code-file`, or typed at a
pseudo-terminal without echo; as an argument it is a usage error. Every refusal leaves
no profile and no key file, and the code still works afterwards.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.cli.process import ServerProcess
from gateway.client.cli import MAX_CODE_BYTES
from tests.helpers import gateway

TIMEOUT = 60
GUARD_TRIPPED = 99
# The client as officers run it, but any name lookup or connection ends the process at
# once with GUARD_TRIPPED: nothing leaves this machine, and nothing is even resolved.
GUARDED = f"""
import os, socket, sys
def tripped(*args, **kwargs):
    os.write(2, b"network guard: a lookup or connection was attempted\\n")
    os._exit({GUARD_TRIPPED})
socket.getaddrinfo = tripped
socket.create_connection = tripped
socket.socket.connect = tripped
socket.socket.connect_ex = tripped
from gateway.client.cli import main
sys.exit(main(sys.argv[1:]))
"""
# Documentation names and addresses (RFC 2606, 5737, 3849) and other hosts that are not
# this machine; none is ever contacted.
OFF_LOOPBACK = ("http://gateway.example:8443", "http://192.0.2.1", "http://[2001:db8::1]:8443",
                "http://0.0.0.0:8443", "http://localhost.example", "http://127.0.0.1.example")
LOOPBACK_OR_HTTPS = ("http://127.0.0.1:9", "http://127.8.9.10:9", "http://[::1]:9",
                     "http://localhost:9", "http://LOCALHOST:9", "https://gateway.example",
                     "https://192.0.2.1:8443")


@dataclass
class Gateway:
    url: str
    config: Path

    def invite(self) -> str:
        made = gateway("officers", "invite", "--desk", "trafficking", "--config", str(self.config))
        assert made.returncode == 0, made.stderr
        return made.stdout.strip()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    directory = tmp_path_factory.mktemp("enroll-safety") / "gw"
    for args in (("init", str(directory), "--id", "vn-mps", "--port", "0", "--metrics-port",
                  "0", "--insecure-dev-keys"),
                 ("desks", "add", "trafficking", "--config", str(directory / "gateway.toml"))):
        assert gateway(*args).returncode == 0
    with ServerProcess.gateway(directory / "gateway.toml") as server:
        yield Gateway(server.url, directory / "gateway.toml")


def client(*args: str, stdin: bytes = b"", guarded: bool = False,
           ) -> subprocess.CompletedProcess[str]:
    """The client process; standard input is always given (never the test's terminal)."""
    head = ["-c", GUARDED] if guarded else ["-m", "gateway.client.cli"]
    env = {k: v for k, v in os.environ.items() if k != "FPG_CLIENT_PROFILE"}
    done = subprocess.run([sys.executable, *head, *args], input=stdin, capture_output=True,
                          timeout=TIMEOUT, env=env)
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(),
                                       done.stderr.decode())


def enroll(profile: Path, url: str, *args: str, stdin: bytes = b"",
           guarded: bool = False) -> subprocess.CompletedProcess[str]:
    return client("--profile", str(profile), "enroll", url, "--insecure-dev-keys", *args,
                  stdin=stdin, guarded=guarded)


def refused(result: subprocess.CompletedProcess[str], code: str, status: int = 1) -> str:
    """The one error line, which names ``code``; never the network guard."""
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gateway-client"), result.stderr
    assert code in lines[0], lines[0]
    return lines[0]


def enrolled(result: subprocess.CompletedProcess[str], profile: Path) -> dict[str, object]:
    assert result.returncode == 0, result.stderr
    return saved(profile)


def saved(profile: Path) -> dict[str, object]:
    doc: dict[str, object] = json.loads((profile / "profile.json").read_text())
    assert doc["desks"] == ["trafficking@vn-mps"] and (profile / "officer.key").exists()
    return doc


def nothing_written(profile: Path) -> None:
    assert not (profile / "profile.json").exists() and not (profile / "officer.key").exists()


# --- transport ------------------------------------------------------------------------


def test_plain_http_off_loopback_is_refused_before_any_lookup_or_connection(
        gw: Gateway, tmp_path: Path) -> None:
    code = gw.invite()
    for i, url in enumerate(OFF_LOOPBACK):
        profile = tmp_path / f"refused-{i}"
        line = refused(enroll(profile, url, stdin=code.encode(), guarded=True), "insecure_url")
        assert "https://" in line and code not in line
        assert not profile.exists()
    # The guard is live: every URL the rule allows goes on to a lookup or connection.
    for i, url in enumerate(LOOPBACK_OR_HTTPS):
        tried = enroll(tmp_path / f"allowed-{i}", url, stdin=code.encode(), guarded=True)
        assert tried.returncode == GUARD_TRIPPED, (url, tried.stderr)
    # None of it used the code.
    enrolled(enroll(tmp_path / "real", gw.url, stdin=code.encode()), tmp_path / "real")


def test_plain_http_to_loopback_enrolls_against_the_real_gateway(
        gw: Gateway, tmp_path: Path) -> None:
    assert gw.url.startswith("http://127.0.0.1:")
    profile = tmp_path / "officer"
    result = enroll(profile, gw.url, "--json", stdin=gw.invite().encode() + b"\n")
    assert enrolled(result, profile)["gateway_url"] == gw.url
    assert json.loads(result.stdout)["gateway"] == "vn-mps"
    assert "warning" not in result.stderr


def test_other_commands_refuse_a_profile_with_plain_http_off_loopback(
        gw: Gateway, tmp_path: Path) -> None:
    profile = tmp_path / "officer"
    enrolled(enroll(profile, gw.url, stdin=gw.invite().encode()), profile)
    assert "trafficking@vn-mps" in client("--profile", str(profile), "desks").stdout
    doc = json.loads((profile / "profile.json").read_text())
    (profile / "profile.json").write_text(json.dumps({**doc, "gateway_url": OFF_LOOPBACK[0]}))
    for command in (["desks"], ["inbox", "trafficking"], ["watch", "--count", "1"],
                    ["send", "hotline", "trafficking", "--text", "x"]):
        refused(client("--profile", str(profile), *command, guarded=True), "insecure_url")
    # Commands that need no gateway still work on that profile.
    assert "officer.key" in client("--profile", str(profile), "keys", "show").stdout


# --- where the code comes from --------------------------------------------------------


def test_the_code_is_read_from_standard_input(gw: Gateway, tmp_path: Path) -> None:
    code = gw.invite()
    # One line, whitespace around it and letter case do not matter; the rest is not read.
    stdin = b"  " + code.lower().encode() + b"  \nFPG-AAAA-BBBB-CCCC-DDDD-EEEE\n"
    enrolled(enroll(tmp_path / "p", gw.url, stdin=stdin), tmp_path / "p")
    refused(enroll(tmp_path / "q", gw.url, stdin=b""), "enrollment_code_missing")
    refused(enroll(tmp_path / "q", gw.url, stdin=b" \n" + code.encode()),
            "enrollment_code_missing")
    too_long = code.encode() + b" " * MAX_CODE_BYTES + b"\n"
    refused(enroll(tmp_path / "q", gw.url, stdin=too_long), "enrollment_code_too_large")
    nothing_written(tmp_path / "q")


def test_the_code_is_read_from_a_code_file(gw: Gateway, tmp_path: Path) -> None:
    code_file = tmp_path / "code.txt"
    code_file.write_text(f"\n  {gw.invite()}\r\n\n")
    # The file wins over standard input, which is not read.
    result = enroll(tmp_path / "p", gw.url, "--code-file", str(code_file),
                    stdin=b"FPG-AAAA-BBBB-CCCC-DDDD-EEEE\n")
    enrolled(result, tmp_path / "p")
    # Exactly the limit is still a code file.
    at_limit = tmp_path / "at-limit.txt"
    at_limit.write_bytes(gw.invite().encode().ljust(MAX_CODE_BYTES, b"\n"))
    enrolled(enroll(tmp_path / "q", gw.url, "--code-file", str(at_limit)), tmp_path / "q")


def test_empty_oversized_or_missing_code_file_is_refused_and_nothing_enrolled(
        gw: Gateway, tmp_path: Path) -> None:
    code = gw.invite()
    profile = tmp_path / "officer"
    files = {"empty": b"", "blank": b" \n\t\r\n",
             # A valid code, padded past the limit: refused for its size, not its content.
             "oversized": code.encode() + b"\n" * (MAX_CODE_BYTES + 1 - len(code)),
             "huge": code.encode() + b" " * 100_000}
    expected = {"empty": "enrollment_code_missing", "blank": "enrollment_code_missing",
                "oversized": "enrollment_code_too_large", "huge": "enrollment_code_too_large"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        line = refused(enroll(profile, gw.url, "--code-file", str(tmp_path / name),
                              stdin=code.encode(), guarded=True), expected[name])
        assert str(tmp_path / name) in line
        nothing_written(profile)
    refused(enroll(profile, gw.url, "--code-file", str(tmp_path / "absent"), guarded=True),
            "code_file_unreadable")
    refused(enroll(profile, gw.url, "--code-file", str(tmp_path), guarded=True),
            "code_file_unreadable")
    nothing_written(profile)
    # The form check comes before any connection too, wherever the code came from.
    (tmp_path / "malformed").write_text("FPG-1234\n")
    refused(enroll(profile, gw.url, "--code-file", str(tmp_path / "malformed"),
                   guarded=True), "enrollment_code_invalid")
    nothing_written(profile)
    # Nothing above used the code.
    enrolled(enroll(profile, gw.url, stdin=code.encode()), profile)


def test_a_code_given_as_an_argument_is_a_usage_error(gw: Gateway, tmp_path: Path) -> None:
    code = gw.invite()
    profile = tmp_path / "officer"
    # Where the old usage had it (right after the URL), after the options, beside a file.
    for args in ([gw.url, code], [gw.url, "--insecure-dev-keys", code],
                 [gw.url, code, "--code-file", "/dev/null"]):
        line = refused(client("--profile", str(profile), "enroll", *args,
                              stdin=code.encode(), guarded=True),
                       "unrecognized arguments", status=2)
        assert "(see --help)" in line
        assert not profile.exists()
    usage = client("enroll", "--help").stdout
    assert "CODE" not in usage.replace("--code-file", "") and "--code-file" in usage
    enrolled(enroll(profile, gw.url, stdin=code.encode()), profile)


def on_a_terminal(argv: list[str], typed: bytes, prompt: bytes) -> tuple[int, bytes]:
    """Run the client with a pseudo-terminal as its controlling terminal, standard input
    and output; type ``typed`` once ``prompt`` has appeared. Its exit status and
    everything the terminal showed (what it echoed included)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: only exec, nothing of the test process runs here
        try:
            command = [sys.executable, "-m", "gateway.client.cli", *argv]
            os.execv(sys.executable, command)  # noqa: S606 (our own interpreter, no shell)
        finally:
            os._exit(127)
    shown, typed_yet = b"", False
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child has closed the terminal
                break
            if not chunk:
                break
            shown += chunk
            if not typed_yet and prompt in shown:
                os.write(fd, typed)
                typed_yet = True
        else:
            os.kill(pid, 9)
    finally:
        os.close(fd)
        status = os.waitpid(pid, 0)[1]
    assert typed_yet, shown
    return os.waitstatus_to_exitcode(status), shown


def test_the_code_typed_at_a_terminal_is_not_echoed(gw: Gateway, tmp_path: Path) -> None:
    code = gw.invite()
    profile = tmp_path / "officer"
    status, shown = on_a_terminal(
        ["--profile", str(profile), "enroll", gw.url, "--insecure-dev-keys"],
        code.encode() + b"\n", prompt=b"Enrollment code (not shown): ")
    assert status == 0, shown
    saved(profile)
    assert b"enrolled as officer off-" in shown
    for spelling in (code, code.lower(), code.replace("-", "")):
        assert spelling.encode() not in shown, shown
    # Nothing typed (Ctrl-D at the prompt) is no code, not a hang or a traceback.
    status, shown = on_a_terminal(
        ["--profile", str(tmp_path / "none"), "enroll", gw.url, "--insecure-dev-keys"],
        b"\x04", prompt=b"Enrollment code (not shown): ")
    assert status == 1 and b"enrollment_code_missing" in shown and b"Traceback" not in shown
    nothing_written(tmp_path / "none")

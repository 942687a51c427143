"""The README's "Peering with a partner gateway", run as written: two `gateway run`
processes with TLS from a test CA, peered with `gateway partners add` and `gateway
reload` while both run, and a first message from a Vietnamese officer read by a
Cambodian one with `gateway-client`.

The section's shell blocks are run line by line, each in the directory of the side it is
for (an operator's and that side's officer's machine are one directory here). What the
test puts in place of the section's examples, all said in the section: free ports for
8443 and 9464, 127.0.0.1 for the host names and for 0.0.0.0, certificate files made by a
test CA (trustme) for 127.0.0.1, and the fingerprints `gateway keys show` printed for
VN-MPS-FINGERPRINT and KH-CNP-FINGERPRINT. `gateway run` lines start a background
process (with `--port-file`, to know when it listens) instead of blocking.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import trustme

from gateway.cli.process import ServerProcess
from gateway.config import load_config

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Peering with a partner gateway"
# The side each shell block of the section is for, in order.
SIDES = ("vn", "kh", "vn", "kh", "vn", "kh", "vn", "kh")
NAMES = {"vn": "vn-mps", "kh": "kh-cnp"}
# Commands whose answer depends on the other side being there yet: run again (bounded)
# until their output holds the text, as the section tells the reader to.
AGAIN = {"gateway partners --config": " up ", " inbox ": "from border-liaison@vn-mps"}


def section_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return re.findall(r"```sh\n(.*?)```", text[start:end], re.S)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def substitute(line: str, side: str, ports: dict[str, tuple[int, int]],
               fingerprints: dict[str, str], message: str) -> str:
    for s, name in NAMES.items():
        line = line.replace(f"gw.{name}.example:8443", f"127.0.0.1:{ports[s][0]}")
        line = line.replace(f"{name.upper()}-FINGERPRINT", fingerprints.get(s, "UNKNOWN"))
    line = line.replace("--port 8443", f"--port {ports[side][0]}")
    line = line.replace("--metrics-port 9464", f"--metrics-port {ports[side][1]}")
    line = line.replace("MESSAGE-ID", message)
    return line.replace("--host 0.0.0.0", "--host 127.0.0.1")


def test_the_readme_peering_section_gets_a_first_message_across(tmp_path: Path) -> None:
    blocks = section_blocks()
    assert len(blocks) == len(SIDES), "the section's blocks changed: update SIDES"
    ca = trustme.CA()
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("FPG_CLIENT_PROFILE", None)
    ports = {s: (free_port(), free_port()) for s in SIDES}
    dirs = {s: tmp_path / f"{s}-machine" for s in NAMES}
    for side, name in NAMES.items():
        dirs[side].mkdir()
        cert = ca.issue_cert("127.0.0.1")
        cert.cert_chain_pems[0].write_to_path(str(dirs[side] / f"gw.{name}.example.crt"))
        cert.private_key_pem.write_to_path(str(dirs[side] / f"gw.{name}.example.key"))
        for pem in ("cas.pem", "kh-cnp-ca.pem", "vn-mps-ca.pem"):  # one test CA for all
            ca.cert_pem.write_to_path(str(dirs[side] / pem))
    fingerprints: dict[str, str] = {}
    message, read = "UNKNOWN", ""
    servers: list[ServerProcess] = []
    by_side: dict[str, ServerProcess] = {}
    started = time.monotonic()
    try:
        for side, block in zip(SIDES, blocks, strict=True):
            for raw in block.splitlines():
                if not raw.strip() or raw.startswith("#"):
                    continue
                line = substitute(raw, side, ports, fingerprints, message)
                if side == "kh" and line.startswith("gateway reload "):
                    # Cambodia reloads the section's other way, with SIGHUP to its
                    # `gateway run`: the same reload, so both ways peer the gateways.
                    log_path = dirs[side] / "run.log"
                    os.kill(by_side[side].pid, signal.SIGHUP)
                    for _ in range(200):
                        if '"event": "reloaded"' in log_path.read_text():
                            break
                        time.sleep(0.05)
                    assert '"event": "reloaded"' in log_path.read_text(), log_path.read_text()
                    continue
                if " gateway run " in f" {line} ":
                    port_file = dirs[side] / "run.port"
                    server = ServerProcess(
                        ["env", f"PATH={env['PATH']}", *shlex.split(line), "--port-file",
                         str(port_file)],
                        port_file=port_file, log=dirs[side] / "run.log",
                        name=f"the gateway of {side}", cwd=dirs[side])
                    servers.append(server)
                    by_side[side] = server
                    server.start()
                    continue
                again = next((text for cmd, text in AGAIN.items() if cmd in line), None)
                for _ in range(60 if again else 1):
                    result = subprocess.run(["bash", "-c", "umask 077\n" + line],
                                            cwd=dirs[side], env=env, capture_output=True,
                                            text=True, timeout=120)
                    if again is None or (result.returncode == 0 and again in result.stdout):
                        break
                    time.sleep(0.5)
                assert result.returncode == 0, f"{raw}\n{result.stdout}\n{result.stderr}"
                assert again is None or again in result.stdout, f"{raw}\n{result.stdout}"
                if "gateway keys show" in line:
                    fingerprints[side] = result.stdout.split("fingerprint: ")[1].split("\n")[0]
                if " inbox " in line:
                    message = re.findall(r"\b[0-9a-f]{32}\b", result.stdout)[0]
                if " read " in line:
                    read = result.stdout
        elapsed = time.monotonic() - started
        assert "First message across the border" in read
        print(f"README peering section: {elapsed:.1f} s")  # shown with pytest -s
        for server in servers:
            assert server.running, server.log_tail()
        # Neither gateway was restarted: each ran once, from step 1 or 2 to here.
        for side in NAMES:
            log = (dirs[side] / "run.log").read_text()
            assert log.count('"event": "listening"') == 1, log[-2000:]
            assert '"event": "partner_added"' in log
        assert not (tmp_path / "vn").exists()  # everything happened in the sides' dirs
    finally:
        for server in servers:
            server.stop()
    for server in servers:
        assert server.returncode == 0


def test_the_sections_init_line_serves_tls_on_every_address(tmp_path: Path) -> None:
    """What step 1's `gateway init` line writes, as written (0.0.0.0 included): the
    certificate copied into tls/ and named in [server], nothing in [metrics]."""
    (init_line,) = [line for line in section_blocks()[0].splitlines()
                    if line.startswith("gateway init ")]
    ca = trustme.CA()
    cert = ca.issue_cert("gw.vn-mps.example")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "gw.vn-mps.example.crt"))
    cert.private_key_pem.write_to_path(str(tmp_path / "gw.vn-mps.example.key"))
    (tmp_path / "passphrase.txt").write_text("a long sentence for this test\n")
    (tmp_path / "passphrase.txt").chmod(0o600)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    init = subprocess.run(["bash", "-c", init_line], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert init.returncode == 0, init.stderr
    config = load_config(tmp_path / "vn" / "gateway.toml")
    assert config.server.host == "0.0.0.0"  # noqa: S104  (what the line asks for)
    assert config.server.tls_cert_file == tmp_path / "vn" / "tls" / "gateway.crt"
    assert config.server.tls_cert_file.read_bytes() == (
        tmp_path / "gw.vn-mps.example.crt").read_bytes()
    assert config.metrics.host == "127.0.0.1" and config.metrics.tls_cert_file is None

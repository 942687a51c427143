"""The operator's commands at their edges, run as real processes: an init that fails,
output into a closed pipe, listings as JSON and empty, partners' current keys."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.cli.process import ServerProcess
from gateway.cliutil import EXIT_CLOSED_PIPE
from gateway.config import load_config
from gateway.files import staged_directory
from tests.helpers import enroll_invited, gateway, one_line_error, running_gateway


def everything(root: Path) -> list[str]:
    """Every file and directory below ``root``, hidden ones included."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# --- init ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "expected"), [
    (["--public-url", "ftp://gw.vn-mps.example"], "[gateway] public_url: must be an http"),
    (["--host", "0.0.0.0"],  # noqa: S104 -- refused, never bound
     "[server] tls_cert_file: required when listening on '0.0.0.0'"),
    (["--public-url", 'http://a"b'], "not valid TOML"),
])
def test_a_failed_init_leaves_nothing_and_the_same_command_then_works(
        tmp_path: Path, options: list[str], expected: str) -> None:
    target = tmp_path / "deep" / "gw"
    failed = gateway("init", str(target), "--id", "vn-mps", "--insecure-dev-keys", *options)
    assert failed.returncode == 2
    assert expected in one_line_error(failed)
    assert everything(tmp_path) == []  # no gateway.toml, no key, no staging directory
    again = gateway("init", str(target), "--id", "vn-mps", "--insecure-dev-keys", "--port", "0")
    assert again.returncode == 0, again.stderr
    assert everything(tmp_path) == ["deep", "deep/gw", "deep/gw/data", "deep/gw/gateway.toml",
                                    "deep/gw/keys", "deep/gw/keys/gateway.key"]
    assert load_config(target / "gateway.toml").gateway.id == "vn-mps"
    checked = gateway("config", "check", "--config", str(target / "gateway.toml"))
    assert checked.returncode == 0, checked.stderr


def test_an_init_that_fails_while_writing_leaves_the_directory_as_it_was(
        tmp_path: Path) -> None:
    # The operator made the directory; a file named like the data directory is in the way,
    # which only shows when the new files are put in place (after the key was written).
    target = tmp_path / "gw"
    target.mkdir()
    (target / "data").write_text("not a directory\n")
    (target / "notes.txt").write_text("the operator's own file\n")
    failed = gateway("init", str(target), "--id", "vn-mps", "--insecure-dev-keys")
    assert failed.returncode == 1
    assert "data: already exists; refusing to overwrite" in one_line_error(failed)
    assert everything(tmp_path) == ["gw", "gw/data", "gw/notes.txt"]
    (target / "data").unlink()
    again = gateway("init", str(target), "--id", "vn-mps", "--insecure-dev-keys")
    assert again.returncode == 0, again.stderr
    assert everything(tmp_path) == ["gw", "gw/data", "gw/gateway.toml", "gw/keys",
                                    "gw/keys/gateway.key", "gw/notes.txt"]
    assert (target / "notes.txt").read_text() == "the operator's own file\n"


def test_a_staged_directory_is_renamed_into_place_or_removed(tmp_path: Path) -> None:
    # Raised in the block (an interrupt included): nothing stays, not even the parents.
    for error in (OSError(28, "No space left on device"), KeyboardInterrupt()):
        with pytest.raises(type(error)), staged_directory(tmp_path / "a" / "b" / "gw") as d:
            (d / "keys").mkdir()
            (d / "keys" / "gateway.key").write_text("k")
            raise error
        assert everything(tmp_path) == []
    # A new directory: renamed, with the mode mkdir would have given it.
    with staged_directory(tmp_path / "new") as d:
        (d / "f").write_text("x")
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o777 & ~umask
    # An existing directory (e.g. a mount point) stays itself: its contents are merged.
    mount = tmp_path / "mount"
    (mount / "keys").mkdir(parents=True)
    mount.chmod(0o750)
    inode = mount.stat().st_ino
    with staged_directory(mount) as d:
        (d / "keys").mkdir()
        (d / "keys" / "gateway.key").write_text("k")
        (d / "gateway.toml").write_text("c")
    assert mount.stat().st_ino == inode and mount.stat().st_mode & 0o777 == 0o750
    assert everything(tmp_path) == ["mount", "mount/gateway.toml", "mount/keys",
                                    "mount/keys/gateway.key", "new", "new/f"]


# --- listings: JSON, and empty ones say so -------------------------------------------------


def test_listings_say_when_they_are_empty_and_print_json(tmp_path: Path) -> None:
    d = tmp_path / "gw"
    assert gateway("init", str(d), "--id", "vn-mps", "--port", "0",
                   "--insecure-dev-keys").returncode == 0
    config = str(d / "gateway.toml")
    for what, empty in (("desks", "(no desks)"), ("officers", "(no officers)")):
        shown = gateway(what, "list", "--config", config)
        assert (shown.returncode, shown.stdout) == (0, empty + "\n"), shown.stderr
        as_json = gateway(what, "list", "--json", "--config", config)
        assert json.loads(as_json.stdout) == {"gateway": "vn-mps", what: []}
    for args in (["trafficking"], ["border-liaison", "--supervisor", "trafficking"]):
        assert gateway("desks", "add", *args, "--config", config).returncode == 0
    shown = gateway("desks", "list", "--config", config).stdout
    assert "border-liaison@vn-mps (supervisor trafficking): 0 officer(s)" in shown
    assert "(no desks)" not in shown
    listed = json.loads(gateway("desks", "list", "--json", "--config", config).stdout)
    assert sorted(listed["desks"], key=lambda desk: desk["desk"]) == [
        {"desk": "border-liaison@vn-mps", "supervisor": "trafficking", "officers": []},
        {"desk": "trafficking@vn-mps", "supervisor": None, "officers": []}]

    anchor_key = tmp_path / "anchor.key"
    assert gateway("roster", "anchor-init", str(anchor_key), "--id", "asean-ta",
                   "--insecure-dev-keys").returncode == 0
    source = tmp_path / "gateways.toml"
    source.write_text("gateways = []\n")
    roster = tmp_path / "asean.roster"
    signed = gateway("roster", "sign", str(source), "--anchor-key", str(anchor_key),
                     "--insecure-dev-keys", "--out", str(roster))
    assert signed.returncode == 0, signed.stderr
    shown = gateway("roster", "show", str(roster))
    assert shown.stdout.splitlines()[-1] == "  (no gateways)", shown.stdout
    as_json = json.loads(gateway("roster", "show", "--json", str(roster)).stdout)
    assert (as_json["anchor"], as_json["verified"], as_json["gateways"]) == (
        "asean-ta", False, [])


async def test_officers_list_as_json(tmp_path: Path, http) -> None:
    with running_gateway(tmp_path / "gw", ["border-liaison"]) as running:
        creds, _ = await enroll_invited(http, running, "border-liaison")
        listed = gateway("officers", "list", "--json", "--config", str(running.cfg))
        assert listed.returncode == 0, listed.stderr
        (officer,) = json.loads(listed.stdout)["officers"]
        assert officer["officer"] == creds.officer_id and officer["state"] == "active"
        assert officer["revoked"] is None and officer["not_after"] > time.time() * 1000
        # The first officer of a desk without members is admitted at once.
        assert officer["desks"] == [{"desk": "border-liaison", "admitted": True}]
        shown = gateway("officers", "list", "--config", str(running.cfg)).stdout
        assert shown.startswith(f"{creds.officer_id}  active     desks border-liaison  ")


# --- output into a closed pipe ------------------------------------------------------------


def into_closed_pipe(*args: str, buffered: bool, env: dict[str, str] | None = None,
                     ) -> subprocess.CompletedProcess[str]:
    """``python -m ARGS`` with standard output a pipe that nobody reads any more, as
    ``| head`` leaves it once it has its lines: every write fails (EPIPE). Buffered, the
    failure comes at a flush (at exit, unless the command flushes before); unbuffered
    (PYTHONUNBUFFERED, as in the Docker image), at the first write."""
    environment = {**os.environ, **(env or {})}
    if buffered:
        environment.pop("PYTHONUNBUFFERED", None)
    else:
        environment["PYTHONUNBUFFERED"] = "1"
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([sys.executable, "-m", *args], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=60,
                              env=environment, check=False)
    finally:
        os.close(write)


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
def test_output_into_a_closed_pipe_ends_quietly(tmp_path: Path, buffered: bool) -> None:
    d = tmp_path / "gw"
    assert gateway("init", str(d), "--id", "vn-mps", "--port", "0",
                   "--insecure-dev-keys").returncode == 0
    config = str(d / "gateway.toml")
    assert gateway("desks", "add", "trafficking", "--config", config).returncode == 0
    for args in (["desks", "list"], ["desks", "list", "--json"], ["keys", "show"],
                 ["officers", "list"]):
        done = into_closed_pipe("gateway", *args, "--config", config, buffered=buffered)
        assert (done.returncode, done.stderr) == (EXIT_CLOSED_PIPE, ""), args
    for module in ("gateway", "gateway.client.cli"):  # argparse prints, then exits
        for option in ("--help", "--version"):
            done = into_closed_pipe(module, option, buffered=buffered)
            assert (done.returncode, done.stderr) == (0, ""), (module, option)
    # The officers' command shares the boundary (it used to exit 1 here).
    done = into_closed_pipe("gateway.client.cli", "keys", "new", "--out",
                            str(tmp_path / "officer.key"), "--owner", "officer-7",
                            "--passphrase-env", "PW", env={"PW": "officer secret"},
                            buffered=buffered)
    assert (done.returncode, done.stderr) == (EXIT_CLOSED_PIPE, "")
    assert (tmp_path / "officer.key").exists()  # the work was done; only the words were lost


# --- partners: the key trusted now ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_partners_shows_the_key_followed_after_a_rotation(tmp_path: Path) -> None:
    kh, vn = tmp_path / "kh", tmp_path / "vn"
    port = free_port()
    made = gateway("init", str(kh), "--id", "kh-cnp", "--port", str(port),
                   "--metrics-port", "0", "--insecure-dev-keys")
    assert made.returncode == 0, made.stderr
    pinned = made.stdout.split("fingerprint: ")[1].strip()
    rotated = gateway("keys", "rotate", "--config", str(kh / "gateway.toml"))
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.split("new fingerprint: ")[1].splitlines()[0].strip()
    assert new != pinned
    assert gateway("init", str(vn), "--id", "vn-mps", "--port", "0",
                   "--insecure-dev-keys").returncode == 0
    config = vn / "gateway.toml"
    with open(config, "a", encoding="utf-8") as fh:
        fh.write(f'\n[[partners]]\nid = "kh-cnp"\nurl = "http://127.0.0.1:{port}"\n'
                 f'fingerprint = "{pinned}"\n')
    with ServerProcess.gateway(kh / "gateway.toml"), ServerProcess.gateway(config):
        deadline = time.monotonic() + 20
        while True:  # VN fetches KH's descriptor at start and follows the rotation
            shown = gateway("partners", "--json", "--config", str(config))
            assert shown.returncode == 0, shown.stderr
            (entry,) = json.loads(shown.stdout)["partners"]
            if entry["fingerprint"] != pinned or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert (entry["fingerprint"], entry["pinned_fingerprint"]) == (new, pinned)
        text = gateway("partners", "--config", str(config)).stdout
        assert f"kh-cnp: key {new} (rotated; pinned was {pinned})" in text
        # The command the issue names, into a closed pipe, against a running gateway.
        for args in (["status"], ["partners"], ["partners", "--json"]):
            for buffered in (True, False):
                done = into_closed_pipe("gateway", *args, "--config", str(config),
                                        buffered=buffered)
                assert (done.returncode, done.stderr) == (EXIT_CLOSED_PIPE, ""), args

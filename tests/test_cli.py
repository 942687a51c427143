"""The `gateway` and `gateway-client` commands, run as real processes."""

from __future__ import annotations

import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from gateway.cli.process import ServerProcess
from gateway.crypto.keys import VerifyKey
from gateway.protocol.descriptor import peek_descriptor, verify_descriptor
from tests.helpers import gateway, one_line_error, run


def test_version_and_help() -> None:
    out = gateway("--version")
    assert out.returncode == 0 and out.stdout.startswith("gateway ")
    for args in (["--help"], ["init", "--help"], ["run", "--help"], ["keys", "show", "--help"],
                 ["config", "check", "--help"]):
        result = gateway(*args)
        assert result.returncode == 0 and "usage:" in result.stdout
    assert run("gateway.client.cli", "--help").returncode == 0


def test_init_with_passphrase_then_wrong_passphrase(tmp_path: Path) -> None:
    d = tmp_path / "vn-mps"
    secret = "grüne Pässe 🔑 long enough"
    init = gateway("init", str(d), "--passphrase-env", "FPG_TEST_PASS",
                   env={"FPG_TEST_PASS": secret})
    assert init.returncode == 0, init.stderr
    assert "fingerprint:" in init.stdout and secret not in init.stdout + init.stderr
    key_file = (d / "keys" / "gateway.key").read_text()
    assert secret not in key_file

    shown = gateway("keys", "show", "--config", str(d / "gateway.toml"))
    assert shown.returncode == 0 and "argon2id" in shown.stdout
    assert init.stdout.split("fingerprint: ")[1].strip() in shown.stdout

    ok = gateway("config", "check", "--config", str(d / "gateway.toml"),
                 env={"FPG_TEST_PASS": secret})
    assert ok.returncode == 0, ok.stderr
    bad = gateway("config", "check", "--config", str(d / "gateway.toml"),
                  env={"FPG_TEST_PASS": "not it"})
    assert bad.returncode == 1
    assert "wrong passphrase" in one_line_error(bad)
    assert "not it" not in bad.stderr

    again = gateway("init", str(d), "--insecure-dev-keys")
    assert again.returncode == 2 and "refusing to overwrite" in one_line_error(again)


def test_passphrase_from_file_and_no_prompt_without_terminal(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("from a file, long enough\n")
    pw.chmod(0o600)
    init = gateway("init", str(tmp_path / "gw"), "--id", "kh-cnp", "--passphrase-file", str(pw))
    assert init.returncode == 0, init.stderr
    assert gateway("config", "check", "-c", str(tmp_path / "gw" / "gateway.toml")).returncode == 0
    no_source = gateway("init", str(tmp_path / "gw2"), "--id", "la-mps", stdin="")
    assert no_source.returncode == 1 and "no passphrase" in one_line_error(no_source)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t.replace('id = "', 'idd = "'), "[gateway] idd: unknown key"),
        (lambda t: t.replace("port = 8443", 'port = "x"'), "[server] port: expected an integer"),
        (lambda t: t.replace('public_url = "http://127.0.0.1:8443"\n', ""),
         "[gateway] public_url: required key is missing"),
    ],
)
def test_bad_config_is_one_line_and_status_2(tmp_path: Path, edit, expected: str) -> None:
    assert gateway("init", str(tmp_path / "gw"), "--id", "vn-mps",
                   "--insecure-dev-keys").returncode == 0
    cfg = tmp_path / "gw" / "gateway.toml"
    cfg.write_text(edit(cfg.read_text()))
    for command in (["run"], ["keys", "show"], ["config", "check"]):
        result = gateway(*command, "--config", str(cfg))
        assert result.returncode == 2
        line = one_line_error(result)
        assert expected in line and str(cfg) in line


def test_usage_errors_exit_2() -> None:
    assert gateway("frobnicate").returncode == 2
    assert gateway("run", "--config").returncode == 2


def test_run_serves_health_and_a_signed_descriptor(tmp_path: Path) -> None:
    d = tmp_path / "gw"
    assert gateway("init", str(d), "--id", "vn-mps", "--port", "0",
                   "--insecure-dev-keys").returncode == 0
    with ServerProcess.gateway(d / "gateway.toml") as server:
        base = server.url
        with urllib.request.urlopen(base + "/healthz", timeout=10) as resp:
            assert resp.status == 200 and b'"vn-mps"' in resp.read()
        with urllib.request.urlopen(base + "/.well-known/fpg/descriptor", timeout=10) as resp:
            data = resp.read()
        shown = gateway("keys", "show", "--config", str(d / "gateway.toml")).stdout
        descriptor = peek_descriptor(data)
        assert descriptor.signing_key.fingerprint in shown  # the operator's pin matches
        key = VerifyKey(descriptor.signing_key.raw, descriptor.signing_key.role)
        assert verify_descriptor(data, "vn-mps", key).gateway == "vn-mps"
    assert server.returncode == 0
    err = server.output()
    assert "insecure_development_keys" in err and '"listening"' in err


def test_client_keys_new_and_show(tmp_path: Path) -> None:
    out = tmp_path / "officer.key"
    made = run("gateway.client.cli", "keys", "new", "--out", str(out), "--owner", "officer-7",
               "--passphrase-env", "PW", env={"PW": "officer secret"})
    assert made.returncode == 0, made.stderr
    assert "officer-signing" in made.stdout and "officer-encryption" in made.stdout
    shown = run("gateway.client.cli", "keys", "show", str(out))
    assert shown.returncode == 0 and "argon2id" in shown.stdout


def test_a_stop_signal_right_after_the_ready_announcement_stops_cleanly() -> None:
    """Regression: the port file was written before the SIGTERM handler was installed, so
    a caller stopping the gateway as soon as it saw the file could kill it (status -15)."""
    script = (
        "import asyncio, os, signal\n"
        "from gateway.cliutil import until_stopped\n"
        "asyncio.run(until_stopped(lambda: os.kill(os.getpid(), signal.SIGTERM)))\n"
        "print('stopped cleanly')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert (out.returncode, out.stdout) == (0, "stopped cleanly\n"), out.stderr


def test_new_key_passphrases_are_long_and_passphrase_files_private(tmp_path: Path) -> None:
    """A passphrase file others may read is refused, and so is a new key's passphrase
    under 12 characters; either way nothing is written."""
    target = tmp_path / "gw"
    pw = tmp_path / "pw"
    pw.write_text("a long enough passphrase\n")
    pw.chmod(0o640)
    shared = gateway("init", str(target), "--id", "kh-cnp", "--passphrase-file", str(pw))
    assert shared.returncode == 1 and "chmod 600" in one_line_error(shared)
    short = gateway("init", str(target), "--id", "kh-cnp", "--passphrase-env", "PW",
                    env={"PW": "eleven char"})
    assert short.returncode == 1 and "at least 12 characters" in one_line_error(short)
    assert not target.exists()
    pw.chmod(0o600)
    made = gateway("init", str(target), "--id", "kh-cnp", "--passphrase-file", str(pw))
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE((target / "data").stat().st_mode) == 0o700


def test_development_keys_are_refused_off_loopback(tmp_path: Path) -> None:
    assert gateway("init", str(tmp_path / "gw"), "--id", "vn-mps",
                   "--insecure-dev-keys").returncode == 0
    cfg = tmp_path / "gw" / "gateway.toml"
    for name in ("cert.pem", "key.pem"):
        (tmp_path / name).write_text("unused\n")
    text = cfg.read_text().replace('host = "127.0.0.1"', 'host = "0.0.0.0"', 1)
    cfg.write_text(text.replace("[server]\n", f'[server]\ntls_cert_file = "{tmp_path}/cert.pem"'
                                              f'\ntls_key_file = "{tmp_path}/key.pem"\n', 1))
    check = gateway("config", "check", "-c", str(cfg))
    assert check.returncode == 2
    assert "development keys" in one_line_error(check)


def test_the_running_gateway_keeps_its_data_to_its_own_user(tmp_path: Path) -> None:
    """An older data directory open to others is tightened; the database, its WAL and
    the admin socket are made for the gateway's user only, whatever the caller's umask."""
    directory = tmp_path / "gw"
    assert gateway("init", str(directory), "--id", "vn-mps", "--insecure-dev-keys",
                   "--port", "0").returncode == 0
    cfg = directory / "gateway.toml"
    assert gateway("desks", "add", "trafficking", "--config", str(cfg)).returncode == 0
    data = directory / "data"  # `desks add` made the database, under our umask of 022
    assert [stat.S_IMODE(p.stat().st_mode) for p in (data, data / "gateway.sqlite3")] == [
        0o700, 0o600]
    data.chmod(0o755)
    (data / "gateway.sqlite3").chmod(0o644)
    for extra in ("gateway.sqlite3-wal", "gateway.sqlite3-shm"):
        (data / extra).unlink(missing_ok=True)
    with ServerProcess.gateway(cfg):
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        made = list(data.iterdir())
        assert made and all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in made), [
            (p.name, oct(p.stat().st_mode)) for p in made]

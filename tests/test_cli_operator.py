"""The operator's commands at their edges, run as real processes: an init that fails,
output into a closed pipe, listings as JSON and empty, partners' current keys."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.files import staged_directory
from tests.helpers import gateway, one_line_error


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

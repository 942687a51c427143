"""`gateway partners add` and `gateway partners remove`: the configuration file edited in
place, one [[partners]] table at a time, or not at all."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.config_edit import add_partner, remove_partner
from gateway.crypto.keys import GatewaySigningKey
from gateway.errors import ConfigError
from tests.helpers import gateway, one_line_error

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "gateway.example.toml"
FP = GatewaySigningKey.generate().public.fingerprint
KH_FP = "ABCD EFGH IJKL MNOP QRST UVWX YZ23 4567"  # the example's kh-cnp


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """The annotated example configuration (comments, one partner), mode 0640."""
    path = tmp_path / "gateway.toml"
    shutil.copyfile(EXAMPLE, path)
    path.chmod(0o640)
    return path


def test_add_appends_one_table_and_keeps_every_byte_before_it(example: Path) -> None:
    before = example.read_bytes()
    added = add_partner(example, "la-mps", "https://gw.la-mps.example:8443", FP.lower())
    after = example.read_bytes()
    assert after.startswith(before)  # comments, order and spacing as they were
    assert after[len(before):].decode() == (
        '\n[[partners]]\nid = "la-mps"\nurl = "https://gw.la-mps.example:8443"\n'
        f'fingerprint = "{FP}"\n')  # the fingerprint as `keys show` prints it
    assert added.fingerprint == FP
    assert [p.id for p in load_config(example).partners] == ["kh-cnp", "la-mps"]
    assert stat.S_IMODE(example.stat().st_mode) == 0o640
    assert sorted(p.name for p in example.parent.iterdir()) == ["gateway.toml"]  # no temp


def test_remove_takes_out_only_that_table_and_keeps_the_next_tables_comments(
        example: Path) -> None:
    text = example.read_text()
    remove_partner(example, "kh-cnp")
    after = example.read_text()
    assert 'id = "kh-cnp"' not in after and "gw.kh-cnp.example" not in after
    # What followed the table is its neighbours' and stays: the comment after it, the
    # commented-out trust anchor, and everything above it.
    assert "# Partners rotate their keys on their own" in after
    assert '# id = "asean-ta"' in after
    head = text[:text.index("[[partners]]")]
    assert after.startswith(head.rstrip("\n"))
    assert load_config(example).partners == ()
    assert stat.S_IMODE(example.stat().st_mode) == 0o640


def test_add_then_remove_gives_back_the_same_bytes_through_the_command(tmp_path: Path) -> None:
    assert gateway("init", str(tmp_path / "vn"), "--id", "vn-mps", "--port", "0",
                   "--insecure-dev-keys").returncode == 0
    cfg = tmp_path / "vn" / "gateway.toml"
    original = cfg.read_bytes()
    added = gateway("partners", "add", "kh-cnp", "http://127.0.0.1:8442", "--fingerprint", FP,
                    "--config", str(cfg))
    assert added.returncode == 0, added.stderr
    assert "partner kh-cnp (http://127.0.0.1:8442" in added.stdout
    assert f"gateway reload --config {cfg}" in added.stdout  # how to apply it
    removed = gateway("partners", "remove", "kh-cnp", "--config", str(cfg))
    assert removed.returncode == 0, removed.stderr
    assert "queued messages stay" in removed.stdout and "gateway reload" in removed.stdout
    assert cfg.read_bytes() == original


@pytest.mark.parametrize(("args", "error"), [
    (["add", "KH_CNP", "https://gw.kh.example", "--fingerprint", FP],
     "partner id 'KH_CNP': must be 1-63 lowercase letters"),
    (["add", "vn-mps", "https://gw.kh.example", "--fingerprint", FP],
     "partner id vn-mps: that is this gateway's own id"),
    (["add", "kh2", "ftp://gw.kh.example", "--fingerprint", FP],
     "must be an http:// or https:// URL"),
    (["add", "kh2", 'https://gw.kh.example/"x', "--fingerprint", FP],
     "must be an http:// or https:// URL"),
    (["add", "kh2", "https://gw.kh.example", "--fingerprint", "ABCD EFGH"],
     "--fingerprint: must be a key fingerprint"),
    (["add", "kh-cnp", "https://gw.other.example", "--fingerprint", FP],
     "partner kh-cnp is listed already"),
    (["add", "kh2", "https://GW.kh-cnp.example:8443/", "--fingerprint", FP],
     "partner kh-cnp has that URL already"),
    (["remove", "la-mps"], "no partner 'la-mps' in [[partners]] (listed: kh-cnp)"),
])
def test_an_invalid_edit_is_refused_and_the_file_stays_byte_identical(
        example: Path, args: list[str], error: str) -> None:
    before = example.read_bytes()
    result = gateway("partners", *args, "--config", str(example))
    assert result.returncode == 2
    assert error in one_line_error(result)
    assert example.read_bytes() == before
    assert sorted(p.name for p in example.parent.iterdir()) == ["gateway.toml"]


def test_partners_it_cannot_edit_as_tables_are_refused(tmp_path: Path, example: Path) -> None:
    """An inline array of partners: appending a [[partners]] table would be invalid TOML;
    the edit is checked by parsing it, and refused."""
    text = example.read_text()
    start = text.index("[[partners]]")
    end = text.index("# Partners rotate")
    inline = (text[:start].replace("[gateway]\n", f'partners = [{{ id = "kh-cnp", url = '
                                   f'"https://gw.kh-cnp.example:8443", fingerprint = '
                                   f'"{KH_FP}" }}]\n\n[gateway]\n', 1) + text[end:])
    example.write_text(inline)
    assert [p.id for p in load_config(example).partners] == ["kh-cnp"]
    for edit in (lambda: add_partner(example, "la-mps", "https://gw.la.example", FP),
                 lambda: remove_partner(example, "kh-cnp")):
        with pytest.raises(ConfigError, match=r"edit the file by hand|not valid TOML"):
            edit()
        assert example.read_text() == inline


def test_a_config_file_that_is_already_invalid_is_not_edited(example: Path) -> None:
    example.write_text(example.read_text().replace("[log]", "[log]\ncolour = true", 1))
    before = example.read_bytes()
    result = gateway("partners", "add", "la-mps", "https://gw.la.example", "--fingerprint", FP,
                     "--config", str(example))
    assert result.returncode == 2
    assert "[log] colour: unknown key" in one_line_error(result)
    assert example.read_bytes() == before

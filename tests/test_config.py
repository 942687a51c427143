"""Configuration: every error names the file, the key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import DEFAULT_SERVICE_LEVELS, load_config
from gateway.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "gateway.example.toml"

MINIMAL = """
[gateway]
id = "vn-mps"
public_url = "http://127.0.0.1:8443"

[keys]
file = "keys/gateway.key"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(text)
    return path


def test_example_is_valid() -> None:
    config = load_config(EXAMPLE)
    assert config.gateway.id == "vn-mps"
    assert config.keys.file == EXAMPLE.parent / "keys" / "gateway.key"
    assert config.server.tls_cert_file is not None and not config.server.loopback


def test_minimal_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert config.server.host == "127.0.0.1" and config.server.loopback
    assert config.data_dir == tmp_path.resolve() / "data"
    assert config.gateway.ledger_origin == "fpg/vn-mps"
    with pytest.raises(AttributeError):
        config.gateway.id = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL.replace('id = "vn-mps"\n', ""), r"\[gateway\] id: required key is missing"),
        (MINIMAL + "[server]\nport = \"80\"\n",
         r"\[server\] port: expected an integer, got a string"),
        (MINIMAL + "[server]\nport = 70000\n", r"\[server\] port: must be from 0 to 65535"),
        (MINIMAL + "[server]\nprot = 1\n", r"\[server\] prot: unknown key"),
        (MINIMAL + "[servr]\n", r"\[servr\]: unknown section"),
        (MINIMAL.replace('"vn-mps"', '"VN MPS"'), r"\[gateway\] id: must be"),
        (MINIMAL + "[keys2]\n", r"unknown section"),
        (MINIMAL.replace("[keys]\n", "[keys]\ninsecure_dev_mode = 1\n"),
         r"\[keys\] insecure_dev_mode: expected a boolean"),
        (MINIMAL + "[server]\nhost = \"0.0.0.0\"\n", r"\[server\] tls_cert_file: required"),
        (MINIMAL + "[log]\nlevel = \"loud\"\n", r"\[log\] level: must be one of"),
        ("[gateway\n", "not valid TOML"),
        (MINIMAL.replace("[keys]\nfile = \"keys/gateway.key\"\n", ""),
         r"\[keys\]: required section is missing"),
    ],
)
def test_errors_name_file_key_and_problem(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=expected) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(str(path.resolve()) if "TOML" not in expected else str(path))
    assert "\n" not in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.toml")


def test_example_pins_a_partner() -> None:
    config = load_config(EXAMPLE)
    (partner,) = config.partners
    assert partner.id == "kh-cnp" and partner.url.startswith("https://")
    assert config.federation.retry_max_seconds == 120


PARTNER = '\n[[partners]]\nid = "{id}"\nurl = "http://127.0.0.1:9"\nfingerprint = "{fp}"\n'
FP = "ABCD EFGH IJKL MNOP QRST UVWX YZ23 4567"


@pytest.mark.parametrize(("extra", "message"), [
    (PARTNER.format(id="kh-cnp", fp="not a fingerprint"), "#1 fingerprint: must be a key"),
    (PARTNER.format(id="vn-mps", fp=FP), "#1 id: vn-mps is this gateway"),
    (PARTNER.format(id="kh-cnp", fp=FP) * 2, "#2 id: kh-cnp is listed twice"),
    ('partners = "kh-cnp"\n', "[[partners]]: expected an array of tables"),
    ("\n[federation]\nretry_max_seconds = 0\n", "[federation] retry_max_seconds: must be"),
])
def test_partner_and_federation_errors_name_the_key(tmp_path: Path, extra: str,
                                                    message: str) -> None:
    with pytest.raises(ConfigError) as err:
        # A top-level key goes before the first table; tables go after the others.
        text = extra + MINIMAL if not extra.startswith("\n") else MINIMAL + extra
        load_config(write(tmp_path, text))
    assert message in str(err.value) and str(tmp_path) in str(err.value)


def test_example_service_levels_change_two_and_keep_the_other_defaults() -> None:
    levels = {(lv.priority, lv.stage): lv for lv in load_config(EXAMPLE).service_levels}
    defaults = {(lv.priority, lv.stage): lv for lv in DEFAULT_SERVICE_LEVELS}
    assert set(levels) == set(defaults)
    changed = {k: (lv.within_seconds, lv.escalate) for k, lv in levels.items()
               if lv != defaults[k]}
    assert changed == {("flash", "read"): (600.0, True), ("routine", "read"): (259_200.0, True)}

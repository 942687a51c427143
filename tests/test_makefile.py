"""The Makefile's promises, read from what `make -n` would run (nothing is installed or
started): `make run` and `make demo` need no development tools, `make run` listens on
ports the demo does not use, and `make demo ARGS=...` passes the options on."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.cli.demo import COUNTRIES
from gateway.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent


def dry_run(target: str, tmp_path: Path, *assignments: str) -> list[list[str]]:
    """The commands ``make -n target`` prints for a fresh virtual environment in
    ``tmp_path``, continuation lines joined, each split into words."""
    make = shutil.which("make")
    if make is None:
        pytest.fail("make is not on PATH (the README's two commands need it)")
    done = subprocess.run([make, "-n", target, f"VENV={tmp_path / 'venv'}",
                           f"RUN_DIR={tmp_path / 'run'}", *assignments],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return [shlex.split(line) for line in done.stdout.replace("\\\n", " ").splitlines()
            if line.strip()]


def gateway_argv(commands: list[list[str]], subcommand: str) -> list[str]:
    for words in commands:
        for i, word in enumerate(words):
            if word.endswith("/gateway") and words[i + 1:i + 2] == [subcommand]:
                return words[i + 1:]
    raise AssertionError(f"no `gateway {subcommand}` in {commands}")


def installs(commands: list[list[str]]) -> list[str]:
    """What each `pip install` of the dry run installs (its last word)."""
    return [words[-1] for words in commands if "pip" in " ".join(words)
            and "install" in words and "--upgrade" not in words]


@pytest.mark.parametrize("target", ["run", "demo"])
def test_running_installs_no_development_tools(target: str, tmp_path: Path) -> None:
    commands = dry_run(target, tmp_path)
    assert installs(commands) == ["."]
    for words in commands:
        if "install" in words and "--upgrade" not in words:
            assert "constraints.txt" in words  # the pinned versions, as CI uses


def test_tests_install_the_development_tools(tmp_path: Path) -> None:
    assert installs(dry_run("test", tmp_path)) == [".", ".[dev]"]


def test_make_run_and_make_demo_use_different_ports(tmp_path: Path) -> None:
    init = build_parser().parse_args(gateway_argv(dry_run("run", tmp_path), "init"))
    demo_ports = {c.port for c in COUNTRIES} | {c.metrics_port for c in COUNTRIES}
    assert init.port not in demo_ports
    assert init.metrics_port is not None and init.metrics_port not in demo_ports
    assert init.port != init.metrics_port


def test_make_demo_passes_args_on(tmp_path: Path) -> None:
    plain = build_parser().parse_args(gateway_argv(dry_run("demo", tmp_path), "demo"))
    assert not plain.once and not plain.free_ports
    # Prometheus (config/prometheus.yml) looks for targets in config/targets/*.json.
    assert plain.prometheus_targets == Path("config/targets/demo.json")
    extra = build_parser().parse_args(gateway_argv(
        dry_run("demo", tmp_path, "ARGS=--free-ports --once"), "demo"))
    assert extra.once and extra.free_ports

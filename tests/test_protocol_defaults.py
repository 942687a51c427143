"""docs/PROTOCOL.md gives the defaults of the settings a partner or an auditor must know
(retry and probe timing, batch limits, the hop window, checkpoint cadence): each default it
states is the one gateway/config.py has."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from gateway import config

PROTOCOL = Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md"
UNITS = {"": 1, "s": 1, "KiB": 1024, "MiB": 1024 * 1024}
# "`name` ... (default 1,000" with at most a few words (no other setting) in between.
STATED = re.compile(r"`([a-z_]+)`[^`(]{0,40}?\(default ([0-9][0-9,]*(?:\.[0-9]+)?)"
                    r"(?: (KiB|MiB|s)\b)?")


def config_defaults() -> dict[str, Any]:
    """Each setting's default, by name, for the names that only one section has."""
    seen: dict[str, list[Any]] = {}
    for section in vars(config).values():
        if isinstance(section, type) and section.__name__.endswith("Section") \
                and dataclasses.is_dataclass(section):
            for f in dataclasses.fields(section):
                seen.setdefault(f.name, []).append(f.default)
    return {name: defaults[0] for name, defaults in seen.items() if len(defaults) == 1}


def stated_defaults() -> list[tuple[str, float]]:
    text = " ".join(PROTOCOL.read_text("utf-8").split())  # a statement may span lines
    return [(name, float(value.replace(",", "")) * UNITS[unit or ""])
            for name, value, unit in STATED.findall(text)]


def test_every_default_the_protocol_states_is_the_configured_one() -> None:
    defaults = config_defaults()
    stated = stated_defaults()
    names = {name for name, _ in stated}
    # The ones a partner needs, at least (a rewording that loses one fails here).
    assert {"checkpoint_every", "checkpoint_interval", "batch_size", "batch_bytes",
            "hop_window_seconds", "retry_first_seconds", "retry_max_seconds",
            "health_seconds", "witness_seconds"} <= names
    for name, value in stated:
        assert name in defaults, f"PROTOCOL.md states a default of {name}, not a setting"
        assert defaults[name] == value, (
            f"PROTOCOL.md says {name} defaults to {value:g}; gateway/config.py has "
            f"{defaults[name]}")


def test_the_pattern_reads_what_it_should() -> None:
    """The reader of the document, checked on sentences of its kind."""
    sample = ("`batch_bytes` (default 8 MiB; more), `checkpoint_every` new entries (default "
              "1,000), `retry_first_seconds` (default 0.5 s) and `a` then `b` (default 2)")
    assert STATED.findall(sample) == [("batch_bytes", "8", "MiB"),
                                      ("checkpoint_every", "1,000", ""),
                                      ("retry_first_seconds", "0.5", "s"), ("b", "2", "")]

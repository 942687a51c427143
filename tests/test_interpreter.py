"""The interpreter setting a gateway process runs with."""

from __future__ import annotations

import sys

from gateway import interpreter


def test_tune_shortens_the_switch_interval_below_cpythons_default() -> None:
    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)  # CPython's default
        interpreter.tune()
        assert sys.getswitchinterval() == interpreter.SWITCH_INTERVAL < 0.005
    finally:
        sys.setswitchinterval(before)

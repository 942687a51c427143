"""The interpreter setting a gateway process runs with."""

from __future__ import annotations

import gc
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


def test_settle_leaves_what_lives_now_out_of_later_collections() -> None:
    gc.unfreeze()
    long_lived = [{"made": "at start-up"}]
    try:
        interpreter.settle()
        assert gc.get_freeze_count() > 0
        assert not any(o is long_lived for o in gc.get_objects())  # frozen: not walked
    finally:
        gc.unfreeze()
    assert any(o is long_lived for o in gc.get_objects())

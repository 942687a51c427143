"""JSON from outside, parsed strictly: the one ``loads`` for documents a partner, a client
or an officer's device sent.

Python's ``json.loads`` accepts ``NaN``, ``Infinity`` and numbers such as ``1e400`` (read
as an infinite float, which ``int()`` then refuses with OverflowError), and deep nesting
ends in RecursionError; and it keeps the last of two values of one key, where another
parser may keep the first, so that one document could mean two things. Here every one of
those is a ``ValueError``, like any other malformed JSON, so that the callers' ``except
(ValueError, ...)`` turns it into their own clear refusal.
"""

from __future__ import annotations

import json
import math
from typing import Any


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("a JSON object has a duplicate key")
    return obj


def loads(data: str | bytes) -> Any:
    """Parse ``data`` as strict JSON; ValueError for anything that is not."""
    try:
        return json.loads(data, parse_constant=_no_constant, parse_float=_finite,
                          object_pairs_hook=_no_duplicate_keys)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None

"""The one spelling of gateway, desk and officer names (``kh-cnp``, ``anti-trafficking``):
1 to 63 lowercase ASCII letters, digits and inner hyphens. A desk address joins two of
them, ``desk@gateway`` (docs/PROTOCOL.md, section 1)."""

from __future__ import annotations

import re

#: The pattern, written to match without backtracking, for composing larger ones.
NAME = r"[a-z0-9][a-z0-9-]{0,62}(?<!-)"
_NAME = re.compile(NAME)


def is_name(value: str) -> bool:
    return _NAME.fullmatch(value) is not None

"""Short names for messages and desks, as an officer types them at the command line.

A message is named by its id (32 hex digits), by a prefix of it (6 to 31 hex digits)
that only one message of the officer's desks starts with, or by its row in the last
``inbox`` listing (a whole number of at most 5 digits: a row is never mistaken for a
prefix, which has at least 6). Rows stay what the officer saw: each ``inbox`` writes the
ids it printed, in order, to ``last-inbox.json`` in the profile directory (mode 0600,
replaced atomically), and row N means the N-th of them until the next ``inbox``.

A desk left out is the officer's only desk; with several, the error lists them. A
mistyped desk name gets "did you mean" suggestions (difflib) from the names known.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ClientError

LISTING_FILE = "last-inbox.json"
MAX_LISTING_BYTES = 1 << 20
MIN_PREFIX = 6
MAX_ROW_DIGITS = 5
MAX_CANDIDATES = 10  # listed in an "ambiguous" error
_ID = re.compile(r"[0-9a-f]{32}")
_PREFIX = re.compile(rf"[0-9a-f]{{{MIN_PREFIX},31}}")
_ROW = re.compile(rf"[0-9]{{1,{MAX_ROW_DIGITS}}}")


@dataclass(frozen=True)
class MessageRef:
    """What the officer typed: exactly one of ``id``, ``prefix`` or ``row``."""

    text: str
    id: str | None = None
    prefix: str | None = None
    row: int | None = None


def parse_ref(text: str) -> MessageRef:
    """A message id, id prefix or inbox row; ValueError for anything else."""
    value = text.strip().lower()
    if _ID.fullmatch(value):
        return MessageRef(text, id=value)
    if _ROW.fullmatch(value) and int(value) >= 1:
        return MessageRef(text, row=int(value))
    if _PREFIX.fullmatch(value):
        return MessageRef(text, prefix=value)
    raise ValueError(f"{text!r} is not a message id (32 hex digits), a unique prefix of one "
                     f"({MIN_PREFIX}+ hex digits) or an inbox row number")


def save_listing(directory: Path, desk: str, ids: list[str]) -> None:
    """Remember the ids an ``inbox`` listing printed, in row order (0600, atomic)."""
    data = json.dumps({"v": 1, "desk": desk, "ids": ids}).encode("ascii")
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=LISTING_FILE + ".")
    try:
        with os.fdopen(fd, "wb") as file:  # mkstemp makes it 0600
            file.write(data)
        os.replace(temporary, directory / LISTING_FILE)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_listing(directory: Path) -> tuple[str, list[str]]:
    """The desk and ids of the last ``inbox`` listing; ClientError ``no_listing``."""
    path = directory / LISTING_FILE
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_LISTING_BYTES + 1)
        doc = json.loads(data)
        desk, ids = doc["desk"], doc["ids"]
        if len(data) > MAX_LISTING_BYTES or not isinstance(desk, str) or not isinstance(
                ids, list) or not all(isinstance(i, str) and _ID.fullmatch(i) for i in ids):
            raise ValueError("damaged")
    except FileNotFoundError:
        raise ClientError("no inbox listing to take row numbers from: run `gateway-client "
                          "inbox` first, or give the message id", code="no_listing") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise ClientError(f"{path} is damaged: run `gateway-client inbox` again",
                          code="no_listing") from None
    return desk, ids


def row_id(directory: Path, row: int) -> str:
    """The id printed on row ``row`` of the last ``inbox`` listing."""
    desk, ids = load_listing(directory)
    if not 1 <= row <= len(ids):
        shown = f"rows 1 to {len(ids)}" if ids else "no rows"
        raise ClientError(f"no row {row} in the last inbox listing of {desk} ({shown})",
                          code="unknown_row")
    return ids[row - 1]


def by_prefix(prefix: str, known: Iterable[str]) -> str:
    """The one id of ``known`` that starts with ``prefix``; ClientError ``unknown_message``
    for none, ``ambiguous_id`` (listing the candidates) for several."""
    matches = sorted({i for i in known if i.startswith(prefix)})
    if not matches:
        raise ClientError(f"no message of your desks starts with {prefix}",
                          code="unknown_message")
    if len(matches) > 1:
        shown = ", ".join(matches[:MAX_CANDIDATES])
        more = f" and {len(matches) - MAX_CANDIDATES} more" if len(matches) > MAX_CANDIDATES \
            else ""
        raise ClientError(f"{prefix} is the start of {len(matches)} messages: {shown}{more}; "
                          "type more digits", code="ambiguous_id")
    return matches[0]


def only_desk(desks: Iterable[str]) -> str:
    """The officer's desk when it has only one; ClientError ``choose_desk`` listing them."""
    mine = sorted(desks)
    if len(mine) != 1:
        raise ClientError(f"say which desk: you are on {', '.join(mine)}", code="choose_desk")
    return mine[0]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean a or b?)`` naming the known desks whose names are closest to
    ``name``'s (the part before ``@``), or nothing when none is close."""
    known = sorted(set(known))
    short = name.partition("@")[0]
    close = difflib.get_close_matches(short, sorted({k.partition("@")[0] for k in known}),
                                      n=3, cutoff=0.6)
    matches = [k for c in close for k in known if k.partition("@")[0] == c][:3]
    return f" (did you mean {' or '.join(matches)}?)" if matches else ""

"""Writing files that hold secrets or identities (key files, the officers' profiles):
whole and private; a new file never over another, a replacement atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _private_temp(directory: Path, data: bytes) -> str:
    """A new file in ``directory`` holding ``data``, mode 0600, synced; its path."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def write_new(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 and fsync it. Raises
    FileExistsError if ``path`` exists, even if it appeared while writing."""
    tmp = _private_temp(path.parent, data)
    try:
        os.link(tmp, path)  # fails if the file exists: nothing is ever overwritten
    finally:
        os.unlink(tmp)


def replace_private(path: Path, data: bytes) -> None:
    """Put ``data`` in place of ``path`` atomically (mode 0600), synced with its
    directory: a crash leaves the old file or the new one, never a mix."""
    tmp = _private_temp(path.parent, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)

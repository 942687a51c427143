"""Writing files that hold secrets or identities: whole, private, never over another."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_new(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 and fsync it. Raises
    FileExistsError if ``path`` exists, even if it appeared while writing."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)  # fails if the file exists: nothing is ever overwritten
    finally:
        os.unlink(tmp)

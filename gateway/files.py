"""Port files: how a process that listens on a port it let the system pick (port 0) tells
whoever started it where it listens."""

from __future__ import annotations

from pathlib import Path


def write_port_file(path: Path, port: int) -> None:
    """Write the bound port to ``path`` atomically: a reader sees no file or the whole one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{port}\n")
    tmp.replace(path)

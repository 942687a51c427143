"""Files written so that nobody sees half of them: port files (how a process that listens
on a port it let the system pick tells whoever started it where it listens), and
directories built aside and renamed into place (``gateway init``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def write_port_file(path: Path, port: int) -> None:
    """Write the bound port to ``path`` atomically: a reader sees no file or the whole one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{port}\n")
    tmp.replace(path)


@contextlib.contextmanager
def staged_directory(directory: Path) -> Iterator[Path]:
    """An empty directory next to ``directory`` to build it in. When the block ends, it
    becomes ``directory`` with one rename; if ``directory`` exists already (made by the
    operator, or a mount point), what the block wrote is moved into it instead, and a
    file that is there already is never replaced. If the block raises (an interrupt
    too), the staging directory goes, with any parent directory made for it: a failure
    leaves nothing behind, and running again starts from where the first run did."""
    target = directory.absolute()
    made = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp",
                                    dir=target.parent))
    try:
        yield staging
        if target.exists():
            _move_into(staging, target)
            staging.rmdir()
        else:
            umask = os.umask(0o077)
            os.umask(umask)
            staging.chmod(0o777 & ~umask)  # mkdtemp's 0700, as mkdir would have made it
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for parent in made:  # nearest first; each held only what this made
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise


def _move_into(source: Path, target: Path) -> None:
    """Move what ``source`` holds into the existing directory ``target``, merging
    subdirectories; every name is checked before anything moves, and files move last."""
    if not target.is_dir():
        raise NotADirectoryError(20, "not a directory", str(target))
    clashes = [there for p in source.rglob("*")
               if (there := target / p.relative_to(source)).exists()
               and not (p.is_dir() and there.is_dir())]
    if clashes:
        raise FileExistsError(17, "already exists; refusing to overwrite", str(clashes[0]))
    for child in sorted(source.iterdir(), key=lambda p: (not p.is_dir(), p.name)):
        there = target / child.name
        if child.is_dir() and there.is_dir():
            _move_into(child, there)
            child.rmdir()
        else:
            child.rename(there)

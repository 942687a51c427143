"""The embedded SQLite store (:class:`SqliteStore`), with group commit.

:mod:`.engine` holds the group-commit engine and :mod:`.desks` the desk and officer
queries; this module names what the rest of the gateway, the tests and the benchmarks
import.
"""

from gateway.store.sqlite.engine import WAL_CHECKPOINT_SECONDS, SqliteStore, _write_batch

__all__ = ["WAL_CHECKPOINT_SECONDS", "SqliteStore", "_write_batch"]

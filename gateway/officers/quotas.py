"""What officers may make the gateway store: bytes a day per officer and per sending desk,
and never the last of the disk.

Each quota is a budget of bytes that refills evenly over a day, up to one day's worth,
kept in memory and charged without touching the database. At start, :meth:`Quotas.restore`
replays the last day's stored sends (``QuotaStore.local_sends``, which reads about a day
of rows, not the whole table) into the budgets, so a restart gives nobody their day back:
a budget is full again a day after its last charge, whatever came before, so a day of
history is all it takes (a resend answered ``duplicate`` was charged but is not stored,
and is forgotten by a restart).

A message is refused before anything is stored when its sender's or its desk's budget
cannot pay for it (``429 quota_exceeded``, with when it could), or when storing it would
leave less than ``store.disk_reserve_bytes`` free on the data directory's file
system (``507 disk_reserve``): SQLite never meets a full disk on an officer's account.
"""

from __future__ import annotations

import shutil
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

from gateway.clock import Clock
from gateway.errors import ClientError

DAY_SECONDS = 86_400.0
DAY_MS = 86_400_000
MAX_KEYS = 100_000


class QuotaExceededError(ClientError):
    code = "quota_exceeded"
    http_status = 429


class DiskReserveError(ClientError):
    code = "disk_reserve"
    http_status = 507


class _Budgets:
    """Bytes per key, refilled at ``per_day`` a day up to ``per_day``; the keys touched
    longest ago are dropped first (a full budget is the same as none)."""

    def __init__(self, clock: Clock, per_day: int) -> None:
        self.clock = clock
        self.per_day = float(per_day)
        self.rate = per_day / DAY_SECONDS
        self._levels: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def level(self, key: str) -> float:
        now = self.clock.monotonic()
        level, last = self._levels.get(key, (self.per_day, now))
        return min(self.per_day, level + (now - last) * self.rate)

    def take(self, key: str, amount: int) -> None:
        level = self.level(key) - amount
        self._levels.pop(key, None)
        self._levels[key] = (level, self.clock.monotonic())
        while len(self._levels) > MAX_KEYS:
            self._levels.popitem(last=False)

    def replay(self, charges: Iterable[tuple[str, int, int]], now_ms: int) -> None:
        """The budgets as ``charges`` (key, wall time in ms, bytes; oldest first, none more
        than a day old) left them at ``now_ms``."""
        state: dict[str, tuple[float, int]] = {}
        for key, at_ms, size in charges:
            level, last = state.get(key, (self.per_day, at_ms))
            level = min(self.per_day, level + max(0, at_ms - last) / 1000 * self.rate) - size
            state[key] = (level, at_ms)
        mono = self.clock.monotonic()
        for key, (level, last) in state.items():
            level = min(self.per_day, level + max(0, now_ms - last) / 1000 * self.rate)
            if level < self.per_day:
                self._levels.pop(key, None)
                self._levels[key] = (level, mono)
        while len(self._levels) > MAX_KEYS:
            self._levels.popitem(last=False)

    def wait(self, key: str, amount: int) -> float:
        """Seconds until ``key`` can pay ``amount`` (inf if never: more than a day's)."""
        if amount > self.per_day:
            return float("inf")
        return max(0.0, (amount - self.level(key)) / self.rate)


class Quotas:
    def __init__(self, clock: Clock, *, officer_per_day: int, desk_per_day: int,
                 data_dir: Path, reserve_bytes: int,
                 free: Callable[[Path], int] = lambda p: shutil.disk_usage(p).free) -> None:
        self.officers = _Budgets(clock, officer_per_day)
        self.desks = _Budgets(clock, desk_per_day)
        self.data_dir = data_dir
        self.reserve_bytes = reserve_bytes
        self.free = free

    def restore(self, sends: list[tuple[str, str, int, int]], now_ms: int) -> None:
        """Charge the stored sends of the last day again (officer id, desk, accepted_ms,
        bytes; oldest first), as after a restart."""
        self.officers.replay(((officer, at, size) for officer, _, at, size in sends), now_ms)
        self.desks.replay(((desk, at, size) for _, desk, at, size in sends), now_ms)

    def charge(self, officer: str, desk: str, size: int) -> None:
        """Pay for storing ``size`` bytes from ``officer`` of ``desk``, or raise (and pay
        nothing)."""
        for budgets, key, whose in ((self.officers, officer, "your"),
                                    (self.desks, desk, f"{desk}'s")):
            wait = budgets.wait(key, size)
            if wait > 0:
                error = QuotaExceededError(
                    f"{whose} quota of {budgets.per_day / 2**20:.0f} MiB a day is spent"
                    + (f"; retry in {wait:.0f} s" if wait != float("inf") else
                       f"; this message ({size / 2**20:.1f} MiB) is larger than a day's"))
                error.retry_after = wait if wait != float("inf") else None
                raise error
        if self.free(self.data_dir) - size < self.reserve_bytes:
            raise DiskReserveError("the gateway's disk is nearly full; it takes no new "
                                   "messages until its operator makes room")
        self.officers.take(officer, size)
        self.desks.take(desk, size)

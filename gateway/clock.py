"""Time, injected: every part that waits, expires or measures takes a :class:`Clock`.

``SystemClock`` is the real one. Tests use ``ManualClock`` and move time by hand, so
retry, expiry and service-level logic runs without sleeping.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Wall-clock Unix time in milliseconds (what is written down and signed)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (what durations are measured with)."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that moves only when told; sleepers wake when time passes their deadline."""

    def __init__(self, start_ms: int = 1_767_225_600_000) -> None:  # 2026-01-01T00:00:00Z
        self._now_ms = start_ms
        self._mono = 1000.0
        self._sleepers: list[tuple[float, asyncio.Future[None], str]] = []

    def now_ms(self) -> int:
        return self._now_ms

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        task = asyncio.current_task()
        name = task.get_name() if task is not None else ""
        self._sleepers.append((self._mono + max(seconds, 0.0), fut, name))
        try:
            await fut
        finally:
            self._sleepers = [s for s in self._sleepers if s[1] is not fut]

    def asleep(self) -> set[str]:
        """Names of the tasks waiting on this clock now.

        Time moved while a task is busy does not wake it (it was not sleeping); a test
        that means to wake a task waits until the task is asleep before it moves time.
        """
        return {name for _, fut, name in self._sleepers if not fut.done()}

    def advance(self, seconds: float) -> None:
        self._now_ms += round(seconds * 1000)
        self._mono += seconds
        for deadline, fut, _ in list(self._sleepers):
            if deadline <= self._mono and not fut.done():
                fut.set_result(None)

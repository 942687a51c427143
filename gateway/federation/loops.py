"""The supervised loops of each partner gateway, started and stopped as partners come and
go: at start for every configured partner, and on a reload for those added (removed
ones' loops are stopped; what they had queued stays in the store).

Each family of loops (``refresh``, ``relay``, ``witness``) is registered by its resource
in ``gateway.app`` with a function that makes a partner's loop; :meth:`PartnerLoops.add`
starts one task ``<family>:<partner>`` per family, with the partner's id bound to every
log line the task writes (gateway.tasks).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from gateway.federation.partners import Partner
from gateway.tasks import spawn, stop

LoopOf = Callable[[Partner], Callable[[], Awaitable[None]]]


class PartnerLoops:
    def __init__(self) -> None:
        self._families: dict[str, LoopOf] = {}
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}  # (family, partner)

    @contextlib.asynccontextmanager
    async def family(self, name: str, loop_of: LoopOf,
                     partners: Iterable[Partner]) -> AsyncIterator[None]:
        """Run family ``name`` for each of ``partners`` now and each partner added while
        the block runs; stop them all when it ends."""
        self._families[name] = loop_of
        try:
            for partner in partners:
                self._start(name, partner)
            yield
        finally:
            del self._families[name]
            for key in [k for k in self._tasks if k[0] == name]:
                await stop(self._tasks.pop(key))

    def _start(self, name: str, partner: Partner) -> None:
        self._tasks[(name, partner.id)] = spawn(
            f"{name}:{partner.id}", self._families[name](partner), partner=partner.id)

    def add(self, partner: Partner) -> None:
        """Start every family's loop for a partner added since the start."""
        for name in self._families:
            self._start(name, partner)

    async def remove(self, partner_id: str) -> None:
        """Stop every loop of a partner (waits until they have ended)."""
        for key in [k for k in self._tasks if k[1] == partner_id]:
            await stop(self._tasks.pop(key))

    def running(self, partner_id: str) -> list[str]:
        """The families running for a partner (for tests and the admin report)."""
        return sorted(name for name, pid in self._tasks if pid == partner_id)

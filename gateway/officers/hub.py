"""Live updates: the store's notifications fanned out to the streams listening for a desk.

Each subscriber gets a bounded queue. A subscriber that falls behind (its queue is full)
is cut off with a final ``resync`` item rather than slowing anyone else down; its client
reconnects and re-reads the inbox from its last cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from gateway.store import Notification

RESYNC = Notification("", "resync", {})
SHUTDOWN = Notification("", "shutdown", {})


class Subscription:
    def __init__(self, hub: Hub, desks: frozenset[str], size: int) -> None:
        self.hub = hub
        self.desks = desks
        self.queue: asyncio.Queue[Notification] = asyncio.Queue(maxsize=size)
        self.cut = False

    def offer(self, item: Notification) -> None:
        if self.cut:
            return
        if self.queue.qsize() >= self.queue.maxsize - 2:  # room for RESYNC and SHUTDOWN
            self.cut = True
            self.queue.put_nowait(RESYNC)
            return
        self.queue.put_nowait(item)

    def close(self) -> None:
        self.hub.unsubscribe(self)


class Hub:
    def __init__(self, queue_size: int = 1000) -> None:
        self.queue_size = queue_size
        self._by_desk: dict[str, set[Subscription]] = {}

    def subscribe(self, desks: Iterable[str]) -> Subscription:
        sub = Subscription(self, frozenset(desks), self.queue_size)
        for desk in sub.desks:
            self._by_desk.setdefault(desk, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        for desk in sub.desks:
            subs = self._by_desk.get(desk)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_desk[desk]

    def publish(self, item: Notification) -> None:
        for sub in tuple(self._by_desk.get(item.desk, ())):
            sub.offer(item)

    def close_all(self) -> None:
        """Tell every stream to end (the gateway is stopping)."""
        for sub in {s for subs in self._by_desk.values() for s in subs}:
            sub.cut = True
            with contextlib.suppress(asyncio.QueueFull):
                sub.queue.put_nowait(SHUTDOWN)

    def subscribers(self) -> int:
        return len({s for subs in self._by_desk.values() for s in subs})

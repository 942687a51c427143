"""Live updates: the store's notifications fanned out to the streams listening for a desk.

Each subscriber gets a bounded queue. A subscriber that falls behind (its queue is full)
is cut off with a final ``resync`` item rather than slowing anyone else down; its client
reconnects and re-reads the inbox from its last cursor.

Streams are capped per officer and in total: an officer who opens one stream more than
``per_officer`` ends its own oldest (a final ``ended`` item, reason ``too_many_streams``),
so a client that reconnected before its dead connections were noticed is never locked
out; past ``total`` streams of all officers together a new one is refused
(:class:`TooManyStreams`), since ending another officer's stream would let anyone cut
everyone off.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from gateway.errors import ClientError
from gateway.store import Notification

RESYNC = Notification("", "resync", {})
SHUTDOWN = Notification("", "shutdown", {})
REPLACED = Notification("", "ended", {"reason": "too_many_streams"})


class TooManyStreams(ClientError):
    code = "too_many_streams"
    http_status = 429


class Subscription:
    def __init__(self, hub: Hub, desks: frozenset[str], size: int, officer: str = "") -> None:
        self.hub = hub
        self.desks = desks
        self.officer = officer
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
    def __init__(self, queue_size: int = 1000, per_officer: int = 1_000_000,
                 total: int = 1_000_000) -> None:
        self.queue_size = queue_size
        self.per_officer, self.total = per_officer, total
        self._by_desk: dict[str, set[Subscription]] = {}
        self._by_officer: dict[str, list[Subscription]] = {}  # oldest first
        self._live = 0

    def subscribe(self, desks: Iterable[str], officer: str = "") -> Subscription:
        """A new stream of ``officer``'s, after ending the officer's oldest if it holds
        ``per_officer``; TooManyStreams if the gateway holds ``total``."""
        held = self._by_officer.get(officer, [])
        if len(held) >= self.per_officer:
            oldest = held[0]
            self.unsubscribe(oldest)
            oldest.cut = True  # its reader stops at the item below, whatever is queued
            with contextlib.suppress(asyncio.QueueFull):
                oldest.queue.put_nowait(REPLACED)
        if self._live >= self.total:
            raise TooManyStreams(f"this gateway holds {self.total} live streams; try again "
                                 "later")
        sub = Subscription(self, frozenset(desks), self.queue_size, officer)
        for desk in sub.desks:
            self._by_desk.setdefault(desk, set()).add(sub)
        self._by_officer.setdefault(officer, []).append(sub)
        self._live += 1
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        held = self._by_officer.get(sub.officer, [])
        if sub in held:  # once only: a replaced stream is unsubscribed again as it ends
            held.remove(sub)
            self._live -= 1
            if not held:
                del self._by_officer[sub.officer]
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

"""Stored desk notices: what a desk is told, kept for officers who were not watching.

Every notice addressed to a desk is a row of ``desk_notices`` written in the transaction
of what caused it: membership changes (gateway.officers.membership), service-level
breaches and escalations (gateway.service_levels.levels, with the breach), non-delivery
notices (gateway.federation.sender, with the message leaving the outbox). The row's
``seq`` is the notice's cursor, one sequence for every desk.

:class:`StoredNotices` is the one path from those rows to the live streams: after a
commit that stored notices (or a directory reload, or a breach check) it reads the rows
after the last one it published and publishes each, in cursor order, as its stream event
(``membership``, ``breach``, ``escalation``, ``expired``, ``rejected``) with ``cursor`` in
the data. Because the stream event is made from the stored row, a stream that replays
stored notices (``GET /v1/stream?since=CURSOR``) sends exactly what a live stream sent.

Notices are read back with ``GET /v1/desks/{desk}/notices`` (gateway.channels.membership),
which also counts each officer's unread ones; reading one by its cursor marks it read.
A notice counts as unread for an officer only if it was made after the officer's binding
began: an officer who joins a desk is not handed its whole past as news.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from gateway.store import DeskNotice, NoticeStore, Notification

PAGE = 500
# The most stored notices one stream replays (``since``): the newest ones, after a
# ``truncated`` event that tells the client to page through the older ones with
# ``GET /v1/desks/{desk}/notices`` (a stream that replayed everything since cursor 0
# would hold a large answer in the gateway's memory at each reconnection).
MAX_REPLAY = 500
TRUNCATED = "truncated"
NOTICE_EVENTS = frozenset({"membership", "breach", "escalation", "expired", "rejected",
                           "case_due", "case_overdue"})


class StoredNotices:
    def __init__(self, store: NoticeStore, gateway: str,
                 publish: Callable[[Notification], None]) -> None:
        self.store = store
        self.gateway = gateway
        self.publish = publish
        self.last: int | None = None  # the last notice published (None: not started)
        self._lock = asyncio.Lock()  # a commit, a reload and a breach check may overlap
        self._wake = asyncio.Event()

    def notification(self, notice: DeskNotice) -> Notification:
        data = notice.to_json(self.gateway)
        del data["event"]  # the stream names it in its ``event:`` line
        return Notification(data.pop("desk"), notice.event, data)

    async def start(self) -> None:
        """Note where the store stands: notices stored before are not live news (streams
        opened later ask for them with ``since``)."""
        self.last = await self.store.last_desk_notice()

    async def catch_up(self) -> None:
        """Publish the notices stored since the last call, in cursor order."""
        async with self._lock:
            if self.last is None:
                await self.start()
                return
            while notices := await self.store.desk_notices(None, self.last, PAGE):
                for notice in notices:
                    self.publish(self.notification(notice))
                    self.last = notice.seq

    def poke(self) -> None:
        """A commit stored notices: :meth:`run` publishes them (on the store's path)."""
        self._wake.set()

    async def run(self) -> None:
        """Publish after each poke (supervised)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.catch_up()

    async def replay(self, desks: Sequence[str], since: int,
                     limit: int = MAX_REPLAY) -> tuple[list[Notification], int]:
        """The stored notices of ``desks`` (addresses) after cursor ``since``, as their
        stream events, oldest first, up to the last one published live; and that
        cursor. A stream subscribed before it asks drops live events up to that cursor
        (they are in the replay) and sends the later ones as they come.

        At most the newest ``limit`` are replayed; if there were more, a ``truncated``
        event comes first: ``since`` (as asked) and ``first`` (the first cursor replayed):
        the notices between are to be read with ``GET /v1/desks/{desk}/notices``."""
        names = [d.partition("@")[0] for d in desks]
        upto = self.last if self.last is not None else await self.store.last_desk_notice()
        if since >= upto:
            return [], upto
        page = await self.store.latest_notices_for(names, since, upto, limit + 1)
        found = [self.notification(n) for n in page[-limit:]] if limit else []
        if len(page) > limit:
            first = page[-limit].seq if limit else upto + 1
            found.insert(0, Notification("", TRUNCATED, {
                "since": since, "first": first, "limit": limit}))
        return found, upto

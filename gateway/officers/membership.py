"""Desk membership notices: each desk's live streams hear who waits to join, joined, left.

The store writes a notice (``desk_notices``) in the transaction of each change, in
whichever process makes it: an enrollment (``pending``, or ``joined`` for a desk's first
member, admitted by the operator), an admission (``joined``, by whom), a revocation
(``left``). After each directory reload this publishes the notices it has not published
yet as ``membership`` stream events; ``GET /v1/desks/{desk}/notices`` reads them back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gateway.store import NoticeStore, Notification

MEMBERSHIP = "membership"
PAGE = 500


class MembershipNotices:
    def __init__(self, store: NoticeStore, gateway: str,
                 publish: Callable[[Notification], None]) -> None:
        self.store = store
        self.gateway = gateway
        self.publish = publish
        self.last: int | None = None  # the last notice published (None: not started)
        self._lock = asyncio.Lock()  # reloads from a request and from the watcher overlap

    async def catch_up(self) -> None:
        """Publish the notices written since the last call (the first call only notes
        where the store stands: streams opened later read older ones from the API)."""
        async with self._lock:
            if self.last is None:
                self.last = await self.store.last_desk_notice()
                return
            while notices := await self.store.desk_notices(None, self.last, PAGE):
                for notice in notices:
                    data = notice.to_json(self.gateway)
                    self.publish(Notification(data.pop("desk"), MEMBERSHIP, data))
                    self.last = notice.seq

"""Retention: the ciphertext of messages older than ``store.retention_days`` is deleted,
once an hour, a page at a time; the message rows, digests, reads and ledger entries
stay, so the ledger still verifies and a purged message's status still answers.
Messages still waiting for a partner are kept until they leave the outbox."""

from __future__ import annotations

import structlog

from gateway.clock import Clock
from gateway.errors import StoreError
from gateway.store import RetentionStore

log = structlog.get_logger("gateway.retention")

DAY_MS = 86_400_000
PAGE = 1000


class Retention:
    def __init__(self, store: RetentionStore, clock: Clock, days: int,
                 every_seconds: float = 3600.0) -> None:
        self.store = store
        self.clock = clock
        self.days = days
        self.every_seconds = every_seconds

    async def purge(self) -> int:
        """Delete what the retention period has passed for; how many envelopes."""
        before = self.clock.now_ms() - self.days * DAY_MS
        total = 0
        while (done := await self.store.purge_envelopes(before, PAGE)) > 0:
            total += done
        if total:
            log.info("envelopes_purged", count=total, days=self.days)
        return total

    async def run(self) -> None:
        """Purge now and every ``every_seconds`` (supervised)."""
        while True:
            try:
                await self.purge()
            except StoreError as exc:
                log.error("purge_failed", error=exc.message)
            await self.clock.sleep(self.every_seconds)

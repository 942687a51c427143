"""Service levels: warn before a flash alert goes unanswered.

Each configured level (``[[service_levels]]``: priority, stage, within_seconds, escalate)
says how long a hotline or case message of that priority may take from this gateway's
accept to a stage:

* ``delivered``: out of this gateway's outbox into the partner's desk inbox (local and
  inbound messages are delivered at accept and cannot miss it);
* ``read``: the first signed read acknowledgement (for outbound messages, the one the
  partner forwarded back);
* ``reply``: the first reply.

Every ``[metrics] check_seconds`` a supervised task looks for messages past their due
time that have not reached the stage. Each one found is recorded once (table
``breaches``), counted in ``fpg_service_level_breaches_total{direction, priority,
stage}``, logged, and told to the desk that must act (the recipient desk of local and
inbound messages, the sending desk of outbound ones) as a ``breach`` notice. If the level
says ``escalate`` and that desk has a supervisor desk, the gateway signs a breach notice
(a signed note, text ``fpg service-level breach v1`` and one line of canonical JSON,
docs/PROTOCOL.md) for the supervisor desk (``escalation``). Both notices are stored in
the breach's transaction (gateway.officers.notices), so a desk that was not watching
finds them later, and then go out on the desks' live streams.

Messages that expired with a non-delivery notice, or that the partner refused, are not
counted: their desks were told already.
"""

from __future__ import annotations

import structlog

from gateway.clock import Clock
from gateway.config import ServiceLevelSection
from gateway.crypto.keys import GatewaySigningKey
from gateway.metrics import DIRECTIONS, Metrics
from gateway.officers.directory import DirectoryService
from gateway.officers.notices import StoredNotices
from gateway.protocol.notices import BreachNotice, open_breach_notice
from gateway.service_levels.stages import Route, Stages
from gateway.store import Breach, LevelsStore, MessageTimes, NewNotice

log = structlog.get_logger("gateway.service_levels.levels")
__all__ = ["BreachNotice", "ServiceLevels", "open_breach_notice"]

LOOKBACK_MS = 30 * 86_400_000  # messages older than their due time by more are left alone
PER_PASS = 1000  # breaches recorded per level and pass; the next pass takes the rest


class ServiceLevels:
    def __init__(self, levels: tuple[ServiceLevelSection, ...], store: LevelsStore,
                 directory: DirectoryService, stages: Stages, metrics: Metrics,
                 clock: Clock, key: GatewaySigningKey, gateway: str, interval: float) -> None:
        self.levels = levels
        self.store = store
        self.directory = directory
        self.stages = stages
        self.metrics = metrics
        self.clock = clock
        self.key = key
        self.gateway = gateway
        self.interval = interval
        self.feed: StoredNotices | None = None  # publishes the notices stored (the hub)
        self.replace(levels)

    def replace(self, levels: tuple[ServiceLevelSection, ...]) -> None:
        """Check ``levels`` from the next pass on (a reload of the configuration)."""
        self.levels = levels
        for level in levels:  # at 0 from the start, so that a first breach is an increase
            for direction in DIRECTIONS:
                self.metrics.breaches.labels(direction, level.priority, level.stage)

    async def run(self) -> None:
        """Check every ``interval`` seconds of the clock (supervised)."""
        while True:
            await self.check()
            await self.clock.sleep(self.interval)

    async def check(self) -> list[Breach]:
        """One pass over every level: record, count and tell the breaches found."""
        found: list[Breach] = []
        for level in self.levels:
            found.extend(await self._check_level(level))
        return found

    async def _check_level(self, level: ServiceLevelSection) -> list[Breach]:
        now = self.clock.now_ms()
        within = round(level.within_seconds * 1000)
        late = await self.store.overdue(level.stage, level.priority, now - within,
                                        now - within - LOOKBACK_MS, PER_PASS)
        if not late:
            return []
        directory = await self.directory.get()
        planned: list[tuple[Breach, MessageTimes, Route]] = []
        for m in late:
            route = self.stages.route(m)
            desk = m.sender if route.direction == "outbound" else m.recipient
            entry = directory.desk(desk)
            supervisor = entry.supervisor if entry is not None and level.escalate else None
            due = m.accepted_ms + within
            notice = None
            if supervisor is not None:
                notice = BreachNotice(self.gateway, m.id, desk, supervisor, m.kind,
                                      m.priority, level.stage, m.accepted_ms, due,
                                      now).sign(self.key)
            notices = [NewNotice(desk, "breach", m.id, now, {
                "id": m.id, "stage": level.stage, "priority": m.priority, "kind": m.kind,
                "accepted": m.accepted_ms, "due": due, "time": now})]
            if supervisor is not None and notice is not None:
                notices.append(NewNotice(supervisor, "escalation", m.id, now, {
                    "id": m.id, "stage": level.stage, "priority": m.priority,
                    "late_desk": desk}, notice))
            planned.append((Breach(m.id, level.stage, desk, m.priority, due, now,
                                   supervisor, notice, tuple(notices)), m, route))
        recorded = {(b.message_id, b.stage)
                    for b in await self.store.record_breaches([b for b, _, _ in planned])}
        new = [p for p in planned if (p[0].message_id, p[0].stage) in recorded]
        if new and self.feed is not None:
            await self.feed.catch_up()  # the desks hear of them before they are counted
        for b, _m, route in new:
            self.metrics.breaches.labels(route.direction, b.priority, b.stage).inc()
            log.warning("service_level_breach", message=b.message_id, stage=b.stage,
                        priority=b.priority, direction=route.direction, partner=route.partner,
                        late_seconds=round((now - b.due_ms) / 1000, 3),
                        escalated=b.supervisor is not None)
        return [b for b, _, _ in new]

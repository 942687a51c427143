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
stage}``, logged, and told on the live stream of the desk that must act (the recipient
desk of local and inbound messages, the sending desk of outbound ones) as a ``breach``
event. If the level says ``escalate`` and that desk has a supervisor desk, the gateway
signs a breach notice (a signed note, text ``fpg service-level breach v1`` and one line
of canonical JSON, docs/PROTOCOL.md) and sends it to the supervisor desk's stream.

Messages that expired with a non-delivery notice, or that the partner refused, are not
counted: their desks were told already.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import structlog

from gateway.clock import Clock
from gateway.config import ServiceLevelSection
from gateway.crypto.keys import GatewaySigningKey, VerifyKey
from gateway.errors import MalformedError
from gateway.metrics import DIRECTIONS, Metrics
from gateway.officers.directory import DirectoryService
from gateway.protocol.signed import SignedJson
from gateway.service_levels.stages import Route, Stages
from gateway.store import Breach, LevelsStore, MessageTimes, Notification

log = structlog.get_logger("gateway.service_levels.levels")

NOTICE_LINE = "fpg service-level breach v1"
MAX_NOTICE_SIZE = 4096
BREACH_NOTICE = SignedJson(NOTICE_LINE, "breach notice", MAX_NOTICE_SIZE)
LOOKBACK_MS = 30 * 86_400_000  # messages older than their due time by more are left alone
PER_PASS = 1000  # breaches recorded per level and pass; the next pass takes the rest


@dataclass(frozen=True)
class BreachNotice:
    gateway: str  # which signs
    message_id: str
    desk: str  # the desk that must act
    supervisor: str  # the desk told
    kind: str
    priority: str
    stage: str
    accepted_ms: int
    due_ms: int
    time_ms: int

    def text(self) -> str:
        body: dict[str, Any] = {
            "accepted": self.accepted_ms, "desk": self.desk, "due": self.due_ms,
            "gateway": self.gateway, "id": self.message_id, "kind": self.kind,
            "priority": self.priority, "stage": self.stage, "supervisor": self.supervisor,
            "time": self.time_ms, "v": 1,
        }
        return BREACH_NOTICE.text(body)

    def sign(self, key: GatewaySigningKey) -> bytes:
        return BREACH_NOTICE.sign(self.text(), self.gateway, key)


def open_breach_notice(note: bytes, gateway: str, key: VerifyKey) -> BreachNotice:
    """Verify a breach notice signed by ``gateway`` with ``key`` and parse it."""
    text, doc = BREACH_NOTICE.open(note, gateway, [key])
    with BREACH_NOTICE.fields():
        notice = BreachNotice(
            gateway=str(doc["gateway"]), message_id=str(doc["id"]), desk=str(doc["desk"]),
            supervisor=str(doc["supervisor"]), kind=str(doc["kind"]),
            priority=str(doc["priority"]), stage=str(doc["stage"]),
            accepted_ms=int(doc["accepted"]), due_ms=int(doc["due"]),
            time_ms=int(doc["time"]),
        )
    if doc.get("v") != 1 or notice.gateway != gateway:
        raise MalformedError("breach notice has a wrong version or gateway")
    BREACH_NOTICE.check_canonical(notice.text(), text)
    return notice


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
        self.listeners: list[Any] = []  # called with each Notification (the hub)
        for level in levels:  # at 0 from the start, so that a first breach is an increase
            for direction in DIRECTIONS:
                metrics.breaches.labels(direction, level.priority, level.stage)
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
            planned.append((Breach(m.id, level.stage, desk, m.priority, due, now,
                                   supervisor, notice), m, route))
        recorded = {(b.message_id, b.stage)
                    for b in await self.store.record_breaches([b for b, _, _ in planned])}
        new = [p for p in planned if (p[0].message_id, p[0].stage) in recorded]
        for b, m, route in new:
            self.metrics.breaches.labels(route.direction, b.priority, b.stage).inc()
            log.warning("service_level_breach", message=b.message_id, stage=b.stage,
                        priority=b.priority, direction=route.direction, partner=route.partner,
                        late_seconds=round((now - b.due_ms) / 1000, 3),
                        escalated=b.supervisor is not None)
            self._tell(Notification(b.desk, "breach", {
                "id": b.message_id, "stage": b.stage, "priority": b.priority,
                "kind": m.kind, "accepted": m.accepted_ms, "due": b.due_ms, "time": now}))
            if b.supervisor is not None and b.notice is not None:
                self._tell(Notification(b.supervisor, "escalation", {
                    "id": b.message_id, "stage": b.stage, "priority": b.priority,
                    "late_desk": b.desk,
                    "notice": base64.b64encode(b.notice).decode("ascii")}))
        return [b for b, _, _ in new]

    def _tell(self, item: Notification) -> None:
        for listener in self.listeners:
            listener(item)

"""Response-time metrics, learned from the ledger events each commit appended.

The store hands every committed batch's events to :meth:`Stages.observe` (no I/O, on the
committer's path); a background task turns them into observations of
``fpg_response_seconds`` and counts of ``fpg_messages_total``. Times run from this
gateway's accept of the message:

* ``receipt`` and ``delivered`` of an outbound message come from the partner's signed
  receipt (the partner delivers into the desk inbox before it signs "accepted");
* ``delivered`` of a local or inbound message is its delivery into the inbox here;
* ``read`` is the first signed read acknowledgement, ours or one a partner forwarded
  back; ``reply`` the first reply accepted here, ours or one relayed from the partner.

So Viet Nam's gateway sees how fast Cambodia's desks read and answer Viet Nam's alerts.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any, NamedTuple

import structlog

from gateway.ledger import events as ev
from gateway.ledger.events import LedgerEvent
from gateway.metrics import LOCAL, Metrics
from gateway.store import MessageTimes, StagesStore

log = structlog.get_logger("gateway.service_levels.stages")

_NEEDS_LOOKUP = frozenset({ev.RECEIPT, ev.READ, ev.REPLIED, ev.EXPIRED})
_FIRSTS_KEPT = 65_536  # message ids whose first read/reply was observed, remembered


class Route(NamedTuple):
    direction: str
    partner: str


class Stages:
    def __init__(self, store: StagesStore, metrics: Metrics, gateway: str) -> None:
        self.store = store
        self.metrics = metrics
        self.gateway = gateway
        self._pending: list[LedgerEvent] = []
        self._wake = asyncio.Event()
        # (message, stage) pairs already observed: two officers reading in the same
        # millisecond must not count as two first reads
        self._firsts: OrderedDict[tuple[str, str], None] = OrderedDict()
        # labelled series, by label values (bounded: see gateway.metrics)
        self._counters: dict[tuple[str, ...], Any] = {}
        self._histograms: dict[tuple[str, ...], Any] = {}

    def observe(self, events: list[LedgerEvent]) -> None:
        """Called by the store after each commit (keep it cheap)."""
        self._pending.extend(events)
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            await self.process(batch)

    async def process(self, batch: list[LedgerEvent]) -> None:
        accepted: dict[str, LedgerEvent] = {}
        lookups = [e.message_id for e in batch if e.type in _NEEDS_LOOKUP]
        times = await self.store.message_times(lookups) if lookups else {}
        for e in batch:
            if e.type == ev.ACCEPTED:
                accepted[e.message_id] = e
                self._count(self._route_of_event(e), e.kind, e.priority, "accepted")
            elif e.type == ev.DELIVERED:
                first = accepted.get(e.message_id)
                if first is not None:  # always so: local delivery happens at accept
                    route = self._route_of_event(first)
                    self._count(route, e.kind, e.priority, "delivered")
                    self._observe(route, e.kind, e.priority, "delivered",
                                  e.time_ms - first.time_ms)
            else:
                m = times.get(e.message_id)
                if m is not None:
                    self._stage(e, m)

    def _stage(self, e: LedgerEvent, m: MessageTimes) -> None:
        route = self.route(m)
        if e.type == ev.RECEIPT:
            took = e.time_ms - m.accepted_ms
            self._observe(route, m.kind, m.priority, "receipt", took)
            if e.outcome != "rejected":  # (a rejection is counted by its REJECTED event)
                self._count(route, m.kind, m.priority, "relayed")
                self._observe(route, m.kind, m.priority, "delivered", took)
        elif e.type == ev.REJECTED:
            self._count(route, m.kind, m.priority, "refused")
        elif e.type == ev.EXPIRED:
            self._count(route, m.kind, m.priority, "expired")
        elif e.type == ev.READ:
            self._count(route, m.kind, m.priority, "read")
            if e.time_ms == m.first_read_ms and self._first(m.id, "read"):
                self._observe(route, m.kind, m.priority, "read", e.time_ms - m.accepted_ms)
        elif e.type == ev.REPLIED:
            self._count(route, m.kind, m.priority, "replied")
            if e.time_ms == m.first_reply_ms and self._first(m.id, "reply"):
                self._observe(route, m.kind, m.priority, "reply", e.time_ms - m.accepted_ms)

    def route(self, m: MessageTimes) -> Route:
        return self._route(None if m.origin == "local" else m.origin, m.recipient)

    def _route_of_event(self, e: LedgerEvent) -> Route:
        """Of an ``accepted`` event, whose ``partner`` is the gateway it came from."""
        return self._route(e.partner, e.recipient or "")

    def _route(self, came_from: str | None, recipient: str) -> Route:
        if came_from is not None:
            return Route("inbound", came_from)
        gateway = recipient.partition("@")[2]
        if gateway == self.gateway:
            return Route("local", LOCAL)
        return Route("outbound", gateway)

    def _first(self, message_id: str, stage: str) -> bool:
        key = (message_id, stage)
        if key in self._firsts:
            return False
        self._firsts[key] = None
        if len(self._firsts) > _FIRSTS_KEPT:
            self._firsts.popitem(last=False)
        return True

    def _count(self, route: Route, kind: str | None, priority: str | None,
               outcome: str) -> None:
        key = (route.direction, route.partner, kind or "", priority or "", outcome)
        counter = self._counters.get(key)
        if counter is None:  # labels() takes a lock and builds a key: once per series
            counter = self._counters[key] = self.metrics.messages.labels(*key)
        counter.inc()

    def _observe(self, route: Route, kind: str | None, priority: str | None, stage: str,
                 took_ms: int) -> None:
        key = (route.direction, route.partner, kind or "", priority or "", stage)
        histogram = self._histograms.get(key)
        if histogram is None:
            histogram = self._histograms[key] = self.metrics.response.labels(*key)
        # Clocks of two gateways may differ by up to the hop window: never negative.
        histogram.observe(max(took_ms, 0) / 1000)

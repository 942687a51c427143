"""Deadlines that act: reminders before a request's due day ends, escalation after.

Every ``[cases] check_seconds`` a supervised task looks for open requests (case threads
not yet executed, partly executed, refused or withdrawn) whose due day ends within the
reminder window (``[cases] remind_days``, or the ``[[case_reminders]]`` entry of the
request's partner) or has ended. For each, this gateway tells the desk of the request
that is its own (the requesting desk on the requester's gateway, the executing desk on
the executor's; both when both are here):

* ``case_due``: a reminder, once per due day, to that desk;
* ``case_overdue``: once per due day, to that desk and to its supervisor desk.

Each notice carries a gateway-signed ``fpg case deadline v1`` note (docs/PROTOCOL.md).
The request is marked in the notices' own transaction, only if it still has the due time
the notices are about and is still open; so a restart, a second pass, or a resubmission
with a new due day (which clears both marks) never tells one twice or tells a stale one.
No window is capped: a request due in three years is reminded in three years.
"""

from __future__ import annotations

import structlog

from gateway.clock import Clock
from gateway.config import CaseReminderSection, CasesSection
from gateway.crypto.keys import GatewaySigningKey
from gateway.metrics import LOCAL, Metrics
from gateway.officers.directory import Directory, DirectoryService
from gateway.officers.notices import StoredNotices
from gateway.protocol.cases import DAY_MS
from gateway.protocol.notices import OVERDUE, REMINDER, CaseDeadlineNotice
from gateway.store import CaseRow, CaseStore, DeadlineNotice, NewNotice

log = structlog.get_logger("gateway.cases.deadlines")

PER_PASS = 1000  # requests looked at per pass; the next pass takes the rest
NOTICE_KINDS = {REMINDER: "case_due", OVERDUE: "case_overdue"}


class CaseDeadlines:
    def __init__(self, settings: CasesSection, reminders: tuple[CaseReminderSection, ...],
                 store: CaseStore, directory: DirectoryService, metrics: Metrics,
                 clock: Clock, key: GatewaySigningKey, gateway: str) -> None:
        self.settings = settings
        self.remind_ms = {r.partner: round(r.remind_days * DAY_MS) for r in reminders}
        self.default_remind_ms = round(settings.remind_days * DAY_MS)
        self.store = store
        self.directory = directory
        self.metrics = metrics
        self.clock = clock
        self.key = key
        self.gateway = gateway
        self.feed: StoredNotices | None = None  # publishes the notices stored (the hub)
        self._seen: set[tuple[str, str]] = set()  # (partner, state) gauges set so far
        self._overdue_seen: set[str] = set()

    async def run(self) -> None:
        """Check every ``check_seconds`` of the clock (supervised)."""
        while True:
            await self.check()
            await self.clock.sleep(self.settings.check_seconds)

    def _window(self, case: CaseRow) -> int:
        return self.remind_ms.get(case.partner or "", self.default_remind_ms)

    async def check(self) -> list[DeadlineNotice]:
        """One pass: tell the reminders and escalations due, then refresh the gauges."""
        now = self.clock.now_ms()
        widest = max([self.default_remind_ms, *self.remind_ms.values()])
        told: list[DeadlineNotice] = []
        rows = await self.store.deadlines_before(now + widest, PER_PASS)
        if rows:
            directory = await self.directory.get()
            planned: list[DeadlineNotice] = []
            for case in rows:
                assert case.due is not None and case.due_ms is not None
                if case.escalated_ms is None and now >= case.due_ms:
                    planned.append(self._plan(case, OVERDUE, now, directory))
                    if case.reminded_ms is None:  # too late to remind: never remind now
                        planned.append(DeadlineNotice(case.thread, REMINDER, case.due_ms,
                                                      now, ()))
                elif case.reminded_ms is None and self._window(case) > 0 \
                        and now >= case.due_ms - self._window(case):
                    planned.append(self._plan(case, REMINDER, now, directory))
            told = await self.store.record_deadlines(planned) if planned else []
            if any(d.notices for d in told) and self.feed is not None:
                await self.feed.catch_up()  # the desks hear of them before they are counted
            by_thread = {c.thread: c for c in rows}
            for d in told:
                if not d.notices:
                    continue
                case = by_thread[d.thread]
                self.metrics.case_deadlines.labels(case.partner or LOCAL, d.what).inc()
                log.warning("case_overdue" if d.what == OVERDUE else "case_due_soon",
                            case=d.thread, due=case.due, state=case.state,
                            partner=case.partner or LOCAL,
                            desks=sorted({n.desk for n in d.notices}))
        await self._gauges(now)
        return told

    def _plan(self, case: CaseRow, what: str, now: int,
              directory: Directory) -> DeadlineNotice:
        assert case.due is not None and case.due_ms is not None
        notices: list[NewNotice] = []
        for desk in (case.requester, case.executor):
            if desk.partition("@")[2] != self.gateway or any(n.desk == desk for n in notices):
                continue
            told = [desk]
            if what == OVERDUE:
                entry = directory.desk(desk)
                if entry is not None and entry.supervisor and entry.supervisor != desk:
                    told.append(entry.supervisor)
            for to in told:
                note = CaseDeadlineNotice(
                    self.gateway, case.thread, what, desk, to, case.requester, case.executor,
                    case.due, case.state, now).sign(self.key)
                notices.append(NewNotice(to, NOTICE_KINDS[what], case.thread, now, {
                    "id": case.thread, "what": what, "desk": desk, "due": case.due,
                    "state": case.state, "requester": case.requester,
                    "executor": case.executor, "partner": case.partner}, note))
        return DeadlineNotice(case.thread, what, case.due_ms, now, tuple(notices))

    async def _gauges(self, now: int) -> None:
        counts = await self.store.case_counts(now)
        current = {(partner or LOCAL, state): n for (partner, state), (n, _) in counts.items()}
        overdue: dict[str, int] = dict.fromkeys(self._overdue_seen, 0)
        for (partner, _), (_, late) in counts.items():
            overdue[partner or LOCAL] = overdue.get(partner or LOCAL, 0) + late
        # A state no request is in any more reads 0, not its last count.
        for key in self._seen | current.keys():
            self.metrics.cases.labels(*key).set(current.get(key, 0))
        for label, late in overdue.items():
            self.metrics.cases_overdue.labels(label).set(late)
        self._seen |= current.keys()
        self._overdue_seen |= overdue.keys()

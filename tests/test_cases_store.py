"""Requests in the store: a case message opens one, status messages move it within the
same commit as the message, a move the lifecycle refuses stores nothing when it comes
from this gateway's officers and is kept but not applied when it comes from a partner,
and reminders and escalations are recorded once per due day. Real SQLite files and
real signatures; the deadline task runs on a manual clock."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from gateway.cases.deadlines import CaseDeadlines
from gateway.clock import ManualClock
from gateway.config import CaseReminderSection, CasesSection
from gateway.crypto.envelope import Envelope, EnvelopeHeader, seal_envelope, verify_envelope
from gateway.metrics import Metrics
from gateway.officers.directory import Directory, build_directory
from gateway.protocol.cases import DAY_MS, check_move, days_left, due_ms
from gateway.protocol.notices import open_case_deadline_notice
from gateway.store import (
    ACCEPTED,
    REFUSED,
    DeadlineNotice,
    DeskRow,
    IncomingMessage,
    NewNotice,
)
from gateway.store.sqlite import SqliteStore
from tests.helpers import GATEWAY_KEY, T0, Officer, db_path

VN_CA, LA_CA = "central-authority@vn-mps", "central-authority@la-mps"
PROSECUTOR = "prosecutor@vn-mps"
SENDER, READER = Officer(), Officer()


def envelope(kind: str, frm: str, to: str, *, thread: str | None = None,
             reply_to: str | None = None, state: str | None = None,
             due: str | None = None, now: int = T0) -> Envelope:
    mid = os.urandom(16).hex()
    header = EnvelopeHeader(id=mid, kind=kind, priority="routine", sender=frm, recipient=to,
                            created=now, expires=now + 30 * DAY_MS, thread=thread or mid,
                            in_reply_to=reply_to, state=state, due=due, handling="H1")
    data = seal_envelope(header, b"{}", SENDER.signing, [READER.encryption.public])
    return verify_envelope(data, SENDER.signing.public)


def local(env: Envelope, *, now: int = T0) -> IncomingMessage:
    """Sent by an officer of this gateway (vn-mps) to la-mps."""
    return IncomingMessage(env, now, "local", env.signer, relay_to="la-mps")


def from_partner(env: Envelope, *, now: int = T0) -> IncomingMessage:
    return IncomingMessage(env, now, "la-mps", env.signer, deliver_to=env.header.recipient)


def status(case: Envelope, frm: str, to: str, state: str, **kw: object) -> Envelope:
    return envelope("status", frm, to, thread=case.header.id, reply_to=case.header.id,
                    state=state, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def store(tmp_path: Path):
    s = await SqliteStore.open(db_path(tmp_path))
    yield s
    await s.close()


def test_the_lifecycle_table() -> None:
    check_move("submitted", "received", LA_CA, VN_CA, LA_CA)
    check_move("returned_incomplete", "resubmitted", VN_CA, VN_CA, LA_CA)
    check_move("in_progress", "withdrawn", VN_CA, VN_CA, LA_CA)
    for current, new, mover, code in [
        ("submitted", "executed", LA_CA, "invalid_move"),  # received or in progress first
        ("executed", "withdrawn", VN_CA, "invalid_move"),  # final
        ("submitted", "received", VN_CA, "not_your_move"),  # the executor's move
        ("returned_incomplete", "resubmitted", LA_CA, "not_your_move"),
        ("submitted", "submitted", LA_CA, "bad_state"),
    ]:
        with pytest.raises(ValueError) as refused:
            check_move(current, new, mover, VN_CA, LA_CA)
        assert refused.value.code == code, (current, new)  # type: ignore[attr-defined]
    assert due_ms("2026-01-01") == T0 + DAY_MS  # overdue from the next day, 00:00 UTC
    assert days_left("2026-01-01", T0) == 0
    assert days_left("2026-01-03", T0) == 2
    assert days_left("2026-01-01", T0 + DAY_MS) == -1


async def test_a_case_opens_a_request_and_moves_follow_it(store) -> None:
    case = envelope("case", VN_CA, LA_CA, due="2026-02-01")
    assert (await store.accept(local(case))).status == ACCEPTED
    row = await store.case(case.header.id)
    assert row is not None
    assert (row.requester, row.executor, row.partner, row.state, row.due) == (
        VN_CA, LA_CA, "la-mps", "submitted", "2026-02-01")
    received = status(case, LA_CA, VN_CA, "received")
    assert (await store.accept(from_partner(received, now=T0 + 5))).status == ACCEPTED
    returned = status(case, LA_CA, VN_CA, "returned_incomplete")
    assert (await store.accept(from_partner(returned, now=T0 + 6))).status == ACCEPTED
    resubmitted = status(case, VN_CA, LA_CA, "resubmitted", due="2026-03-01")
    assert (await store.accept(local(resubmitted, now=T0 + 7))).status == ACCEPTED
    row = await store.case(case.header.id)
    assert row is not None
    assert (row.state, row.state_ms, row.last_move, row.due, row.due_ms) == (
        "resubmitted", T0 + 7, resubmitted.header.id, "2026-03-01", due_ms("2026-03-01"))
    listed = await store.cases_of([VN_CA], open_only=True, limit=10)
    assert [c.thread for c in listed] == [case.header.id]
    # The header fields are what the gateway keeps; the inbox lists them.
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT handling, case_state, due FROM messages WHERE id = ?",
                          (resubmitted.header.id,)).fetchone() == ("H1", "resubmitted",
                                                                   "2026-03-01")


async def test_a_move_refused_for_an_officer_stores_nothing(store) -> None:
    case = envelope("case", VN_CA, LA_CA, due="2026-02-01")
    await store.accept(local(case))
    wrong = status(case, VN_CA, LA_CA, "executed")  # the requester cannot execute
    outcome = await store.accept(local(wrong))
    assert outcome.status == REFUSED and outcome.refusal is not None
    assert outcome.refusal[0] == "invalid_move"
    assert await store.get_message(wrong.header.id) is None
    # A status from the executing desk's side addressed to a third desk is no move.
    elsewhere = status(case, LA_CA, PROSECUTOR, "received")
    outcome = await store.accept(from_partner(elsewhere))
    assert outcome.status == ACCEPTED  # (from the partner: kept, not applied)
    row = await store.case(case.header.id)
    assert row is not None and (row.state, row.ignored_moves) == ("submitted", 1)
    sideways = status(case, VN_CA, PROSECUTOR, "withdrawn")
    outcome = await store.accept(local(sideways))
    assert outcome.status == REFUSED and outcome.refusal is not None
    assert outcome.refusal[0] == "not_your_move"
    stray = envelope("status", VN_CA, LA_CA, thread="ab" * 16, reply_to="ab" * 16,
                     state="withdrawn")
    outcome = await store.accept(local(stray))
    assert outcome.status == REFUSED and outcome.refusal is not None
    assert outcome.refusal[0] == "not_a_case"
    row = await store.case(case.header.id)
    assert row is not None and row.state == "submitted"


async def test_two_moves_in_one_commit_are_checked_in_order(store) -> None:
    """Planned together, the second move sees the first: withdrawn after withdrawn is
    refused, though neither was committed when both were checked."""
    case = envelope("case", VN_CA, LA_CA)
    await store.accept(local(case))
    first = status(case, VN_CA, LA_CA, "withdrawn")
    second = status(case, VN_CA, LA_CA, "withdrawn")
    import asyncio
    outcomes = await asyncio.gather(store.accept(local(first)), store.accept(local(second)))
    assert sorted(o.status for o in outcomes) == [ACCEPTED, REFUSED]


async def test_a_partners_move_that_crossed_ours_is_kept_but_not_applied(store) -> None:
    case = envelope("case", VN_CA, LA_CA)
    await store.accept(local(case))
    withdrawn = status(case, VN_CA, LA_CA, "withdrawn")
    assert (await store.accept(local(withdrawn, now=T0 + 1))).status == ACCEPTED
    # Meanwhile la-mps's desk received it: its status arrives after our withdrawal.
    received = status(case, LA_CA, VN_CA, "received")
    assert (await store.accept(from_partner(received, now=T0 + 2))).status == ACCEPTED
    assert await store.get_message(received.header.id) is not None  # delivered all the same
    row = await store.case(case.header.id)
    assert row is not None
    assert (row.state, row.ignored_moves) == ("withdrawn", 1)


def directory() -> Directory:
    desks = [DeskRow("central-authority", "supervisors", 0),
             DeskRow("supervisors", None, 0)]
    return build_directory("vn-mps", desks, [], T0)


class _Directory:
    async def get(self) -> Directory:
        return directory()


async def test_reminders_and_escalations_are_told_once_per_due_day(store) -> None:
    clock = ManualClock(T0)
    metrics = Metrics()
    deadlines = CaseDeadlines(CasesSection(remind_days=7), (), store,  # type: ignore[arg-type]
                              _Directory(), metrics, clock, GATEWAY_KEY, "vn-mps")
    soon = envelope("case", VN_CA, LA_CA, due="2026-01-05")  # overdue from Jan 6
    later = envelope("case", VN_CA, LA_CA, due="2026-06-01")
    for env in (soon, later):
        await store.accept(local(env))
    told = await deadlines.check()
    assert [(d.thread, d.what) for d in told] == [(soon.header.id, "reminder")]
    (reminder,) = told[0].notices
    assert (reminder.desk, reminder.kind) == (VN_CA, "case_due")
    assert reminder.note is not None
    signed = open_case_deadline_notice(reminder.note, "vn-mps", GATEWAY_KEY.public)
    assert (signed.case, signed.what, signed.due) == (soon.header.id, "reminder", "2026-01-05")
    assert await deadlines.check() == []  # once
    clock.advance(5 * DAY_MS / 1000)  # Jan 6: overdue
    told = await deadlines.check()
    assert [(d.thread, d.what) for d in told] == [(soon.header.id, "overdue")]
    assert {(n.desk, n.kind) for n in told[0].notices} == {
        (VN_CA, "case_overdue"), ("supervisors@vn-mps", "case_overdue")}
    assert await deadlines.check() == []
    assert metrics.value("fpg_cases_overdue", partner="la-mps") == 1
    assert metrics.value("fpg_cases", partner="la-mps", state="submitted") == 2
    assert metrics.value("fpg_case_deadline_notices_total", partner="la-mps",
                         what="overdue") == 1
    # A later pass, a restart: the marks are in the database.
    again = CaseDeadlines(CasesSection(remind_days=7), (), store,  # type: ignore[arg-type]
                          _Directory(), Metrics(), clock, GATEWAY_KEY, "vn-mps")
    assert await again.check() == []
    notices = await store.desk_notices(None, 0, 100)
    assert [(n.desk, n.kind) for n in notices] == [
        ("central-authority", "case_due"), ("central-authority", "case_overdue"),
        ("supervisors", "case_overdue")]


async def test_a_deadline_is_recorded_once_and_never_for_a_due_day_since_changed(
        store) -> None:
    """What two passes (or two processes) planned at once, and a reminder planned before
    a resubmission moved the due day, are recorded at most once, and only for the due day
    the request still has."""
    case = envelope("case", VN_CA, LA_CA, due="2026-01-05")
    await store.accept(local(case))
    notice = NewNotice(VN_CA, "case_due", case.header.id, T0, {"id": case.header.id})
    told = DeadlineNotice(case.header.id, "reminder", due_ms("2026-01-05"), T0, (notice,))
    assert await store.record_deadlines([told, told]) == [told]
    assert await store.record_deadlines([told]) == []
    assert len(await store.desk_notices(None, 0, 10)) == 1
    await store.accept(from_partner(status(case, LA_CA, VN_CA, "returned_incomplete")))
    await store.accept(local(status(case, VN_CA, LA_CA, "resubmitted", due="2026-02-01")))
    for what in ("reminder", "overdue"):  # planned for the old due day: both refused
        stale = DeadlineNotice(case.header.id, what, due_ms("2026-01-05"), T0, (notice,))
        assert await store.record_deadlines([stale]) == []
    assert len(await store.desk_notices(None, 0, 10)) == 1


async def test_a_request_overdue_before_any_reminder_is_escalated_only(store) -> None:
    clock = ManualClock(T0 + 40 * DAY_MS)
    deadlines = CaseDeadlines(
        CasesSection(remind_days=7), (CaseReminderSection("la-mps", 0),),
        store, _Directory(), Metrics(), clock, GATEWAY_KEY, "vn-mps")  # type: ignore[arg-type]
    case = envelope("case", PROSECUTOR, LA_CA, due="2026-01-20")
    await store.accept(local(case))
    told = await deadlines.check()
    assert sorted(d.what for d in told) == ["overdue", "reminder"]
    assert [d.notices for d in told if d.what == "reminder"] == [()]  # marked, not told
    assert await deadlines.check() == []


async def test_a_resubmission_with_a_new_due_day_is_reminded_again(store) -> None:
    clock = ManualClock(T0)
    deadlines = CaseDeadlines(CasesSection(remind_days=3), (), store,  # type: ignore[arg-type]
                              _Directory(), Metrics(), clock, GATEWAY_KEY, "vn-mps")
    case = envelope("case", VN_CA, LA_CA, due="2026-01-02")
    await store.accept(local(case))
    assert [d.what for d in await deadlines.check()] == ["reminder"]
    await store.accept(from_partner(status(case, LA_CA, VN_CA, "returned_incomplete")))
    await store.accept(local(status(case, VN_CA, LA_CA, "resubmitted", due="2026-01-03")))
    assert [d.what for d in await deadlines.check()] == ["reminder"]
    await store.accept(from_partner(status(case, LA_CA, VN_CA, "refused")))
    clock.advance(10 * DAY_MS / 1000)
    assert await deadlines.check() == []  # closed: no escalation

"""The lifecycle of a request: which ``status`` message may move a case thread where.

A request starts as a ``case`` message from the requesting desk to the executing desk
(state ``submitted``; its header may carry a ``due`` day). ``status`` messages in its
thread move it; each carries the new state in its signed header (docs/PROTOCOL.md 3.7):

    submitted ─┬─ received ─┬─ in_progress ─┬─ executed
               │            │               ├─ partly_executed
               │            │               └─ refused
               │            ├─ executed | partly_executed | refused
               │            └─ returned_incomplete ── resubmitted ── (as submitted)
               ├─ returned_incomplete
               ├─ in_progress
               └─ refused
    and from any state that is not final: withdrawn

The executing desk makes every move but two: ``resubmitted`` (after
``returned_incomplete``, with what was missing, and perhaps a new due day) and
``withdrawn`` belong to the requesting desk. ``executed``, ``partly_executed``,
``refused`` and ``withdrawn`` are final. Clients refuse a move this table does not allow;
the requesting desk's gateway refuses it too, and the executing desk's gateway (a status
moves the same way on both), so both count the same outcomes.
"""

from __future__ import annotations

import datetime
from typing import Protocol

from gateway.crypto.envelope import CASE_STATES, EnvelopeHeader

SUBMITTED = "submitted"
STATES = (SUBMITTED, *CASE_STATES)
FINAL = frozenset({"executed", "partly_executed", "refused", "withdrawn"})
OPEN = tuple(s for s in STATES if s not in FINAL)
#: Moves that belong to the requesting desk; every other move is the executing desk's.
REQUESTER_MOVES = frozenset({"resubmitted", "withdrawn"})

_FROM_WAITING = frozenset({"received", "returned_incomplete", "in_progress", "refused"})
MOVES: dict[str, frozenset[str]] = {
    SUBMITTED: _FROM_WAITING | {"withdrawn"},
    "resubmitted": _FROM_WAITING | {"withdrawn"},
    "received": frozenset({"returned_incomplete", "in_progress", "executed",
                           "partly_executed", "refused", "withdrawn"}),
    "returned_incomplete": frozenset({"resubmitted", "withdrawn"}),
    "in_progress": frozenset({"executed", "partly_executed", "refused", "withdrawn"}),
    **{final: frozenset() for final in FINAL},
}

DAY_MS = 86_400_000


class MoveRefused(ValueError):
    """A move the lifecycle does not allow; ``code`` says which rule."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def check_move(current: str, new: str, mover: str, requester: str, executor: str) -> None:
    """Refuse moving a case from ``current`` to ``new`` by desk ``mover`` unless allowed."""
    if new not in CASE_STATES:
        raise MoveRefused(f"{new!r} is not a state a status may move to", "bad_state")
    if new not in MOVES.get(current, frozenset()):
        allowed = ", ".join(sorted(MOVES.get(current, ()))) or "none: the request is closed"
        raise MoveRefused(f"a request that is {current} cannot become {new} (allowed: "
                          f"{allowed})", "invalid_move")
    owner = requester if new in REQUESTER_MOVES else executor
    if mover != owner:
        side = "requesting" if new in REQUESTER_MOVES else "executing"
        raise MoveRefused(f"only the {side} desk {owner} may move the request to {new}",
                          "not_your_move")


class Request(Protocol):
    """Where a request stands, as a gateway records it (gateway.store.CaseRow)."""

    @property
    def state(self) -> str: ...

    @property
    def requester(self) -> str: ...

    @property
    def executor(self) -> str: ...


def check_status(header: EnvelopeHeader, case: Request | None) -> None:
    """Refuse (MoveRefused) a ``status`` whose ``state`` does not move ``case`` (None: its
    thread is no request known here): a move the lifecycle does not allow from where the
    request stands, by the desk it belongs to, addressed to the request's other desk."""
    assert header.state is not None
    if case is None:
        raise MoveRefused(f"thread {header.thread} is not a request (a case message) "
                          "known here", "not_a_case")
    check_move(case.state, header.state, header.sender, case.requester, case.executor)
    if header.recipient not in (case.requester, case.executor) \
            or header.recipient == header.sender:
        raise MoveRefused("a status goes to the other desk of its request", "not_your_move")


def due_ms(day: str) -> int:
    """The first instant a request due on ``day`` (YYYY-MM-DD) is overdue: the start of
    the next day, UTC, in Unix milliseconds."""
    start = datetime.datetime.combine(datetime.date.fromisoformat(day), datetime.time(),
                                      tzinfo=datetime.UTC)
    return int(start.timestamp() * 1000) + DAY_MS


def days_left(day: str, now_ms: int) -> int:
    """Days from today (UTC) to the due ``day``: 0 when it is due today, -1 the day after
    (overdue by one day)."""
    today = datetime.datetime.fromtimestamp(now_ms / 1000, datetime.UTC).date()
    return (datetime.date.fromisoformat(day) - today).days

"""What officers see of requests: the ones their desks made or must execute, where each
stands, and how many days are left to its due day. Only what the signed headers gave the
gateway: ids, desks, partner, state, due day and times; the request's type, reference
and text stay sealed (the client shows them by opening the case message)."""

from __future__ import annotations

from typing import Any

from gateway.clock import Clock
from gateway.errors import ClientError, NotFoundError
from gateway.officers.directory import Officer
from gateway.protocol.cases import FINAL, STATES, days_left
from gateway.protocol.names import is_name
from gateway.store import CaseRow, CaseStore

MAX_LISTED = 500


class Cases:
    def __init__(self, store: CaseStore, clock: Clock, gateway: str) -> None:
        self.store = store
        self.clock = clock
        self.gateway = gateway

    async def list(self, officer: Officer, *, state: str | None = None,
                   partner: str | None = None, overdue: bool = False,
                   include_closed: bool = False, limit: int = MAX_LISTED) -> list[dict[str, Any]]:
        if state is not None and state not in STATES:
            raise ClientError(f"state must be one of {', '.join(STATES)}", code="bad_parameter")
        if partner is not None and not is_name(partner):
            raise ClientError("partner must be a gateway id", code="bad_parameter")
        now = self.clock.now_ms()
        rows = await self.store.cases_of(
            sorted(officer.desks), open_only=not include_closed and state not in FINAL,
            limit=min(limit, MAX_LISTED), state=state,
            partner=partner, overdue_at=now if overdue else None)
        return [self.to_json(row, officer.desks, now) for row in rows]

    async def one(self, officer: Officer, thread: str) -> dict[str, Any]:
        """One request of the officer's desks; 404 for any other (or none)."""
        row = await self.store.case(thread)
        if row is None or not ({row.requester, row.executor} & officer.desks):
            raise NotFoundError(f"no request {thread} for your desks", code="unknown_case")
        return self.to_json(row, officer.desks, self.clock.now_ms())

    def to_json(self, row: CaseRow, desks: frozenset[str] | set[str],
                now: int) -> dict[str, Any]:
        return {
            "id": row.thread, "requester": row.requester, "executor": row.executor,
            "role": "requester" if row.requester in desks else "executor",
            "partner": row.partner, "opened": row.opened_ms, "state": row.state,
            "state_at": row.state_ms, "last_move": row.last_move, "due": row.due,
            "days_left": days_left(row.due, now) if row.due is not None else None,
            "overdue": (row.due_ms is not None and row.state not in FINAL
                        and now >= row.due_ms),
            "reminded": row.reminded_ms, "escalated": row.escalated_ms,
            "ignored_moves": row.ignored_moves,
        }

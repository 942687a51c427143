"""The requests report: how many requests each gateway pair has exchanged, in which
state, how many are overdue. Both gateways of a pair count the same requests from the
same signed headers, so Viet Nam's figures for Viet Nam to Laos equal Laos's, and a
restart changes none of them (they are read from the database)."""

from __future__ import annotations

from typing import Any

from gateway.protocol.cases import FINAL
from gateway.store import CaseStore


async def requests_report(store: CaseStore, gateway: str, now_ms: int) -> dict[str, Any]:
    pairs: dict[tuple[str, str], dict[str, Any]] = {}
    for requester, executor, state, n, overdue in await store.case_pairs(now_ms):
        pair = pairs.setdefault((requester, executor), {
            "from": requester, "to": executor, "requests": 0, "open": 0, "overdue": 0,
            "states": {}})
        pair["requests"] += n
        pair["open"] += 0 if state in FINAL else n
        pair["overdue"] += overdue
        pair["states"][state] = n
    return {"gateway": gateway, "now": now_ms, "pairs": list(pairs.values())}

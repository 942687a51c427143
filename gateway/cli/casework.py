"""Operators' commands about case work: ``gateway report`` (requests by gateway pair and
state) and ``gateway reconcile PARTNER`` (what this gateway and a partner exchanged,
compared), both asked of the running gateway over its admin socket."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from gateway.cli.admin import admin_request, admin_socket
from gateway.config import Config

DAY_MS = 86_400_000


def report_command(config: Config, as_json: bool) -> str:
    report = asyncio.run(admin_request(admin_socket(config), "GET", "/report"))
    return json.dumps(report, indent=2) if as_json else format_report(report)


def format_report(report: dict[str, Any]) -> str:
    if not report["pairs"]:
        return f"{report['gateway']}: (no requests)"
    lines = [f"{report['gateway']}: requests by requesting -> executing gateway"]
    for pair in report["pairs"]:
        states = ", ".join(f"{state} {n}" for state, n in sorted(pair["states"].items()))
        lines.append(f"  {pair['from']} -> {pair['to']}: {pair['requests']} request(s), "
                     f"{pair['open']} open, {pair['overdue']} overdue ({states})")
    return "\n".join(lines)


def reconcile_command(config: Config, partner: str, days: int, as_json: bool) -> str:
    async def ask() -> dict[str, Any]:
        socket_path = admin_socket(config)
        status = await admin_request(socket_path, "GET", "/status")
        until = status["now"] - 600_000
        since = max(0, until - days * DAY_MS)
        answer: dict[str, Any] = await admin_request(
            socket_path, "GET", f"/reconcile/{partner}?since={since}&until={until}")
        return answer

    report = asyncio.run(ask())
    return json.dumps(report, indent=2) if as_json else format_reconcile(report)


_WORDS = {
    "unsent_here": "accepted here for the partner; left the queue with no receipt and no "
                   "non-delivery notice (withheld or deleted here)",
    "unsent_there": "the partner accepted it for a desk here and shows it unsent",
    "lost_there": "the partner signed a receipt for it but does not list it",
    "lost_here": "this gateway signed a receipt for it but does not have it",
    "digest_mismatch": "both list it, with different envelopes",
}


def format_reconcile(report: dict[str, Any]) -> str:
    c = report["counts"]
    lines = [f"reconciled with {report['partner']}: sent {c['sent']}, received "
             f"{c['received']}, matched {c['matched']}, queued here {c['queued_here']}, "
             f"queued there {c['queued_there']}, returned {c['returned']}"]
    if report["truncated"]:
        lines.append("  (the window held more messages than one answer lists: "
                     "give fewer --days)")
    if not report["flags"]:
        lines.append("  no discrepancy")
    for f in report["flags"]:
        lines.append(f"  {f['flag'].upper()}  {f['id']}: {_WORDS.get(f['flag'], '')}")
    return "\n".join(lines)

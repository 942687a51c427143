"""``gateway queue list|show|return``: the messages waiting for partners, through the
running gateway's admin socket (gateway.channels.admin, gateway.federation.queue).

Metadata only: the gateway holds no plaintext, and these commands print no ciphertext.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import quote

from gateway.cli.admin import admin_request, admin_socket, age
from gateway.config import Config


def _size(n: int) -> str:
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _stamp(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))


def format_queue(report: dict[str, Any]) -> str:
    now = report["now"]
    header = ("ID", "PARTNER", "DESK", "KIND", "PRIORITY", "SIZE", "AGE", "ATTEMPTS",
              "LAST ERROR")
    rows = [header]
    for m in report["messages"]:
        rows.append((m["id"], m["partner"], m["sender"], m["kind"], m["priority"],
                     _size(m["size"]), age(now, m["queued"]).removesuffix(" ago"),
                     str(m["attempts"]), m["last_error"] or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    if len(rows) == 1:
        lines.append("(queue empty)")
    if report.get("truncated"):
        lines.append(f"(the first {len(rows) - 1} shown; more are queued)")
    return "\n".join(lines)


def format_message(report: dict[str, Any]) -> str:
    now, m = report["now"], report["message"]
    return "\n".join([
        f"message:     {m['id']}",
        f"partner:     {m['partner']}" + ("  (being relayed now)" if m["in_flight"] else ""),
        f"from:        {m['sender']}",
        f"to:          {m['recipient']}",
        f"kind:        {m['kind']}",
        f"priority:    {m['priority']}",
        f"size:        {_size(m['size'])} ({m['size']} bytes of ciphertext, not shown)",
        f"digest:      {m['digest']}",
        f"accepted:    {_stamp(m['accepted'])}",
        f"queued:      {_stamp(m['queued'])} ({age(now, m['queued'])})",
        f"expires:     {_stamp(m['expires'])}",
        f"attempts:    {m['attempts']}",
        f"last error:  {m['last_error'] or '-'}",
    ])


def queue_command(config: Config, command: str, *, partner: str | None = None,
                  message_id: str | None = None, reason: str | None = None,
                  as_json: bool = False) -> str:
    socket_path = admin_socket(config)
    if command == "list":
        path = "/queue" + (f"?partner={quote(partner, safe='')}" if partner else "")
        report = asyncio.run(admin_request(socket_path, "GET", path))
        if as_json:
            return json.dumps(report, indent=2)
        title = f"{config.gateway.id} queue" + (f" for {partner}" if partner else "")
        return f"{title} at {_stamp(report['now'])}\n" + format_queue(report)
    assert message_id is not None
    where = "/queue/" + quote(message_id, safe="")
    if command == "show":
        report = asyncio.run(admin_request(socket_path, "GET", where))
        return json.dumps(report, indent=2) if as_json else format_message(report)
    answer = asyncio.run(admin_request(socket_path, "POST", where + "/return",
                                       {"reason": reason}))
    if as_json:
        return json.dumps(answer, indent=2)
    return (f"{answer['id']}: returned; it will not go to {answer['partner']}. "
            f"{answer['sender']} gets a signed non-delivery notice with your reason.")

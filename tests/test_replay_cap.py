"""A stream opened with ``since`` replays at most MAX_REPLAY stored notices: the newest,
after a ``truncated`` event naming the cursors the client pages through with
``GET /v1/desks/{desk}/notices``.

One in-process gateway on 127.0.0.1; the many stored notices are breach rows written into
its real SQLite file, then published as the gateway publishes any stored notice.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp

from gateway.appkeys import NOTICES
from gateway.client.api import GatewayClient
from gateway.client.cli import event_line
from gateway.officers.notices import MAX_REPLAY
from tests.helpers import make, started, stop_all

EXTRA = 7  # notices beyond the cap


async def replayed(client: GatewayClient, n: int, since: int) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    async for kind, data in client.stream(since=since):
        events.append((kind, data))
        if len(events) == n:
            break
    return events


async def test_a_replay_is_capped_to_the_newest_notices_after_a_truncated_event(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    vn = make(tmp_path, "vn-mps")
    await started(vn)
    try:
        assert vn.app is not None
        officer = await vn.officer(http, "border-liaison")
        detail = json.dumps({"id": "a" * 32, "kind": "hotline", "priority": "flash",
                             "stage": "read", "due": 1})
        (before,), = vn.rows("SELECT coalesce(max(seq), 0) FROM desk_notices")
        with contextlib.closing(sqlite3.connect(vn.database)) as db, db:
            db.executemany(
                "INSERT INTO desk_notices (desk, kind, at_ms, message_id, detail)"
                " VALUES ('border-liaison', 'breach', ?, ?, ?)",
                [(i, "a" * 32, detail) for i in range(MAX_REPLAY + EXTRA)])
        await vn.app[NOTICES].catch_up()
        (last,), = vn.rows("SELECT max(seq) FROM desk_notices")
        own = [r[0] for r in vn.rows("SELECT seq FROM desk_notices WHERE desk ="
                                     " 'border-liaison' AND seq <= ?", before)]

        events = await replayed(officer, MAX_REPLAY + 1, since=0)
        kind, marker = events[0]
        first = last - MAX_REPLAY + 1
        assert kind == "truncated"
        assert marker == {"desk": "", "since": 0, "first": first, "limit": MAX_REPLAY}
        cursors = [data["cursor"] for _, data in events[1:]]
        assert cursors == list(range(first, last + 1))  # the newest, oldest first
        assert {k for k, _ in events[1:]} == {"breach"}
        line = event_line(kind, marker)
        assert "were not replayed" in line and "gateway-client notices DESK --after 0" in line
        # The ones left out are there to page through.
        listed = await officer.notices("border-liaison", after=0, limit=100)
        assert [n["cursor"] for n in listed["notices"]][:len(own) + EXTRA] == \
            own + list(range(before + 1, before + 1 + EXTRA))

        # Within the cap: no marker.
        events = await replayed(officer, 3, since=last - 3)
        assert [(k, d["cursor"]) for k, d in events] == [
            ("breach", last - 2), ("breach", last - 1), ("breach", last)]
    finally:
        await stop_all(vn)

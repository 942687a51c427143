"""A partner that answers again is found within ``health_seconds``; ``partners retry``
wakes a down partner's sender at once.

Both tests give the sender a backoff far longer than the test waits (``retry_first`` 20 s,
so the first wait is 10 to 20 s) and the refresh loop a ``refresh_seconds`` of a minute:
a drain within a couple of seconds can only come from the probe that ``health_seconds``
promises, or from the operator's retry.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp

from gateway.appkeys import PARTNERS
from gateway.channels import admin
from gateway.cli.admin import admin_request
from tests.helpers import Gw, make, officers, pin, started, stop_all, until

SLOW_BACKOFF = {"retry_first_seconds": 20.0, "retry_max_seconds": 60.0,
                "refresh_seconds": 60.0, "directory_max_age_seconds": 60.0,
                "witness_seconds": 60.0, "request_timeout_seconds": 2.0}


async def _kh_down_with_one_queued(vn: Gw, kh: Gw, http: aiohttp.ClientSession,
                                   settle: float = 0.0) -> float:
    """KH stopped after VN knows it (and, ``settle`` seconds later, VN's refresh loop
    has found it up and sleeps ``refresh_seconds``), one message queued and its first
    attempt failed: the sender backs off. How many seconds it means to wait."""
    assert vn.app is not None
    a, _ = await officers(vn, kh, http)
    await asyncio.sleep(settle)
    await kh.stop()
    answer = await a.send("hotline", "anti-trafficking@kh-cnp",
                          {"type": "hotline", "text": "vehicle crossing tonight"},
                          priority="flash")
    assert answer["status"] == "accepted"
    await until(lambda: vn.rows("SELECT failures FROM partner_state") == [(1,)],
                "the first attempt to fail")
    assert vn.app[PARTNERS].by_id["kh-cnp"].up is False
    (next_attempt,), = vn.rows("SELECT next_attempt_ms FROM partner_state")
    return (next_attempt - time.time() * 1000) / 1000


async def test_a_returning_partner_drains_within_health_seconds(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    health = 0.5
    vn, kh = make(tmp_path, "vn-mps"), make(tmp_path, "kh-cnp")
    vn.federation.update(SLOW_BACKOFF, health_seconds=health)
    pin(vn, kh)
    await started(vn, kh)
    try:
        # VN's refresh loop started before KH listened: it probes every health_seconds
        # until its first answer, then sleeps refresh_seconds. Only the sender sees KH go.
        backoff = await _kh_down_with_one_queued(vn, kh, http, settle=3 * health)
        assert backoff > 5  # the sender alone would wait that long
        await kh.start()
        back = time.monotonic()
        await until(lambda: vn.rows("SELECT COUNT(*) FROM outbox") == [(0,)],
                    "the drain", seconds=health + 3)
        # health_seconds until the probe finds it, then one batch.
        assert time.monotonic() - back < health + 2.5
        assert kh.rows("SELECT COUNT(*) FROM messages") == [(1,)]
    finally:
        await stop_all(vn, kh)


async def test_partners_retry_wakes_the_sender_at_once(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    vn, kh = make(tmp_path, "vn-mps"), make(tmp_path, "kh-cnp")
    # Probes as rare as the backoff: only the operator's retry can be quick.
    vn.federation.update(SLOW_BACKOFF, health_seconds=30.0)
    pin(vn, kh)
    await started(vn, kh)
    path = tmp_path / "admin.sock"
    try:
        backoff = await _kh_down_with_one_queued(vn, kh, http)
        assert backoff > 5
        await kh.start()
        assert vn.app is not None
        async with admin.serving(vn.app, path):
            asked = time.monotonic()
            answer = await admin_request(path, "POST", "/partners/kh-cnp/retry")
            assert answer == {"partner": "kh-cnp", "woken": True}
            await until(lambda: vn.rows("SELECT COUNT(*) FROM outbox") == [(0,)],
                        "the drain after the retry", seconds=4)
            assert time.monotonic() - asked < 3
        assert vn.app[PARTNERS].by_id["kh-cnp"].up is True
        assert kh.rows("SELECT COUNT(*) FROM messages") == [(1,)]
    finally:
        await stop_all(vn, kh)

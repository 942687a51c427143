"""Found by the crash suite (FAILS today, marked xfail strict): a gateway restarted while a
partner is down refuses its officers' messages for that partner.

Messages for a partner that is down are queued in its outbox (README, demo step c), but
only while the gateway still holds the partner's signed desk directory in memory: the
directory is not stored, so after a restart ``POST /v1/messages`` to any desk of that
partner answers ``503 partner_directory_unknown`` until the partner answers again.
Nothing acknowledged is lost (the crash suite shows it); the alert just cannot be
handed over. Proposed fix: keep each partner's last verified directory note in the
database and load it at start (it is signed: verify it again with the partner's trusted
key chain), refreshed as today.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import aiohttp
import pytest

from tests.chaos.cluster import kill_all
from tests.chaos.driver import Driver, Message, Officer, Settings


def to_partner(driver: Driver, officer: Officer, rng: random.Random) -> Message:
    for _ in range(1000):
        message = driver.compose(officer, rng)
        if not message.recipient.endswith(f"@{officer.node.id}"):
            return message
    raise AssertionError("no message for the partner composed")


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="BUG (availability): a restarted gateway cannot queue "
                   "for a partner that is down: 503 partner_directory_unknown")
async def test_a_gateway_restarted_during_a_partner_outage_still_queues_for_it(
        tmp_path: Path) -> None:
    driver = Driver(Settings(gateways=("vn-mps", "kh-cnp")), tmp_path)
    rng = random.Random(7)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            await driver.setup(http)
            vn, kh = driver.nodes
            officer = next(o for o in driver.officers if o.node is vn)
            await kh.stop()
            assert await driver.post(officer, to_partner(driver, officer, rng)), \
                "queued for kh-cnp while it is down"
            assert await vn.stop() == 0
            await vn.start()
            message = to_partner(driver, officer, rng)
            for _ in range(20):  # two seconds
                if await driver.post(officer, message):
                    break
                await asyncio.sleep(0.1)
            assert message.outcome == "accepted", dict(driver.failures)
    finally:
        await kill_all(driver.nodes)

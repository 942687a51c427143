"""Found by the crash suite, fixed: a gateway restarted while a partner is down still
queues its officers' messages for that partner.

Messages for a partner that is down are queued in its outbox (README, demo step c). The
partner's signed desk directory used to be held in memory only, so after a restart
``POST /v1/messages`` to any desk of that partner answered ``503
partner_directory_unknown`` until the partner answered again. The last verified
directory is now stored with the key that signed it (schema 8) and verified again at
start with a key trusted for the partner (gateway.federation.partners.load_directories).
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import aiohttp

from tests.chaos.cluster import kill_all
from tests.chaos.driver import Driver, Message, Officer, Settings


def to_partner(driver: Driver, officer: Officer, rng: random.Random) -> Message:
    for _ in range(1000):
        message = driver.compose(officer, rng)
        if not message.recipient.endswith(f"@{officer.node.id}"):
            return message
    raise AssertionError("no message for the partner composed")


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

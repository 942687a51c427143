"""Officers run by one process admitting each other: the demo, benchmarks and tests.

In service each officer runs its own client: the newcomer reads out the safety code its
screen shows and a member types it into ``gateway-client admit``. Where one process plays
several officers, :class:`Roster` does both halves: it takes the code from the
newcomer's own keys and has an earlier member of the desk admit it. The first officer of
a desk needs no one: the operator admitted it at enrollment.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from gateway.client.api import ApiError, Credentials, GatewayClient
from gateway.clock import Clock


class Roster:
    """The officers enrolled on one gateway, by desk."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.by_desk: dict[str, list[Credentials]] = {}
        self.clock = clock  # the admissions' time (a test's manual clock)

    async def join(self, http: aiohttp.ClientSession, creds: Credentials,
                   answer: dict[str, Any]) -> None:
        """After enrollment (``answer`` is the gateway's): get the officer admitted to
        each desk it waits to join."""
        for desk in answer["desks"]:
            if desk in answer.get("pending", ()):
                await self.admit(http, creds, desk)
            self.by_desk.setdefault(desk, []).append(creds)

    async def admit(self, http: aiohttp.ClientSession, creds: Credentials, desk: str) -> None:
        code = GatewayClient(http, creds).my_safety_code(desk)
        for member in reversed(self.by_desk.get(desk, [])):
            try:
                await GatewayClient(http, member, self.clock).admit(desk, creds.officer_id,
                                                                    code)
                return
            except ApiError as exc:  # revoked since: another member admits
                if exc.code != "revoked":
                    raise
        raise ApiError(409, "no_member", f"no member of {desk} is left to admit "
                                         f"{creds.officer_id}")

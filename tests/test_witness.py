"""Witnessing: VN keeps KH's newest consistent ledger checkpoint and refuses, with an
alarm, any checkpoint that shows KH's log shrank or forked (real gateways on 127.0.0.1)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from gateway.appkeys import LEDGER, METRICS, PARTNERS, WITNESS
from gateway.crypto.keys import GatewaySigningKey
from gateway.crypto.note import NoteSigner, sign_note
from gateway.federation.witness import EXTENDED, SAME, WitnessAlarm
from gateway.protocol.checkpoint import Checkpoint
from tests.helpers import Gw, officers, until


async def relay_some(vn: Gw, a: Any, n: int) -> None:
    for i in range(n):
        await a.send("hotline", "anti-trafficking@kh-cnp", {"type": "hotline", "text": f"{i}"})
    await until(lambda: vn.rows("SELECT COUNT(*) FROM outbox")[0][0] == 0, "the relay")


def kept(vn: Gw) -> list[Any]:
    return vn.rows("SELECT size, root, note FROM partner_checkpoints WHERE partner = 'kh-cnp'")


async def test_checkpoints_are_witnessed_and_forks_refused_with_an_alarm(vn_kh, http) -> None:
    vn, kh = vn_kh
    assert vn.app is not None and kh.app is not None
    a, _ = await officers(vn, kh, http)
    await relay_some(vn, a, 2)
    first = await kh.app[LEDGER].make_checkpoint()
    # VN's witness task fetches it by itself.
    await until(lambda: [r[0] for r in kept(vn)] == [first.size], "VN to witness KH")
    await relay_some(vn, a, 2)
    second = await kh.app[LEDGER].make_checkpoint()
    assert second.size > first.size
    await until(lambda: [r[0] for r in kept(vn)] == [second.size], "VN to follow KH's growth")
    witness, partner = vn.app[WITNESS], vn.app[PARTNERS].get("kh-cnp")
    assert partner is not None and partner.descriptor is not None
    assert await witness.observe(partner, second.note) == SAME

    await relay_some(vn, a, 3)  # KH's real tree is now larger than the forged sizes below
    origin = partner.descriptor.ledger_origin

    def signed(size: int, root: bytes, key: GatewaySigningKey = kh.key) -> bytes:
        return sign_note(Checkpoint(origin, size, root).text(), [NoteSigner(origin, key)])

    reference = kept(vn)
    forged = [
        (signed(second.size + 2, os.urandom(32)), "forked"),  # does not extend the old tree
        (signed(second.size, os.urandom(32)), "forked"),  # another root, same size
        (signed(first.size, first.root), "shrank"),  # genuine, but older than one seen
        (signed(second.size + 2, os.urandom(32), GatewaySigningKey.generate()),
         "bad_signature"),
    ]
    metrics = vn.app[METRICS]
    for note, reason in forged:
        before = metrics.value("fpg_witness_alarms_total", partner="kh-cnp", reason=reason)
        with pytest.raises(WitnessAlarm):
            await witness.observe(partner, note)
        assert witness.alarms["kh-cnp"].reason == reason
        assert metrics.value("fpg_witness_alarms_total", partner="kh-cnp",
                             reason=reason) == before + 1
        assert kept(vn) == reference  # refused: the reference is unchanged
    # KH's genuine next checkpoint is still accepted after the alarms.
    third = await kh.app[LEDGER].make_checkpoint()
    assert await witness.observe(partner, third.note) == EXTENDED
    assert [r[0] for r in kept(vn)] == [third.size]

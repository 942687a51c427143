"""A supervisor desk's officers see the status of the messages of the desks it supervises
(their service levels are its concern), not their envelopes; other officers see neither.

One in-process gateway on 127.0.0.1 with real officers' clients.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from gateway.appkeys import CLOCK, DIRECTORY, STORE
from gateway.client.api import ApiError
from tests.helpers import make, started, stop_all


async def test_a_supervisor_sees_the_status_of_its_desks_messages_and_others_do_not(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    vn = make(tmp_path, "vn-mps")
    await started(vn)
    try:
        assert vn.app is not None
        store, now = vn.app[STORE], vn.app[CLOCK].now_ms()
        await store.add_desk("supervisors", None, now)
        await store.add_desk("liaison-north", "supervisors", now)
        await store.add_desk("victim-support", None, now)
        await vn.app[DIRECTORY].reload()
        sender = await vn.officer(http, "liaison-north")
        reader = await vn.officer(http, "trafficking")
        boss = await vn.officer(http, "supervisors")
        outsider = await vn.officer(http, "victim-support")
        sent = await sender.send("hotline", "trafficking@vn-mps",
                                 {"type": "hotline", "text": "Victim located"},
                                 priority="flash")
        # Sent by a desk it supervises: the supervisor sees its status.
        status = await boss.status(sent["id"])
        assert (status["id"], status["from"], status["to"]) == (
            sent["id"], "liaison-north@vn-mps", "trafficking@vn-mps")
        assert [e["type"] for e in status["events"]][:1] == ["accepted"]
        assert (await reader.status(sent["id"]))["id"] == sent["id"]
        # Not its envelope: that stays with the desks that sent and received it.
        with pytest.raises(ApiError) as fetched:
            await boss.get_json(f"/v1/messages/{sent['id']}")
        assert (fetched.value.status, fetched.value.code) == (404, "unknown_message")
        # An officer of neither desk nor of a supervisor desk: the same refusal as for
        # a message that does not exist.
        for who, message_id in ((outsider, sent["id"]), (boss, "0" * 32)):
            with pytest.raises(ApiError) as refused:
                await who.status(message_id)
            assert (refused.value.status, refused.value.code) == (404, "unknown_message")
        # The other way round: a message to the supervised desk.
        back = await reader.send("hotline", "liaison-north@vn-mps",
                                 {"type": "hotline", "text": "Understood"}, priority="flash")
        assert (await boss.status(back["id"]))["to"] == "liaison-north@vn-mps"
    finally:
        await stop_all(vn)

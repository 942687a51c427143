"""Forwarding that keeps the original signature, through two real gateways on 127.0.0.1.

A prosecutor's desk in Viet Nam sends an H2 request to Viet Nam's central authority,
which passes it to Laos's central authority, which passes it to the Lao desk that
executes it. That desk's client verifies the prosecutor's own signature and reads the
request as it was signed. Each H2 hop needs the permit of whoever sent it; without it
the forwarder's gateway refuses and stores nothing. Each forward is a ``forwarded``
ledger event on the gateways it passes.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.client.api import ApiError, GatewayClient
from gateway.crypto.envelope import content_key_of
from gateway.errors import CryptoError
from tests.helpers import (
    Gw,
    desk_known,
    has_message,
    make,
    pin,
    started,
    stop_all,
    until,
)

REQUEST = {"type": "case", "case_ref": "VN-PROS-7", "legal_basis": "treaty",
           "offence": "trafficking in children", "requested_actions": ["hear the victim"],
           "deadline": "2099-06-30", "text": "Original text, signed by the prosecutor.",
           "request_type": "collect_evidence"}


def forwarded_events(gw: Gw) -> list[tuple[str, str]]:
    """(forward id, the id it forwards) of every ``forwarded`` ledger entry."""
    found = []
    for (entry,) in gw.rows("SELECT entry FROM ledger ORDER BY seq"):
        doc = json.loads(entry)
        if doc["type"] == "forwarded":
            found.append((doc["msg"], doc["ref"]))
    return found


async def test_a_request_keeps_the_prosecutors_signature_through_two_forwards(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    vn, la = make(tmp_path, "vn-mps"), make(tmp_path, "la-mps")
    pin(vn, la)
    await started(vn, la)
    try:
        await vn.add_desk("prosecutor")
        await vn.add_desk("central-authority")
        await la.add_desk("central-authority")
        await la.add_desk("investigation")
        prosecutor = await vn.officer(http, "prosecutor")
        vn_ca = await vn.officer(http, "central-authority")
        la_ca = await la.officer(http, "central-authority")
        la_exec = await la.officer(http, "investigation")
        await desk_known(vn_ca, "central-authority@la-mps")
        await desk_known(la_ca, "central-authority@vn-mps")

        sent = await prosecutor.send("case", "central-authority@vn-mps", REQUEST,
                                     priority="priority", handling="H2")
        p = sent["id"]

        # Without the prosecutor's permit the first gateway refuses, and stores nothing.
        before = vn.rows("SELECT count(*) FROM messages")
        with pytest.raises(ApiError) as refused:
            await vn_ca.forward(p, "central-authority@la-mps", "for execution")
        assert (refused.value.status, refused.value.code) == (403, "handling_forbids_onward")
        wrong = await prosecutor.permit(p, "investigation@la-mps")  # for another desk
        with pytest.raises(ApiError) as refused:
            await vn_ca.forward(p, "central-authority@la-mps", permit=wrong)
        assert refused.value.code == "handling_forbids_onward"
        assert vn.rows("SELECT count(*) FROM messages") == before
        with pytest.raises(ApiError) as refused:  # the handling code travels with it
            await vn_ca.send("forward", "central-authority@la-mps",
                             await _forward_doc(vn_ca, p), forwards=p, handling="H0",
                             permit=await prosecutor.permit(p, "central-authority@la-mps"))
        assert refused.value.code == "handling_changed"
        with pytest.raises(ApiError) as refused:
            await vn_ca.send("forward", "central-authority@la-mps",
                             await _forward_doc(vn_ca, p), forwards=os.urandom(16).hex())
        assert refused.value.code == "bad_forward"

        permit = await prosecutor.permit(p, "central-authority@la-mps")
        f1 = (await vn_ca.forward(p, "central-authority@la-mps", "for execution",
                                  permit=permit))["id"]
        await until(lambda: has_message(la_ca, f1), "the forward at la-mps")
        opened = await la_ca.open(f1)
        (link,) = opened.forwarded
        assert (link.header.id, link.sender_officer, link.permit) == (
            p, prosecutor.creds.officer_id, True)
        assert link.payload == REQUEST and opened.header.handling == "H2"

        # What a dishonest forwarder with a gateway that let it through would show, the
        # recipient's client catches: another message than the header names, a handling
        # code dropped, a permit that does not verify.
        for change, code in (({"forwards": os.urandom(16).hex()}, "bad_forward"),
                             ({"handling": "H0"}, "handling_changed")):
            with pytest.raises(CryptoError) as caught:
                await la_ca._unwrap_forward(
                    dataclasses.replace(opened.header, **change), opened.payload, 1)
            assert caught.value.code == code
        forged = base64.b64encode(os.urandom(64)).decode()
        (link,) = await la_ca._unwrap_forward(
            dataclasses.replace(opened.header, permit=forged), opened.payload, 1)
        assert link.permit is False

        # Laos's central authority passes it on, with the permit of who sent it to it.
        permit2 = await vn_ca.permit(f1, "investigation@la-mps")
        f2 = (await la_ca.forward(f1, "investigation@la-mps", permit=permit2))["id"]
        final = await la_exec.open(f2)
        assert [(x.header.id, x.sender_officer) for x in final.forwarded] == [
            (f1, vn_ca.creds.officer_id), (p, prosecutor.creds.officer_id)]
        assert final.forwarded[-1].payload == REQUEST  # as the prosecutor signed it
        assert final.forwarded[-1].header.sender == "prosecutor@vn-mps"

        # Ledger events on both sides: vn-mps for f1, la-mps for f1 and f2.
        await until(lambda: len(forwarded_events(la)) == 2, "la-mps's forwarded events")
        assert forwarded_events(vn) == [(f1, p)]
        assert forwarded_events(la) == [(f1, p), (f2, f1)]

        # A forward whose embedded content key was altered does not open.
        doc = await _forward_doc(vn_ca, p)
        doc["content_key"] = base64.b64encode(os.urandom(32)).decode()
        bad = (await vn_ca.send("forward", "central-authority@la-mps", doc, forwards=p,
                                handling="H2", permit=permit))["id"]
        await until(lambda: has_message(la_ca, bad), "the altered forward at la-mps")
        with pytest.raises(CryptoError):
            await la_ca.open(bad)
    finally:
        await stop_all(vn, la)


async def _forward_doc(client: GatewayClient, mid: str) -> dict[str, Any]:
    """A forward's payload for ``mid``, built as the client builds it."""
    opened = await client.open(mid)
    key = content_key_of(opened.envelope, client.creds.encryption)
    return {"type": "forward", "original": base64.b64encode(opened.envelope.raw).decode(),
            "content_key": base64.b64encode(key).decode()}

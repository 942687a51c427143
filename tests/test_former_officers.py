"""A message stays verifiable after its sender's binding ends (issue 20, item 5).

The directory lists former officers (revoked or expired) with their keys, desks and when
the binding ended; a client verifies a message from one of them only if it was made while
the binding held, and says the binding has ended since. Real gateways on 127.0.0.1: one
process for the home case, two in-process gateways with real HTTP for a partner's sender.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.appkeys import CLOCK, STORE
from gateway.client.api import GatewayClient
from gateway.client.cli import signer_ended
from gateway.client.roster import Roster
from gateway.crypto.keys import (
    GatewaySigningKey,
    OfficerEncryptionKey,
    OfficerSigningKey,
)
from gateway.errors import CryptoError, MalformedError
from gateway.officers.admission import operator_admission
from gateway.officers.directory import build_directory
from gateway.protocol.officers import (
    DIRECTORY,
    Binding,
    check_signed_while_bound,
    open_directory,
    open_directory_history,
)
from gateway.store import DeskRow, OfficerRow
from tests.helpers import (
    Running,
    enroll_invited,
    gateway,
    make,
    pin,
    running_gateway,
    started,
    stop_all,
    until,
)

T0 = 1_767_225_600_000
DAY = 86_400_000
GW = GatewaySigningKey(b"\x21" * 32)

MEMBERS = Roster()  # the module's gateway: who admits whom


def row(officer: str, desks: tuple[str, ...], revoked: int | None, not_after: int = T0 + DAY
        ) -> tuple[OfficerRow, OfficerSigningKey]:
    sign, enc = OfficerSigningKey.generate(), OfficerEncryptionKey.generate()
    binding = Binding("vn-mps", officer, tuple(f"{d}@vn-mps" for d in desks), sign.public,
                      enc.public, T0, not_after).sign(GW)
    bare = OfficerRow(officer, sign.public.raw, sign.public.key_id, enc.public.raw,
                      enc.public.key_id, binding, T0, not_after, revoked, desks)
    admitted = tuple(operator_admission(GW, "vn-mps", bare, d, T0) for d in desks)
    return dataclasses.replace(bare, admissions=admitted), sign


def directory_note(rows: list[OfficerRow], now: int) -> bytes:
    desks = [DeskRow("trafficking", None, T0), DeskRow("border-liaison", None, T0)]
    return build_directory("vn-mps", desks, rows, now).signed(GW)


def test_the_directory_lists_former_officers_with_when_their_binding_ended() -> None:
    current, _ = row("off-current", ("trafficking",), None)
    revoked, r_key = row("off-revoked", ("trafficking", "border-liaison"), T0 + 1000)
    expired, e_key = row("off-expired", ("border-liaison",), None, not_after=T0 + 5000)
    note = directory_note([current, revoked, expired], T0 + 10_000)
    verified = open_directory_history(note, "vn-mps", GW.public)
    assert [m["officer"] for m in verified.desks["trafficking@vn-mps"].members] == [
        "off-current"]
    assert verified.desks["border-liaison@vn-mps"].members == ()
    assert set(verified.former) == {r_key.public.key_id, e_key.public.key_id}
    r = verified.former[r_key.public.key_id]
    assert (r.officer, r.revoked, r.ended(), r.not_before) == ("off-revoked", T0 + 1000,
                                                             T0 + 1000, T0)
    assert r.desks == {"trafficking@vn-mps", "border-liaison@vn-mps"}
    e = verified.former[e_key.public.key_id]
    assert (e.revoked, e.ended()) == (None, T0 + 5000)
    signer = verified.signer(r_key.public.key_id)
    assert signer is not None and signer.former == r and signer.key == r_key.public


def test_a_directory_without_former_officers_is_as_before() -> None:
    current, _ = row("off-current", ("trafficking",), None)
    _, doc = DIRECTORY.open(directory_note([current], T0), "vn-mps", [GW.public])
    assert "former" not in doc  # the bytes of a directory with none are unchanged
    assert open_directory_history(directory_note([current], T0), "vn-mps",
                                  GW.public).former == {}


def test_a_former_officer_verifies_only_for_what_was_made_while_bound() -> None:
    revoked, key = row("off-revoked", ("trafficking",), T0 + 1000)
    verified = open_directory_history(directory_note([revoked], T0 + 2000), "vn-mps",
                                      GW.public)
    signer = verified.signer(key.public.key_id)
    assert signer is not None
    check_signed_while_bound(signer, "trafficking@vn-mps", T0)
    check_signed_while_bound(signer, "trafficking@vn-mps", T0 + 999)
    for created, desk in ((T0 + 1000, "trafficking@vn-mps"),  # at the revocation
                          (T0 + 50_000, "trafficking@vn-mps"),  # after it
                          (T0 - 1, "trafficking@vn-mps"),  # before the binding
                          (T0 + 10, "border-liaison@vn-mps")):  # not its desk
        with pytest.raises(CryptoError) as refused:
            check_signed_while_bound(signer, desk, created)
        assert refused.value.code == "unknown_sender"


def test_a_former_entry_whose_key_id_is_not_its_keys_is_refused() -> None:
    revoked, _ = row("off-revoked", ("trafficking",), T0 + 1000)
    _, doc = DIRECTORY.open(directory_note([revoked], T0 + 2000), "vn-mps", [GW.public])
    doc["former"][0]["sign_key_id"] = "0" * len(doc["former"][0]["sign_key_id"])
    note = DIRECTORY.sign(DIRECTORY.text(doc), "vn-mps", GW)
    with pytest.raises(MalformedError):
        open_directory_history(note, "vn-mps", GW.public)
    with pytest.raises(MalformedError):  # the desks alone are not read past it either
        open_directory(note, "vn-mps", GW.public)


# --- a real gateway process ----------------------------------------------------------------


@pytest.fixture(scope="module")
def running(tmp_path_factory) -> Iterator[Running]:
    directory = tmp_path_factory.mktemp("former") / "gw"
    with running_gateway(directory, ("trafficking", "border-liaison")) as gw:
        yield gw


async def officer(http: aiohttp.ClientSession, running: Running, desk: str) -> GatewayClient:
    creds, answer = await enroll_invited(http, running, desk)
    await MEMBERS.join(http, creds, answer)
    return GatewayClient(http, creds)


def test_a_revoked_senders_earlier_message_still_opens(running) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as http:
            a = await officer(http, running, "trafficking")
            b = await officer(http, running, "border-liaison")
            mid = (await a.send("hotline", "border-liaison",
                                {"type": "hotline", "text": "evidence"}))["id"]
            assert (await b.read(mid)).former is None
            result = gateway("officers", "revoke", a.creds.officer_id, "--config",
                             str(running[1]))
            assert result.returncode == 0, result.stderr

            async def revoked_listed() -> bool:
                verified = await b.verified_directory(refresh=True)
                return any(f.officer == a.creds.officer_id for f in verified.former.values())
            await until(revoked_listed, "the revoked officer among the former ones")
            fresh = GatewayClient(http, b.creds)  # nothing cached from before
            opened = await fresh.open(mid)
            assert opened.payload["text"] == "evidence"
            assert opened.sender_officer == a.creds.officer_id
            assert opened.former is not None and opened.former.revoked is not None
            assert opened.header.created < opened.former.revoked
            assert signer_ended(opened) == {"how": "revoked", "at": opened.former.revoked}
    asyncio.run(scenario())


# --- a partner's sender --------------------------------------------------------------------


async def test_a_revoked_partner_officers_message_still_opens(tmp_path: Path) -> None:
    vn, kh = make(tmp_path, "vn-mps"), make(tmp_path, "kh-cnp")
    pin(vn, kh)
    await started(vn, kh)
    try:
        async with aiohttp.ClientSession() as http:
            a = await vn.officer(http, "border-liaison")
            k = await kh.officer(http, "anti-trafficking")

            refusals: list[str] = []  # until VN knows KH's officer; shown if it never does

            async def sent() -> str | None:
                try:
                    return str((await a.send("hotline", "anti-trafficking@kh-cnp",
                                             {"type": "hotline", "text": "cross-border"}))["id"])
                except Exception as exc:
                    refusals.append(repr(exc))
                    return None
            mid: str | None = None

            async def sending() -> bool:
                nonlocal mid
                mid = await sent()
                return mid is not None
            try:
                await until(sending, "a message accepted for the partner's desk")
            except AssertionError:
                raise AssertionError(f"never accepted; the last refusals: {refusals[-3:]}") \
                    from None
            assert mid is not None

            async def arrived() -> bool:
                inbox = await k.inbox("anti-trafficking")
                return any(m["id"] == mid for m in inbox["messages"])
            await until(arrived, "the message in the partner's inbox")
            assert (await k.read(mid)).former is None

            assert vn.app is not None
            assert await vn.app[STORE].revoke_officer(a.creds.officer_id,
                                                      vn.app[CLOCK].now_ms())
            async def opens_as_former() -> bool:  # a fresh client: nothing cached
                return (await GatewayClient(http, k.creds).open(mid)).former is not None
            await until(opens_as_former, "the partner's directory listing the former officer")
            fresh = GatewayClient(http, k.creds)
            opened = await fresh.open(mid)
            assert opened.payload["text"] == "cross-border"
            assert opened.former is not None and opened.former.revoked is not None
    finally:
        await stop_all(vn, kh)

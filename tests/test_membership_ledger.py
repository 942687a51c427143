"""Membership that cannot be shown differently to different officers (issue 20, item 2),
with real gateways on 127.0.0.1: a reader the gateway lists without logging it, a ledger
replaced behind the officers' backs, and a partner's directory altered by the home
gateway are each caught by the sender's client, which seals nothing."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import aiohttp
import pytest

from gateway.appkeys import DIRECTORY, PARTNERS
from gateway.cli.process import ServerProcess
from gateway.client.api import GatewayClient
from gateway.client.roster import Roster
from gateway.client.trust import TrustMemory
from gateway.crypto.keys import GatewaySigningKey
from gateway.crypto.note import NoteSigner, cosign_note
from gateway.errors import ClientError
from gateway.federation.partners import Partner
from gateway.protocol.admission import OPERATOR, admission_text
from gateway.protocol.membership import LogState
from gateway.protocol.officers import DIRECTORY as DIRECTORY_NOTE
from tests.helpers import (
    Running,
    enroll_invited,
    gateway,
    gateway_key,
    officers,
    running_gateway,
    tamper,
    until,
)

ROSTER = Roster()


async def member(http: aiohttp.ClientSession, running: Running, desk: str,
                 trust: TrustMemory | None = None) -> GatewayClient:
    creds, answer = await enroll_invited(http, running, desk)
    await ROSTER.join(http, creds, answer)
    return GatewayClient(http, creds, trust=trust)


def test_a_reader_listed_without_a_ledger_entry_is_refused(tmp_path: Path) -> None:
    """The operator revokes a desk's only member and admits keys of its own "as the
    operator", writing the admission straight into the database: the admission chain
    holds (the desk had no member left), but nothing is in the ledger for other officers
    and auditors to see, and the sender's client refuses to seal."""
    with running_gateway(tmp_path / "gw", ("trafficking", "victim-support")) as running:
        async def scenario() -> None:
            async with aiohttp.ClientSession() as http:
                sender = await member(http, running, "trafficking")
                only = await member(http, running, "victim-support")
                assert (await sender.send("hotline", "victim-support", {
                    "type": "hotline", "text": "proven"}))["status"] == "accepted"
                creds, _ = await enroll_invited(http, running, "victim-support")  # waits
                assert gateway("officers", "revoke", only.creds.officer_id, "--config",
                               str(running.cfg)).returncode == 0
                await asyncio.sleep(0.01)
                at = sender.clock.now_ms()
                text = admission_text("victim-support@vn-mps", creds.officer_id,
                                      creds.signing.public.b64(),
                                      creds.encryption.public.b64(), OPERATOR, at)
                tamper(running.cfg, "INSERT INTO admissions VALUES (?,?,?,?,?)",
                       creds.officer_id, "victim-support", OPERATOR, at,
                       gateway_key(running.cfg).sign(text))
                for _ in range(100):
                    desks = await sender.directory(refresh=True)
                    if [m["officer"] for m in desks["victim-support@vn-mps"].members] == [
                            creds.officer_id]:
                        break
                    await asyncio.sleep(0.05)
                else:
                    pytest.fail("the tampered admission never reached the directory")
                with pytest.raises(ClientError) as refused:
                    await sender.send("hotline", "victim-support",
                                      {"type": "hotline", "text": "secret"})
                assert refused.value.code == "unproven_member"
                assert creds.officer_id in refused.value.message
                assert "no ledger entry" in refused.value.message
        asyncio.run(scenario())


def test_a_ledger_replaced_behind_the_officers_backs_is_a_fork(tmp_path: Path) -> None:
    """The gateway restarts on another database (a restored backup, or a second tree for
    some officers): a client that saw the first ledger refuses to seal."""
    trust = TrustMemory(tmp_path / "trust.json")
    directory = tmp_path / "gw"
    with running_gateway(directory, ("trafficking",)) as running:
        async def first() -> LogState | None:
            async with aiohttp.ClientSession() as http:
                a = await member(http, running, "trafficking", trust)
                await member(http, running, "trafficking")  # admitted by a
                await a.send("hotline", "trafficking", {"type": "hotline", "text": "one"})
                return TrustMemory(trust.path).log("vn-mps")  # as saved on disk
        seen = asyncio.run(first())
        assert seen is not None and seen.size >= 2
    shutil.move(directory / "data", tmp_path / "data.before")
    assert gateway("desks", "add", "trafficking", "--config", str(running.cfg)).returncode == 0
    with ServerProcess.gateway(running.cfg) as server:
        again = running._replace(url=server.url)

        async def second() -> None:
            async with aiohttp.ClientSession() as http:
                b = await member(http, again, "trafficking", TrustMemory(trust.path))
                with pytest.raises(ClientError) as listing:  # `gateway-client desks`
                    await b.directory()
                assert listing.value.code == "ledger_fork"
                with pytest.raises(ClientError) as refused:
                    await b.send("hotline", "trafficking", {"type": "hotline", "text": "two"})
                assert refused.value.code == "ledger_fork"
        asyncio.run(second())


async def test_a_partner_directory_altered_by_the_home_gateway_is_caught(vn_kh, http) -> None:
    vn, kh = vn_kh
    a, _ = await officers(vn, kh, http)
    assert (await a.send("hotline", "anti-trafficking@kh-cnp",
                         {"type": "hotline", "text": "proven"}))["status"] == "accepted"
    # VN swaps KH's officer's encryption key for one of its own and signs the result.
    doc = (await kh.app[DIRECTORY].get()).to_json()
    rogue = GatewayClient(http, (await vn.officer(http, "trafficking")).creds)
    for desk in doc["desks"]:
        for officer in desk["officers"]:
            officer["enc_key"] = rogue.creds.encryption.public.b64()
    forged = cosign_note(DIRECTORY_NOTE.sign(DIRECTORY_NOTE.text(doc), "kh-cnp", vn.key),
                         NoteSigner("vn-mps", vn.key))

    async def altered(partner: Partner) -> bytes:  # what VN serves for KH's directory
        return forged
    vn.app[PARTNERS].directory_for_clients = altered  # type: ignore[method-assign]
    fresh = GatewayClient(http, a.creds)
    with pytest.raises(ClientError) as refused:
        await fresh.send("hotline", "anti-trafficking@kh-cnp",
                         {"type": "hotline", "text": "secret"})
    assert refused.value.code == "partner_signature"


async def test_a_partners_key_is_pinned_at_first_contact_and_held_to(vn_kh, http,
                                                                     tmp_path) -> None:
    vn, kh = vn_kh
    a, _ = await officers(vn, kh, http)
    trust = TrustMemory(tmp_path / "trust.json")
    first = GatewayClient(http, a.creds, trust=trust)
    await first.send("hotline", "anti-trafficking@kh-cnp", {"type": "hotline", "text": "1"})
    on_disk = TrustMemory(trust.path)
    assert on_disk.fingerprint("kh-cnp") == kh.key.public.fingerprint
    seen = on_disk.log("kh-cnp")
    assert seen is not None and seen.origin == "fpg/kh-cnp"
    # A client that pinned another key for KH (its gateway showed it a false one before,
    # or KH's key changed without a signed rotation) refuses to seal for KH.
    trust.pin("kh-cnp", GatewaySigningKey.generate().public.fingerprint)
    with pytest.raises(ClientError) as refused:
        await GatewayClient(http, a.creds, trust=TrustMemory(trust.path)).send(
            "hotline", "anti-trafficking@kh-cnp", {"type": "hotline", "text": "2"})
    assert refused.value.code == "partner_key"


async def test_a_partners_growing_ledger_is_followed_by_consistency_proofs(vn_kh, http,
                                                                           tmp_path) -> None:
    vn, kh = vn_kh
    a, _ = await officers(vn, kh, http)
    trust = TrustMemory(tmp_path / "trust.json")
    await GatewayClient(http, a.creds, trust=trust).send(
        "hotline", "anti-trafficking@kh-cnp", {"type": "hotline", "text": "1"})
    before = trust.log("kh-cnp")
    assert before is not None
    await kh.officer(http, "anti-trafficking")  # a second member: KH's ledger grows

    async def two_members() -> bool:
        desks = await a.directory(refresh=True, gateway="kh-cnp")
        return len(desks["anti-trafficking@kh-cnp"].members) == 2
    await until(two_members, "KH's second member in VN's copy of its directory")
    # A client that saw another tree of KH's of that size (KH, or a gateway passing on
    # its answers, showed it a fork) refuses.
    forked = TrustMemory(tmp_path / "forked.json")
    forked.pin("kh-cnp", kh.key.public.fingerprint)
    forked.remember_log("kh-cnp", LogState(before.origin, before.size, b"\x07" * 32))
    with pytest.raises(ClientError) as refused:
        await GatewayClient(http, a.creds, trust=forked).send(
            "hotline", "anti-trafficking@kh-cnp", {"type": "hotline", "text": "forked"})
    assert refused.value.code == "ledger_fork"
    await GatewayClient(http, a.creds, trust=trust).send(
        "hotline", "anti-trafficking@kh-cnp", {"type": "hotline", "text": "2"})
    after = TrustMemory(trust.path).log("kh-cnp")
    assert after is not None and after.size > before.size


async def test_officers_seal_for_a_partner_that_is_down_after_their_gateway_restarted(
        vn_kh, http, tmp_path) -> None:
    """VN keeps KH's descriptor and membership proofs: after VN restarts while KH is
    down, a fresh client still verifies KH's keys, members and checkpoint, and the
    message waits in VN's queue."""
    vn, kh = vn_kh
    a, _ = await officers(vn, kh, http)
    trust = TrustMemory(tmp_path / "trust.json")
    await GatewayClient(http, a.creds, trust=trust).send(
        "hotline", "anti-trafficking@kh-cnp", {"type": "hotline", "text": "before"})
    await until(lambda: vn.rows("SELECT count(*) FROM outbox") == [(0,)], "VN's relay")
    await kh.stop()
    await vn.stop()
    await vn.start()
    fresh = GatewayClient(http, a.creds, trust=TrustMemory(trust.path))
    sent = await fresh.send("hotline", "anti-trafficking@kh-cnp",
                            {"type": "hotline", "text": "while KH is down"})
    assert sent["status"] == "accepted"
    assert vn.rows("SELECT count(*) FROM outbox") == [(1,)]


async def test_every_directory_fetch_follows_the_home_ledger(vn_kh, http, tmp_path) -> None:
    """`gateway-client desks` and reading check the ledger too, not only sending."""
    vn, _ = vn_kh
    a = await vn.officer(http, "border-liaison")
    await vn.officer(http, "trafficking")  # two admissions: a checkpoint of size 2
    trust = TrustMemory(tmp_path / "trust.json")
    await GatewayClient(http, a.creds, trust=trust).directory()
    seen = trust.log("vn-mps")
    assert seen is not None and seen.size == 2
    forked = TrustMemory(tmp_path / "forked.json")  # saw another first entry
    forked.remember_log("vn-mps", LogState(seen.origin, 1, b"\x07" * 32))
    with pytest.raises(ClientError) as refused:
        await GatewayClient(http, a.creds, trust=forked).directory()
    assert refused.value.code == "ledger_fork"

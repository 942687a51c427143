"""Requests tracked to a result, through two real gateways on 127.0.0.1 (vn-mps and
la-mps, the central authorities of Viet Nam and Laos).

Viet Nam sends three requests: one is returned incomplete, resubmitted and executed, one
executed, one left open past its due day. Each move is a signed status message; both
gateways record the same states, refuse moves the lifecycle does not allow (nothing
stored), and tell the overdue one once on each side, to the desk and its supervisor,
also after both restarted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import generate_latest
from structlog.testing import capture_logs

from gateway.appkeys import CLOCK, DIRECTORY, METRICS, PARTNERS, STORE
from gateway.cases.report import requests_report
from gateway.client.api import ApiError, GatewayClient
from gateway.crypto.envelope import OPTIONAL_FIELDS
from gateway.errors import ClientError
from gateway.federation.reconcile import reconcile
from tests.helpers import (
    FaultGw,
    desk_known,
    fault_gw,
    free_socket_on,
    make,
    officers,
    pin,
    started,
    stop_all,
    until,
)

CA = "central-authority"


class CasesGw(FaultGw):
    def config_doc(self) -> dict[str, Any]:
        doc = super().config_doc()
        doc["cases"] = {"remind_days": 7, "check_seconds": 0.1}
        return doc


def cases_gw(tmp_path: Path, name: str) -> CasesGw:
    base = fault_gw(tmp_path, name, directory_max_age_seconds=0.2)
    return CasesGw(base.id, base.key, base.directory, base.sock, federation=base.federation)


def restarted(gw: CasesGw) -> CasesGw:
    """The same gateway (key, database, port, partners) as a new process would be."""
    return CasesGw(gw.id, gw.key, gw.directory, free_socket_on(gw.port_was),
                   partners=dict(gw.partners), federation=gw.federation)


def day(offset: int) -> str:
    today = datetime.datetime.now(datetime.UTC).date()
    return (today + datetime.timedelta(days=offset)).isoformat()


CANARY = "canary 9Z"


def request(ref: str, due: str) -> dict[str, Any]:
    return {"type": "case", "case_ref": f"{ref} ({CANARY})", "legal_basis": "treaty",
            "offence": f"Trafficking in persons ({CANARY})",
            "requested_actions": [f"Hear a witness ({CANARY})"], "deadline": due,
            "text": f"Request text ({CANARY})", "request_type": "summon_witness",
            "requesting_authority": f"Procuracy ({CANARY})", "languages": ["vi", "lo"]}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def setup_desks(gw: CasesGw) -> None:
    assert gw.app is not None
    store = gw.app[STORE]
    await store.add_desk("supervisors", None, 0)
    await store.add_desk(CA, "supervisors", 0)
    await gw.app[DIRECTORY].reload()


async def arrived(client: GatewayClient, case_id: str, state: str) -> None:
    async def there() -> bool:
        try:
            return (await client.case(case_id))["state"] == state
        except ApiError:
            return False
    await until(there, f"request {case_id} {state} at {client.creds.gateway_id}")


async def _report(gw: CasesGw) -> list[dict[str, Any]]:
    assert gw.app is not None
    report = await requests_report(gw.app[STORE], gw.id, gw.app[CLOCK].now_ms())
    return list(report["pairs"])


def overdue_notices(gw: CasesGw, case_id: str) -> list[tuple[str, str]]:
    return sorted(gw.rows("SELECT desk, kind FROM desk_notices WHERE message_id = ?"
                          " AND kind = 'case_overdue'", case_id))


async def test_three_requests_move_to_their_results_on_both_sides(tmp_path: Path,
                                                                  http) -> None:
    vn, la = cases_gw(tmp_path, "vn-mps"), cases_gw(tmp_path, "la-mps")
    pin(vn, la)
    gws = [vn, la]
    logs = capture_logs()
    captured = logs.__enter__()
    try:
        for gw in gws:
            await gw.start()
            await setup_desks(gw)
        vn_ca = await vn.officer(http, CA)
        la_ca = await la.officer(http, CA)
        await desk_known(vn_ca, f"{CA}@la-mps")
        await desk_known(la_ca, f"{CA}@vn-mps")

        sent = {}
        for name, due in (("returned", day(30)), ("executed", day(30)), ("open", day(-2))):
            result = await vn_ca.send("case", f"{CA}@la-mps", request(f"VN-{name}", due),
                                      priority="priority", handling="H2")
            sent[name] = result["id"]
        for case_id in sent.values():
            await arrived(la_ca, case_id, "submitted")

        # One returned incomplete, resubmitted with a new due day, then executed.
        a = sent["returned"]
        await la_ca.move(a, "received", {})
        await la_ca.move(a, "returned_incomplete",
                         {"missing": ["certified translation"], "text": f"({CANARY})"})
        await arrived(vn_ca, a, "returned_incomplete")
        await vn_ca.move(a, "resubmitted", {"text": "translation attached"}, due=day(45))
        await arrived(la_ca, a, "resubmitted")
        for state in ("received", "in_progress", "executed"):
            await la_ca.move(a, state, {})
        b = sent["executed"]
        await la_ca.move(b, "received", {})
        await la_ca.move(b, "executed", {"text": f"witness heard ({CANARY})"})
        await arrived(vn_ca, a, "executed")
        await arrived(vn_ca, b, "executed")
        resubmitted = await vn_ca.case(a)
        assert resubmitted["due"] == day(45)
        assert (await la_ca.case(a))["due"] == day(45)

        # Moves the lifecycle refuses: by the client before sealing, and by the gateway
        # when a client skips that check; nothing is stored either way.
        with pytest.raises(ClientError) as early:
            await vn_ca.move(b, "withdrawn", {})
        assert early.value.code == "invalid_move"
        c = sent["open"]
        with pytest.raises(ClientError) as early:
            await vn_ca.move(c, "received", {})
        assert early.value.code == "not_your_move"
        before = vn.rows("SELECT count(*) FROM messages")
        with pytest.raises(ApiError) as late:
            await vn_ca.send("status", f"{CA}@la-mps", {"type": "status",
                                                         "state": "received"},
                             in_reply_to=c, thread=c)
        assert (late.value.status, late.value.code) == (403, "not_your_move")
        with pytest.raises(ApiError) as late:
            await vn_ca.send("status", f"{CA}@la-mps", {"type": "status",
                                                         "state": "withdrawn"},
                             in_reply_to=b, thread=b)
        assert (late.value.status, late.value.code) == (409, "invalid_move")
        assert vn.rows("SELECT count(*) FROM messages") == before

        # The opened status shows the state and what was missing, as signed.
        returned = await vn_ca.open(next(m["id"] for m in (await vn_ca.inbox(CA))["messages"]
                                         if m["state"] == "returned_incomplete"))
        assert returned.header.state == "returned_incomplete"
        assert returned.header.handling == "H2"  # a move keeps the request's code
        assert returned.payload["missing"] == ["certified translation"]

        # The third is overdue: told once on each side, to the desk and its supervisor.
        for gw in gws:
            await until(lambda gw=gw: len(overdue_notices(gw, c)) == 2,
                        f"the escalation at {gw.id}")
            assert overdue_notices(gw, c) == [(CA, "case_overdue"),
                                              ("supervisors", "case_overdue")]
        for client in (vn_ca, la_ca):
            overdue = await client.cases(overdue=True)
            assert [x["id"] for x in overdue] == [c]
            assert overdue[0]["days_left"] == -2
        # Both sides count the same outcomes.
        for client in (vn_ca, la_ca):
            closed = {x["id"]: x["state"] for x in await client.cases(closed=True)}
            assert closed == {a: "executed", b: "executed", c: "submitted"}

        # The requests report: the same figures on both sides.
        reports = [await _report(gw) for gw in gws]
        assert reports[0] == reports[1] == [{
            "from": "vn-mps", "to": "la-mps", "requests": 3, "open": 1, "overdue": 1,
            "states": {"executed": 2, "submitted": 1}}]

        # Viet Nam's operator withholds a message: queued while Laos is down, then taken
        # out of the queue by hand. Reconciliation flags it, on both sides.
        await la.stop()
        withheld = (await vn_ca.send("hotline", f"{CA}@la-mps",
                                     {"type": "hotline", "text": "never to arrive"}))["id"]
        with sqlite3.connect(vn.database) as db:
            db.execute("DELETE FROM outbox WHERE message_id = ?", (withheld,))

        # After both restart, the overdue request is still the only one, told no more.
        for gw in gws:
            if gw.runner is not None:
                await gw.stop()
        gws = [restarted(vn), restarted(la)]
        vn, la = gws
        for gw in gws:
            await gw.start()
        await vn_ca.sign_in()  # sessions live in the gateway's memory: sign in again
        assert [x["id"] for x in await vn_ca.cases(overdue=True)] == [c]
        await until(lambda: "case_deadlines" in _tasks(vn) and "case_deadlines" in _tasks(la),
                    "the deadline tasks")
        await asyncio.sleep(0.5)  # several passes of check_seconds = 0.1
        for gw in gws:
            assert overdue_notices(gw, c) == [(CA, "case_overdue"),
                                              ("supervisors", "case_overdue")]
        assert [await _report(gw) for gw in gws] == reports  # as before the restart

        for gw, other, flag in ((vn, "la-mps", "unsent_here"), (la, "vn-mps", "unsent_there")):
            assert gw.app is not None
            await until(lambda gw=gw, other=other: gw.app[PARTNERS].get(other).up,
                        f"{other} up for {gw.id}")
            found = await reconcile(gw.app[STORE], gw.app[PARTNERS], other, 0,
                                    gw.app[CLOCK].now_ms() + 1)
            assert [(f["flag"], f["id"]) for f in found["flags"]] == [(flag, withheld)]
            counts = found["counts"]
            assert counts["matched"] > 0 and counts["queued_here"] == counts["queued_there"] == 0
        # No case field but the documented header fields reached either database, the
        # logs, the metrics, the report or the reconciliation (the canary test).
        seen = [repr(captured), repr(reports)]
        for gw in gws:
            assert gw.app is not None
            seen.append(" ".join(str(v) for row in gw.rows(
                "SELECT * FROM messages m LEFT JOIN cases c ON c.thread = m.thread")
                for v in row if not isinstance(v, bytes)))
            seen.append(" ".join(str(v) for row in gw.rows("SELECT * FROM desk_notices")
                                 for v in row if not isinstance(v, bytes)))
            seen.append(generate_latest(gw.app[METRICS].registry).decode())
        assert len(captured) > 50  # (the logs were captured)
        for text in seen:
            for secret in (CANARY, "VN-open", "summon_witness", "Procuracy",
                           "certified translation"):
                assert secret not in text, secret
    finally:
        logs.__exit__(None, None, None)
        for gw in gws:
            if gw.runner is not None:
                await gw.stop()


def _tasks(gw: CasesGw) -> set[str]:
    return {t.get_name() for t in asyncio.all_tasks()}


async def test_optional_header_fields_go_only_to_partners_that_list_them(
        tmp_path: Path, http) -> None:
    """A partner lists the optional header fields it understands in its descriptor;
    an older one lists none and would refuse them, so its home gateway refuses at send
    (``partner_lacks_feature``, nothing stored) and plain messages still go."""
    vn, kh = make(tmp_path, "vn-mps"), make(tmp_path, "kh-cnp")
    pin(vn, kh)
    await started(vn, kh)
    try:
        assert vn.app is not None
        a, _ = await officers(vn, kh, http)
        partner = vn.app[PARTNERS].by_id["kh-cnp"]
        assert partner.descriptor is not None
        assert partner.descriptor.header_fields == set(OPTIONAL_FIELDS)
        partner.descriptor = dataclasses.replace(partner.descriptor,
                                                 header_fields=frozenset({"due"}))
        with pytest.raises(ApiError) as refused:
            await a.send("hotline", "anti-trafficking@kh-cnp",
                         {"type": "hotline", "text": "located"}, handling="H1")
        assert (refused.value.status, refused.value.code) == (400, "partner_lacks_feature")
        assert "handling" in refused.value.message
        assert vn.rows("SELECT COUNT(*) FROM messages") == [(0,)]
        sent = await a.send("hotline", "anti-trafficking@kh-cnp",
                            {"type": "hotline", "text": "located"})
        assert sent["status"] == "accepted"
    finally:
        await stop_all(vn, kh)


class TightQuotaGw(CasesGw):
    def config_doc(self) -> dict[str, Any]:
        doc = super().config_doc()
        doc["limits"] = {**doc["limits"], "officer_bytes_per_day": 3000,
                         "desk_bytes_per_day": 3000}
        return doc


async def test_a_refused_move_costs_no_quota(tmp_path: Path, http) -> None:
    """The officer's gateway checks a move before it charges the day's bytes: refused
    moves, however many, leave the quota to the moves that go."""
    base = fault_gw(tmp_path, "vn-mps")
    vn = TightQuotaGw(base.id, base.key, base.directory, base.sock, federation=base.federation)
    await vn.start()
    try:
        assert vn.app is not None
        store = vn.app[STORE]
        for desk in ("prosecutor", CA):
            await store.add_desk(desk, None, 0)
        await vn.app[DIRECTORY].reload()
        requester = await vn.officer(http, "prosecutor")
        executor = await vn.officer(http, CA)
        case = await requester.send("case", f"{CA}@vn-mps", request("VN-local", day(10)))
        for _ in range(10):  # 10 x some 400 bytes sealed: more than the day's 3000
            with pytest.raises(ApiError) as refused:
                await requester.send("status", f"{CA}@vn-mps",
                                     {"type": "status", "state": "received"},
                                     in_reply_to=case["id"], thread=case["id"])
            assert refused.value.code == "not_your_move"
        moved = await requester.move(case["id"], "withdrawn", {})  # its own quota, intact
        assert moved["status"] == "accepted"
        assert (await executor.case(case["id"]))["state"] == "withdrawn"
    finally:
        await vn.stop()

"""`gateway-client` comforts for officers who stay on the command line (issue 23, item 6).

Real client processes against a real gateway process (and, for partner desks, two
in-process gateways that are partners): inbox rows and unique id prefixes taken by
`read`, `reply` and `status`; the only desk used by default and "did you mean" for desk
names; the `sent` view with each message's status; local times with their offset; JSON
errors under `--json`; a partner's desks listed and verified.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.app import CLOCK, STORE
from gateway.client.api import GatewayClient
from gateway.client.cli import fmt_time
from gateway.client.listing import LISTING_FILE, by_prefix, did_you_mean, parse_ref
from gateway.client.profile import load_profile, unlock
from gateway.errors import ClientError
from gateway.officers.enrollment import new_code
from gateway.protocol.officers import code_hash
from tests.helpers import Gw, Running, officers, running_gateway

DESKS = ("trafficking", "border-liaison", "victim-support")
TIMEOUT = 60


def run_client(profile: Path, *args: str, env: dict[str, str] | None = None,
               stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "FPG_CLIENT_PROFILE"}
    result = subprocess.run([sys.executable, "-m", "gateway.client.cli", "--profile",
                             str(profile), *args], capture_output=True, timeout=TIMEOUT,
                            env={**environ, **(env or {})}, input=stdin)
    return subprocess.CompletedProcess(result.args, result.returncode,
                                       result.stdout.decode("utf-8"),
                                       result.stderr.decode("utf-8"))


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def as_json(profile: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return json.loads(ok(run_client(profile, *args, "--json", env=env)))


def error(result: subprocess.CompletedProcess[str], status: int = 1) -> str:
    assert result.returncode == status, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def gateway_cmd(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True,
                            text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    return result.stdout


class Officers:
    def __init__(self, running: Running, base: Path) -> None:
        self.running, self.base = running, base
        self.first: dict[str, Path] = {}  # a member of each desk, who admits the next

    def enroll(self, name: str, *desks: str) -> Path:
        profile = self.base / name
        code = gateway_cmd("officers", "invite", *[a for d in desks for a in ("--desk", d)],
                           "--config", str(self.running.cfg)).strip()
        doc = json.loads(ok(run_client(profile, "enroll", self.running.url,
                                       "--insecure-dev-keys", "--json",
                                       stdin=code.encode() + b"\n")))
        for desk in doc["pending"]:
            safety = as_json(profile, "safety-code", desk)["safety_codes"][desk]
            ok(run_client(self.first[desk], "admit", desk, doc["officer"], "--safety-code",
                          safety, "--no-history"))
        for desk in doc["desks"]:
            self.first.setdefault(desk, profile)
        return profile


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """a: trafficking; b: border-liaison; m: trafficking and victim-support."""
    base = tmp_path_factory.mktemp("comforts")
    with running_gateway(base / "gw", DESKS) as running:
        people = Officers(running, base / "officers")
        yield {"a": people.enroll("a", "trafficking"), "b": people.enroll("b", "border-liaison"),
               "m": people.enroll("m", "victim-support", "trafficking")}


def send(profile: Path, to: str, text: str) -> str:
    return str(as_json(profile, "send", "hotline", to, "--text", text)["id"])


# --- message ids: rows and prefixes ----------------------------------------------------


def test_a_reference_is_an_id_a_row_or_a_prefix_of_six_or_more_digits() -> None:
    full = "0123456789abcdef0123456789abcdef"
    assert parse_ref(full.upper()).id == full
    assert parse_ref("7").row == 7 and parse_ref("12345").row == 12345
    assert parse_ref("123456").prefix == "123456"  # six digits: a prefix, never a row
    assert parse_ref("ABCDEF").prefix == "abcdef"
    for bad in ("0", "abcde", "xyz", "12g456", full + "0", "-1", ""):
        with pytest.raises(ValueError):
            parse_ref(bad)
    ids = ["abcdef" + "0" * 26, "abcdef" + "1" * 26, "abcd00" + "2" * 26]
    assert by_prefix("abcdef1", ids) == ids[1]
    with pytest.raises(ClientError) as info:
        by_prefix("abcdef", ids)
    assert info.value.code == "ambiguous_id"
    assert ids[0] in info.value.message and ids[1] in info.value.message
    assert ids[2] not in info.value.message
    with pytest.raises(ClientError) as info:
        by_prefix("fedcba", ids)
    assert info.value.code == "unknown_message"


def inbox_rows(text: str) -> dict[int, str]:
    return {int(m[1]): m[2] for m in re.finditer(r"^\s*(\d+)  ([0-9a-f]{32})  ", text, re.M)}


def test_read_and_reply_take_inbox_rows_and_unique_prefixes(team: dict[str, Path]) -> None:
    a, b = team["a"], team["b"]
    first, second = send(a, "border-liaison", "một"), send(a, "border-liaison", "hai")
    shown = ok(run_client(b, "inbox"))
    rows = inbox_rows(shown)
    assert "read ROW" in shown
    row = {mid: r for r, mid in rows.items()}
    listing = b / LISTING_FILE
    assert listing.stat().st_mode & 0o077 == 0
    assert json.loads(listing.read_text())["ids"] == [rows[r] for r in sorted(rows)]

    opened = as_json(b, "read", str(row[second]))
    assert (opened["id"], opened["payload"]["text"]) == (second, "hai")
    replied = as_json(b, "reply", str(row[first]), "--text", "đã nhận")
    assert as_json(a, "read", replied["id"][:8])["in_reply_to"] == first
    assert as_json(a, "status", first[:6])["first_reply"] is not None  # the sender's too
    assert as_json(b, "read", second[:7].upper())["id"] == second

    beyond = error(run_client(b, "read", str(len(rows) + 1)))
    assert "unknown_row" in beyond and f"rows 1 to {len(rows)}" in beyond
    everything = set(rows.values()) | {replied["id"]}
    absent = next(p for p in (f"{n:06x}" for n in range(1 << 24))
                  if not any(i.startswith(p) for i in everything))
    assert "unknown_message" in error(run_client(b, "read", absent))
    fresh = team["m"]  # has never listed an inbox
    assert "no_listing" in error(run_client(fresh, "read", "1"))


def test_an_ambiguous_prefix_lists_the_messages_it_could_be(team: dict[str, Path]) -> None:
    a, b = team["a"], team["b"]
    profile = load_profile(a)
    creds = profile.credentials(unlock(profile, lambda: b""))
    ids = ["c0ffee" + os.urandom(13).hex(), "c0ffee" + os.urandom(13).hex()]

    async def two() -> None:
        async with aiohttp.ClientSession() as http:
            client = GatewayClient(http, creds)
            for mid in ids:
                await client.send("hotline", "border-liaison", {"type": "hotline",
                                                                "text": "x"}, message_id=mid)

    asyncio.run(two())
    line = error(run_client(b, "read", "c0ffee"))
    assert "ambiguous_id" in line and ids[0] in line and ids[1] in line
    assert as_json(b, "read", ids[1][:7])["id"] == ids[1]


# --- desks -----------------------------------------------------------------------------


def test_the_only_desk_is_the_default_and_names_get_suggestions(team: dict[str, Path]) -> None:
    a, m = team["a"], team["m"]
    assert as_json(a, "inbox")["desk"] == "trafficking@vn-mps"
    assert as_json(a, "members")["desk"] == "trafficking@vn-mps"
    several = error(run_client(m, "inbox"))
    assert "choose_desk" in several
    assert "trafficking@vn-mps" in several and "victim-support@vn-mps" in several
    assert as_json(m, "inbox", "victim-support")["desk"] == "victim-support@vn-mps"

    typo = error(run_client(a, "send", "hotline", "border-liasion", "--text", "x"))
    assert "unknown_desk" in typo and "did you mean border-liaison@vn-mps?" in typo
    mine = error(run_client(a, "inbox", "traficking"))
    assert "not_a_member" in mine and "did you mean trafficking@vn-mps?" in mine
    far = error(run_client(a, "send", "hotline", "zzzz", "--text", "x"))
    assert "unknown_desk" in far and "did you mean" not in far
    assert did_you_mean("victim-suport", ["victim-support@vn-mps", "intake@vn-mps"]) == \
        " (did you mean victim-support@vn-mps?)"


# --- the sent view ---------------------------------------------------------------------


def statuses(profile: Path) -> dict[str, str]:
    return {m["id"]: m["status"] for m in as_json(profile, "sent")["messages"]}


def test_sent_lists_the_officers_own_messages_with_their_status(team: dict[str, Path]) -> None:
    a, b, m = team["a"], team["b"], team["m"]
    mid = send(a, "border-liaison", "trạng thái")
    assert statuses(a)[mid] == "delivered"
    assert mid not in statuses(m)  # the same desk, another officer: not m's to list
    as_json(b, "read", mid)
    assert statuses(a)[mid] == "read"
    reply = as_json(b, "reply", mid, "--text", "ok")["id"]
    assert statuses(a)[mid] == "replied"
    assert statuses(b)[reply] == "delivered"
    shown = ok(run_client(a, "sent"))
    assert re.search(rf"^{mid}  .* to border-liaison@vn-mps  \[replied\]$", shown, re.M)
    page = as_json(a, "sent", "--limit", "1")
    assert len(page["messages"]) == 1 and page["next"] == page["messages"][0]["cursor"]


# --- times and errors ------------------------------------------------------------------


def test_times_are_local_with_their_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    for zone, shown in (("ICT-7", "1970-01-01T07:00:01+07:00"),
                        ("UTC0", "1970-01-01T00:00:01+00:00"),
                        ("NST+3:30", "1969-12-31T20:30:01-03:30")):
        monkeypatch.setenv("TZ", zone)
        time.tzset()
        assert fmt_time(1000) == shown
    monkeypatch.undo()
    time.tzset()


def test_the_inbox_shows_local_times_and_its_json_is_the_same_in_every_zone(
        team: dict[str, Path]) -> None:
    a, b = team["a"], team["b"]
    send(a, "border-liaison", "giờ địa phương")
    hanoi, utc = {"TZ": "ICT-7"}, {"TZ": "UTC0"}
    assert "+07:00  " in ok(run_client(b, "inbox", env=hanoi))
    assert "+00:00  " in ok(run_client(b, "inbox", env=utc))
    assert "Z  " not in ok(run_client(b, "inbox", env=utc))
    assert as_json(b, "inbox", env=hanoi)["messages"] == as_json(b, "inbox", env=utc)["messages"]


def json_error(result: subprocess.CompletedProcess[str], status: int) -> dict[str, Any]:
    assert result.returncode == status, result.stderr
    assert result.stdout == ""  # standard output stays for data
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    doc = json.loads(lines[0])
    assert set(doc) == {"error", "message"}
    return dict(doc)


def test_errors_under_json_are_one_json_object_with_the_same_exit_status(
        team: dict[str, Path], tmp_path: Path) -> None:
    usage = json_error(run_client(team["b"], "read", "xyz", "--json"), 2)
    assert usage["error"] == "usage" and "message id" in usage["message"]
    several = json_error(run_client(team["m"], "--json", "inbox"), 1)
    assert several["error"] == "choose_desk"
    assert "victim-support@vn-mps" in several["message"]
    none = json_error(run_client(tmp_path / "none", "desks", "--json"), 1)
    assert none["error"] == "profile"
    refused = json_error(run_client(team["a"], "read", "0" * 32, "--json"), 1)
    assert refused["error"] == "unknown_message"
    # The same failures without --json: the one line a person reads.
    assert error(run_client(team["m"], "inbox")).startswith("gateway-client: error: ")
    assert error(run_client(team["b"], "read", "xyz"), 2).startswith("gateway-client")


# --- a partner's desks -----------------------------------------------------------------


async def cli(profile: Path, *args: str, stdin: bytes | None = None) -> Any:
    """The client as its own process, while this event loop keeps serving the gateways."""
    result = await asyncio.to_thread(run_client, profile, *args, "--json", stdin=stdin)
    return json.loads(ok(result))


async def enrolled_cli(gw: Gw, profile: Path, desk: str) -> Path:
    assert gw.app is not None
    code, now = new_code(), gw.app[CLOCK].now_ms()
    await gw.app[STORE].add_enrollment_code(code_hash(code), [desk], now, now + 3_600_000)
    await cli(profile, "enroll", gw.url, "--insecure-dev-keys", stdin=code.encode() + b"\n")
    return profile


async def test_desks_of_a_partner_gateway_are_listed_as_verified(
        vn_kh: tuple[Gw, Gw], http: aiohttp.ClientSession, tmp_path: Path) -> None:
    vn, kh = vn_kh
    _, k = await officers(vn, kh, http)  # vn now knows kh's directory
    officer = await enrolled_cli(vn, tmp_path / "cli", "trafficking")
    listed = await cli(officer, "desks", "--gateway", "kh-cnp")
    assert listed["gateway"] == "kh-cnp"
    desks = {d["desk"]: d for d in listed["desks"]}
    assert [o["officer"] for o in desks["anti-trafficking@kh-cnp"]["officers"]] == \
        [k.creds.officer_id]
    assert not any(d["yours"] for d in listed["desks"])
    shown = ok(await asyncio.to_thread(run_client, officer, "desks", "--gateway", "kh-cnp"))
    assert "desks of kh-cnp" in shown and "signed by kh-cnp" in shown
    typo = await asyncio.to_thread(run_client, officer, "send", "hotline",
                                   "anti-traficking@kh-cnp", "--text", "x")
    assert "did you mean anti-trafficking@kh-cnp" in error(typo)
    unknown = await asyncio.to_thread(run_client, officer, "desks", "--gateway", "th-rtp")
    assert "th-rtp" in error(unknown)
    assert "not a gateway id" in error(
        await asyncio.to_thread(run_client, officer, "desks", "--gateway", "x/../y"), 2)

    # Sent across: pending until kh-cnp's signed receipt comes back, then delivered.
    mid = (await cli(officer, "send", "hotline", "anti-trafficking@kh-cnp", "--text", "x"))["id"]
    for _ in range(100):
        status = {m["id"]: m["status"] for m in (await cli(officer, "sent"))["messages"]}[mid]
        if status != "pending":
            break
        await asyncio.sleep(0.1)
    assert status == "delivered"

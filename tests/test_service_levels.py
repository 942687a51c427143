"""Service levels and response times on one gateway, with an injected clock.

The real application runs (store, ledger, hub, the supervised service-level task) on a
real SQLite file; only time is fake: the test moves a ManualClock past a level's due
time and the task's own sleep wakes up. Nothing here sleeps for a service level.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.app import create_app
from gateway.appkeys import DIRECTORY, HUB, METRICS, SERVICE_LEVELS, STORE
from gateway.clock import ManualClock
from gateway.config import DEFAULT_SERVICE_LEVELS, ServiceLevelSection, parse_config
from gateway.crypto.envelope import EnvelopeHeader, seal_envelope, verify_envelope
from gateway.crypto.keyfile import KeyBundle
from gateway.crypto.keys import ROLE_GATEWAY_SIGNING, GatewaySigningKey
from gateway.errors import BadSignatureError, ConfigError
from gateway.officers.hub import Subscription
from gateway.service_levels.levels import open_breach_notice
from gateway.store import IncomingMessage, ReadAck
from tests.helpers import T0, Officer, make_envelope

KEY = GatewaySigningKey.generate()
LEVELS = [
    {"priority": "flash", "stage": "read", "within_seconds": 900, "escalate": True},
    {"priority": "flash", "stage": "reply", "within_seconds": 7200},
    {"priority": "routine", "stage": "read", "within_seconds": 86_400},
]


def config_doc(tmp_path: Path, levels: Any = LEVELS) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "gateway": {"id": "vn-mps", "public_url": "http://127.0.0.1:1",
                    "data_dir": str(tmp_path / "vn")},
        "keys": {"file": "unused.key"},
        "ledger": {"checkpoint_interval": 3600.0},
        "log": {"level": "warning"},
        "metrics": {"check_seconds": 15},
    }
    if levels is not None:
        doc["service_levels"] = levels
    return doc


class Running:
    def __init__(self, app: web.Application, runner: web.AppRunner) -> None:
        self.app, self.runner = app, runner

    def breaches(self, direction: str, priority: str, stage: str) -> float:
        return self.app[METRICS].value("fpg_service_level_breaches_total",
                                       direction=direction, priority=priority, stage=stage)


async def start(tmp_path: Path, clock: ManualClock) -> Running:
    config = parse_config(config_doc(tmp_path), tmp_path / "gateway.toml")
    app = create_app(config, KeyBundle("vn-mps", {ROLE_GATEWAY_SIGNING: KEY}), clock=clock)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()  # runs the cleanup contexts: store, ledger, background tasks
    return Running(app, runner)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Running, ManualClock]]:
    clock = ManualClock(T0)
    gw = await start(tmp_path, clock)
    store = gw.app[STORE]
    await store.add_desk("supervisors", None, T0)
    await store.add_desk("border-liaison", "supervisors", T0)
    await store.add_desk("trafficking", None, T0)
    await gw.app[DIRECTORY].reload()
    yield gw, clock
    await gw.runner.cleanup()


async def until(check: Any, what: str) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)  # the loop runs the woken task; the clock is not real
    raise AssertionError(f"timed out waiting for {what}")


async def advance(clock: ManualClock, seconds: float) -> None:
    """Move time once the checker sleeps: moved while it works, time would not wake it."""
    await until(lambda: "service_levels" in clock.asleep(), "the checker to sleep")
    clock.advance(seconds)


def drained(sub: Subscription) -> list[tuple[str, dict[str, Any]]]:
    items = []
    while not sub.queue.empty():
        item = sub.queue.get_nowait()
        items.append((item.kind, item.data))
    return items


async def send(gw: Running, clock: ManualClock, priority: str = "flash",
               in_reply_to: str | None = None, to: str = "border-liaison@vn-mps",
               frm: str = "trafficking@vn-mps") -> str:
    envelope = make_envelope(Officer(), [Officer()], priority=priority, to=to, frm=frm,
                             now=clock.now_ms())
    if in_reply_to is not None:  # a reply: same thread, refers to the original
        sender = Officer()
        header = EnvelopeHeader(id=envelope.header.id, kind="reply", priority=priority,
                                sender=frm, recipient=to, created=clock.now_ms(),
                                expires=clock.now_ms() + 86_400_000, thread=in_reply_to,
                                in_reply_to=in_reply_to)
        envelope = verify_envelope(
            seal_envelope(header, b'{"text":"r"}', sender.signing, [Officer().encryption.public]),
            sender.signing.public)
    message = IncomingMessage(envelope, clock.now_ms(), "local", envelope.signer,
                              deliver_to=to)
    outcome = await gw.app[STORE].accept(message)
    assert outcome.status == "accepted"
    return envelope.header.id


async def read(gw: Running, clock: ManualClock, message_id: str) -> None:
    ack = ReadAck(message_id, "off-1@vn-mps", "k" * 16, clock.now_ms(), b"signed ack")
    assert await gw.app[STORE].record_read(ack) == "recorded"


async def test_an_unread_flash_breaches_once_and_escalates_with_a_signed_notice(
        gateway) -> None:
    gw, clock = gateway
    hub = gw.app[HUB]
    desk, boss, sender = (hub.subscribe([d]) for d in (
        "border-liaison@vn-mps", "supervisors@vn-mps", "trafficking@vn-mps"))
    late = await send(gw, clock)
    in_time = await send(gw, clock)
    routine = await send(gw, clock, priority="routine")
    await advance(clock, 60)
    await read(gw, clock, in_time)
    drained(desk), drained(sender)

    await advance(clock, 899)  # 959 s after accept: past the 900 s of flash/read
    await until(lambda: gw.breaches("local", "flash", "read") == 1, "the breach")
    told = drained(desk)
    assert [(k, d["id"], d["stage"]) for k, d in told] == [("breach", late, "read")]
    assert told[0][1]["due"] == T0 + 900_000 and told[0][1]["priority"] == "flash"
    escalated = drained(boss)
    assert [(k, d["id"], d["late_desk"]) for k, d in escalated] == [
        ("escalation", late, "border-liaison@vn-mps")]
    notice = open_breach_notice(base64.b64decode(escalated[0][1]["notice"]), "vn-mps",
                                KEY.public)
    assert (notice.message_id, notice.stage, notice.priority, notice.due_ms) == (
        late, "read", "flash", T0 + 900_000)
    with pytest.raises(BadSignatureError):  # someone else's key does not open it
        open_breach_notice(base64.b64decode(escalated[0][1]["notice"]), "vn-mps",
                           GatewaySigningKey.generate().public)
    assert drained(sender) == []  # the sending desk of a local message is not the one late

    # Another pass finds nothing new: a breach is told once.
    assert await gw.app[SERVICE_LEVELS].check() == []
    assert gw.breaches("local", "flash", "read") == 1
    assert gw.breaches("local", "routine", "read") == 0  # a day allowed; not yet
    await advance(clock, 86_400)
    await until(lambda: gw.breaches("local", "routine", "read") == 1, "the routine breach")
    assert gw.breaches("local", "flash", "reply") == 2  # neither flash was answered
    assert drained(boss) == []  # routine/read and flash/reply do not escalate
    rows = await gw.app[STORE].breach_counts()
    assert rows == {("flash", "read"): 1, ("flash", "reply"): 2, ("routine", "read"): 1}
    assert routine


async def test_a_slow_reply_and_a_slow_read_show_in_the_response_histograms(gateway) -> None:
    gw, clock = gateway
    metrics = gw.app[METRICS]
    original = await send(gw, clock)
    await advance(clock, 1000)
    await read(gw, clock, original)
    await advance(clock, 7000)  # answered 8,000 s after accept; the flash reply level: 7,200 s
    await until(lambda: gw.breaches("local", "flash", "reply") == 1, "the reply breach")
    await send(gw, clock, in_reply_to=original, to="trafficking@vn-mps",
               frm="border-liaison@vn-mps")
    labels = {"direction": "local", "partner": "local", "kind": "hotline", "priority": "flash"}

    def seen(stage: str) -> float:
        return metrics.value("fpg_response_seconds_count", stage=stage, **labels)
    await until(lambda: seen("reply") == 1, "the reply observation")
    assert seen("delivered") == 1 and seen("read") == 1
    assert metrics.value("fpg_response_seconds_sum", stage="read", **labels) == 1000
    assert metrics.value("fpg_response_seconds_sum", stage="reply", **labels) == 8000
    # in the bucket that holds it, not the one below
    assert metrics.value("fpg_response_seconds_bucket", stage="reply", le="7200.0",
                         **labels) == 0
    assert metrics.value("fpg_response_seconds_bucket", stage="reply", le="14400.0",
                         **labels) == 1
    assert metrics.value("fpg_messages_total", outcome="replied", **labels) == 1
    # A second read by another officer is counted but is not a first read.
    ack = ReadAck(original, "off-2@vn-mps", "j" * 16, clock.now_ms(), b"signed ack")
    assert await gw.app[STORE].record_read(ack) == "recorded"
    await until(lambda: metrics.value("fpg_messages_total", outcome="read", **labels) == 2,
                "the second read")
    assert seen("read") == 1


async def test_breaches_survive_a_restart_without_being_told_twice(tmp_path) -> None:
    clock = ManualClock(T0)
    gw = await start(tmp_path, clock)
    await gw.app[STORE].add_desk("border-liaison", None, T0)
    await gw.app[STORE].add_desk("trafficking", None, T0)
    await gw.app[DIRECTORY].reload()
    await send(gw, clock)
    await advance(clock, 901)
    await until(lambda: gw.breaches("local", "flash", "read") == 1, "the breach")
    await gw.runner.cleanup()
    again = await start(tmp_path, clock)
    try:
        assert await again.app[SERVICE_LEVELS].check() == []
        assert again.breaches("local", "flash", "read") == 0  # a new process counts anew
        assert await again.app[STORE].breach_counts() == {("flash", "read"): 1}
    finally:
        await again.runner.cleanup()


def test_service_levels_in_the_configuration(tmp_path) -> None:
    path = tmp_path / "gateway.toml"
    assert parse_config(config_doc(tmp_path, None), path).service_levels == \
        DEFAULT_SERVICE_LEVELS
    assert parse_config(config_doc(tmp_path, []), path).service_levels == ()
    # Each table replaces the level of its priority and stage; the other defaults stay,
    # in the same order (by priority, then stage).
    levels = parse_config(config_doc(tmp_path), path).service_levels
    listed = {(lv["priority"], lv["stage"]) for lv in LEVELS}
    assert [(lv.priority, lv.stage) for lv in levels] == [
        (lv.priority, lv.stage) for lv in DEFAULT_SERVICE_LEVELS]
    assert [lv for lv in levels if (lv.priority, lv.stage) not in listed] == [
        lv for lv in DEFAULT_SERVICE_LEVELS if (lv.priority, lv.stage) not in listed]
    assert [(lv.priority, lv.stage, lv.within_seconds, lv.escalate) for lv in levels
            if (lv.priority, lv.stage) in listed] == [
        ("flash", "read", 900.0, True), ("flash", "reply", 7200.0, False),
        ("routine", "read", 86_400.0, False)]
    # One level that is not a default (no delivered stage for routine by default) is added
    # in its place; a single table changes one level and nothing else.
    one = [{"priority": "routine", "stage": "delivered", "within_seconds": 3600}]
    levels = parse_config(config_doc(tmp_path, one), path).service_levels
    assert len(levels) == len(DEFAULT_SERVICE_LEVELS) + 1
    assert levels[-2:] == (ServiceLevelSection("routine", "delivered", 3600.0, False),
                           DEFAULT_SERVICE_LEVELS[-1])
    one = [{"priority": "immediate", "stage": "read", "within_seconds": 60}]
    levels = parse_config(config_doc(tmp_path, one), path).service_levels
    changed = [i for i, (a, b) in enumerate(zip(levels, DEFAULT_SERVICE_LEVELS, strict=True))
               if a != b]
    assert [levels[i] for i in changed] == [
        ServiceLevelSection("immediate", "read", 60.0, False)]
    bad = [{"priority": "flash", "stage": "answered", "within_seconds": 60}]
    with pytest.raises(ConfigError, match=r"\[\[service_levels\]\] #1 stage: must be one of"):
        parse_config(config_doc(tmp_path, bad), path)
    twice = [LEVELS[0], LEVELS[0]]
    with pytest.raises(ConfigError, match="flash/read is listed twice"):
        parse_config(config_doc(tmp_path, twice), path)


def test_metrics_off_loopback_need_a_token(tmp_path) -> None:
    doc = config_doc(tmp_path)
    doc["metrics"] = {"host": "0.0.0.0"}  # noqa: S104 -- parsed, never bound
    with pytest.raises(ConfigError, match=r"\[metrics\] token_file: required"):
        parse_config(doc, tmp_path / "gateway.toml")

"""Clock skew between gateways, within and beyond ``[federation] hop_window_seconds``.

Time is moved through gateway.clock, never by sleeping: VN (or, once, KH) runs on a
SkewedClock (the real clock plus an offset the test sets) given to ``create_app``; the
other keeps the right time. Every hop request VN signs carries VN's time, which KH
compares with its own.

* Off by less than the window, either way: KH accepts, messages relay as usual.
* Beyond it, either way (or KH's clock ahead instead): KH refuses every hop request with
  ``401 hop_stale`` (counted in its ``fpg_rejected_requests_total``), stores nothing, and
  VN keeps the messages queued, backs off and says why (``partner_state.last_error``).
* Once VN's clock is right again, relaying resumes by VN's own backoff (no probe of the
  partner helps here: ``health_seconds`` is a minute) and every message arrives once.
  A clock set back must not stretch a backoff deadline written with the old time.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from gateway.appkeys import METRICS
from gateway.clock import ManualClock, SystemClock
from gateway.crypto.keys import GatewaySigningKey
from gateway.errors import HopAuthError
from gateway.federation.hop import HopVerifier, sign_hop
from gateway.federation.partners import FEDERATION_MESSAGES_PATH
from tests.helpers import FaultGw, fault_gw, officers, pin, started, stop_all, until

WINDOW = 5.0  # hop_window_seconds of both gateways
FEDERATION = {"hop_window_seconds": WINDOW, "health_seconds": 60.0}


class SkewedClock(SystemClock):
    """The real clock, its wall time off by ``offset_ms`` (0: right)."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def now_ms(self) -> int:
        return super().now_ms() + self.offset_ms


def test_the_hop_window_is_exact_both_ways() -> None:
    clock, key = ManualClock(), GatewaySigningKey.generate()
    verifier = HopVerifier("kh-cnp", clock, int(WINDOW * 1000),
                           lambda caller: frozenset({key.public.fingerprint})
                           if caller == "vn-mps" else None)
    body = b'{"v":1,"messages":[]}'
    window = int(WINDOW * 1000)

    def verify(skew_ms: int) -> str:
        headers = sign_hop(key, "vn-mps", "kh-cnp", "POST", FEDERATION_MESSAGES_PATH, body,
                           clock.now_ms() + skew_ms)
        try:
            caller, _ = verifier.verify("POST", FEDERATION_MESSAGES_PATH, headers, body)
        except HopAuthError as exc:
            return exc.code
        return caller

    for skew in (-window, -window + 1, -1, 0, 1, window - 1, window):
        assert verify(skew) == "vn-mps", skew
    for skew in (-window - 1, window + 1, -100 * window, 100 * window):
        assert verify(skew) == "hop_stale", skew
    # The refusal says what to do; a request within the window is still used only once.
    late = sign_hop(key, "vn-mps", "kh-cnp", "POST", FEDERATION_MESSAGES_PATH, body,
                    clock.now_ms() - window - 1)
    with pytest.raises(HopAuthError, match="outside the allowed window; check the clocks"):
        verifier.verify("POST", FEDERATION_MESSAGES_PATH, late, body)
    early = sign_hop(key, "vn-mps", "kh-cnp", "POST", FEDERATION_MESSAGES_PATH, body,
                     clock.now_ms() + window)
    assert verifier.verify("POST", FEDERATION_MESSAGES_PATH, early, body)[0] == "vn-mps"
    clock.advance(WINDOW * 1.5)  # still remembered while it could be fresh
    with pytest.raises(HopAuthError) as replayed:
        verifier.verify("POST", FEDERATION_MESSAGES_PATH, early, body)
    assert replayed.value.code == "hop_replay"


async def gateways(tmp_path: Path, skewed: str = "vn") -> tuple[FaultGw, FaultGw, SkewedClock]:
    """VN and KH, partners, running; the clock of ``skewed`` (vn or kh) is the one to move."""
    clock = SkewedClock()
    vn = fault_gw(tmp_path, "vn-mps", clock if skewed == "vn" else None, **FEDERATION)
    kh = fault_gw(tmp_path, "kh-cnp", clock if skewed == "kh" else None, **FEDERATION)
    pin(vn, kh)
    await started(vn, kh)
    return vn, kh, clock


def stale(gw: FaultGw) -> float:
    assert gw.app is not None
    return gw.app[METRICS].value("fpg_rejected_requests_total", reason="hop_stale")


def retries(gw: FaultGw) -> float:
    assert gw.app is not None
    return gw.app[METRICS].value("fpg_relay_retries_total", partner="kh-cnp")


async def test_a_partner_clock_off_by_less_than_the_window_is_accepted(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    vn, kh, clock = await gateways(tmp_path)
    try:
        a, _ = await officers(vn, kh, http)
        sent: list[str] = []
        for offset in (0.8 * WINDOW, -0.8 * WINDOW):
            clock.offset_ms = int(offset * 1000)
            for i in range(3):
                answer = await a.send("hotline", "anti-trafficking@kh-cnp",
                                      {"type": "hotline", "text": f"{offset} {i}"})
                sent.append(answer["id"])
            await until(lambda: vn.rows("SELECT COUNT(*) FROM outbox") == [(0,)],
                        f"the relay with VN's clock off by {offset} s", 10)
        arrived = [r[0] for r in kh.rows("SELECT message_id FROM inbox")]
        assert sorted(arrived) == sorted(sent)
        assert vn.rows("SELECT outcome, COUNT(*) FROM receipts GROUP BY outcome") == [
            ("accepted", len(sent))]
        assert stale(kh) == 0 and retries(vn) == 0
    finally:
        await stop_all(vn, kh)


@pytest.mark.parametrize(("skewed", "direction"), [("vn", 1), ("vn", -1), ("kh", 1)],
                         ids=["sender_ahead", "sender_behind", "receiver_ahead"])
async def test_a_partner_clock_beyond_the_window_is_refused_until_it_is_fixed(
        tmp_path: Path, http: aiohttp.ClientSession, skewed: str,
        direction: int) -> None:
    vn, kh, clock = await gateways(tmp_path, skewed)
    try:
        a, _ = await officers(vn, kh, http)
        kh_state = "SELECT (SELECT COUNT(*) FROM messages), (SELECT COUNT(*) FROM ledger)," \
                   " (SELECT COUNT(*) FROM inbox), (SELECT COUNT(*) FROM receipts)"
        before = kh.rows(kh_state)
        clock.offset_ms = direction * int(3 * WINDOW * 1000)
        sent = []
        for i in range(5):
            answer = await a.send("hotline", "anti-trafficking@kh-cnp",
                                  {"type": "hotline", "text": f"skewed {i}"})
            assert answer["status"] == "accepted"  # VN takes its officers' messages still
            sent.append(answer["id"])
        await until(lambda: retries(vn) >= 3 and stale(kh) >= 3, "refused attempts", 10)
        assert kh.rows(kh_state) == before  # nothing stored
        assert vn.rows("SELECT COUNT(*) FROM outbox") == [(5,)]
        (error,), = vn.rows("SELECT last_error FROM partner_state")
        assert error == "kh-cnp answered the batch with HTTP 401: hop_stale"

        clock.offset_ms = 0  # the clock is right again
        await until(lambda: vn.rows("SELECT COUNT(*) FROM outbox") == [(0,)],
                    "the relay to resume", 5)
        arrived = [r[0] for r in kh.rows(
            "SELECT message_id FROM inbox WHERE desk = 'anti-trafficking@kh-cnp'")]
        assert len(arrived) == len(set(arrived)) == 5 and set(arrived) == set(sent)
        assert vn.rows("SELECT outcome, COUNT(*) FROM receipts GROUP BY outcome") == [
            ("accepted", 5)]
        await until(lambda: vn.rows("SELECT failures FROM partner_state") == [(0,)],
                    "the retry state to be cleared")
    finally:
        await stop_all(vn, kh)

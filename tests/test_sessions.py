"""Challenges, tokens and rate limits, with an injected clock (no sleeping)."""

from __future__ import annotations

import pytest

from gateway.clock import ManualClock
from gateway.officers.sessions import AuthError, RateLimited, RateLimiter, Sessions


def test_challenge_is_single_use_and_expires() -> None:
    clock = ManualClock()
    sessions = Sessions(clock, ttl_seconds=600, challenge_seconds=60)
    challenge, expires = sessions.challenge("off-1")
    assert expires == clock.now_ms() + 60_000
    with pytest.raises(AuthError, match="another officer"):
        sessions.take_challenge("off-2", challenge)
    challenge, _ = sessions.challenge("off-1")
    sessions.take_challenge("off-1", challenge)
    with pytest.raises(AuthError) as info:  # replayed
        sessions.take_challenge("off-1", challenge)
    assert info.value.code == "bad_challenge"
    stale, _ = sessions.challenge("off-1")
    clock.advance(61)
    with pytest.raises(AuthError) as info:
        sessions.take_challenge("off-1", stale)
    assert info.value.code == "challenge_expired"


def test_tokens_expire_and_end_with_the_officer() -> None:
    clock = ManualClock()
    sessions = Sessions(clock, ttl_seconds=600)
    token, _ = sessions.issue("off-1")
    other, _ = sessions.issue("off-2")
    assert sessions.lookup(token).officer == "off-1"
    with pytest.raises(AuthError):
        sessions.lookup(token[:-2] + ("AA" if not token.endswith("AA") else "BB"))
    with pytest.raises(AuthError):
        sessions.lookup("%%%")
    sessions.end_officer("off-1")
    with pytest.raises(AuthError):
        sessions.lookup(token)
    clock.advance(601)
    with pytest.raises(AuthError) as info:
        sessions.lookup(other)
    assert info.value.code == "session_expired"


def test_rate_limiter_refills_over_time() -> None:
    clock = ManualClock()
    limiter = RateLimiter(clock, rate=2.0, burst=4)
    for _ in range(4):
        limiter.check("off-1")
    with pytest.raises(RateLimited):
        limiter.check("off-1")
    limiter.check("off-2")  # buckets are per officer
    clock.advance(0.5)
    limiter.check("off-1")  # one token back after half a second at 2/s
    with pytest.raises(RateLimited):
        limiter.check("off-1")
    clock.advance(10)
    for _ in range(4):  # never more than the burst
        limiter.check("off-1")
    with pytest.raises(RateLimited):
        limiter.check("off-1")

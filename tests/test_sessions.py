"""Challenges, tokens and rate limits, with an injected clock (no sleeping)."""

from __future__ import annotations

import pytest

from gateway.clock import ManualClock
from gateway.officers.sessions import (
    MAX_SESSIONS_PER_OFFICER,
    AuthError,
    RateLimited,
    RateLimiter,
    Sessions,
)


def test_challenge_is_single_use_and_expires() -> None:
    clock = ManualClock()
    sessions = Sessions(clock, ttl_seconds=600, challenge_seconds=60)
    challenge, expires = sessions.challenge("off-1")
    assert len(challenge) == 32 and expires == clock.now_ms() + 60_000
    with pytest.raises(AuthError) as info:  # issued to another officer
        sessions.take_challenge("off-2", challenge)
    assert info.value.code == "bad_challenge"
    sessions.take_challenge("off-1", challenge)
    with pytest.raises(AuthError) as info:  # replayed
        sessions.take_challenge("off-1", challenge)
    assert info.value.code == "bad_challenge"
    stale, _ = sessions.challenge("off-1")
    clock.advance(60)
    with pytest.raises(AuthError) as info:
        sessions.take_challenge("off-1", stale)
    assert info.value.code == "challenge_expired"


def test_a_flood_of_challenges_holds_nothing_and_locks_nobody_out() -> None:
    clock = ManualClock()
    sessions = Sessions(clock, ttl_seconds=600)
    for n in range(100_001):  # what filled the old table of outstanding challenges
        sessions.challenge(f"off-{n % 977}")
    assert sessions.used_count() == 0
    challenge, _ = sessions.challenge("off-honest")
    sessions.take_challenge("off-honest", challenge)
    assert sessions.used_count() == 1


def test_a_challenge_not_made_by_this_process_for_this_officer_is_refused() -> None:
    clock = ManualClock()
    sessions = Sessions(clock, ttl_seconds=600)
    challenge, _ = sessions.challenge("off-1")
    # Each bit flipped (an expiry moved later, a nonce or MAC changed) breaks the MAC.
    for bit in range(len(challenge) * 8):
        forged = bytearray(challenge)
        forged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(AuthError) as info:
            sessions.check_challenge("off-1", bytes(forged))
        assert info.value.code == "bad_challenge", bit
    for wrong in (b"", challenge[:31], challenge + b"\0", bytes(32)):
        with pytest.raises(AuthError):
            sessions.check_challenge("off-1", wrong)
    restarted = Sessions(clock, ttl_seconds=600)  # another key: challenges die with it
    with pytest.raises(AuthError) as info:
        restarted.check_challenge("off-1", challenge)
    assert info.value.code == "bad_challenge"
    assert sessions.check_challenge("off-1", challenge) == clock.now_ms() + 60_000


def test_used_challenges_are_remembered_until_their_expiry_only() -> None:
    clock = ManualClock()
    sessions = Sessions(clock, ttl_seconds=600, challenge_seconds=60)
    for _ in range(50):
        sessions.take_challenge("off-1", sessions.challenge("off-1")[0])
        clock.advance(1)
    assert sessions.used_count() == 50
    clock.advance(69 - 50)  # now 69 s: the first ten (issued at 0..9 s) expired
    sessions.take_challenge("off-1", sessions.challenge("off-1")[0])
    assert sessions.used_count() == 50 - 10 + 1
    clock.advance(60)
    sessions.take_challenge("off-1", sessions.challenge("off-1")[0])
    assert sessions.used_count() == 1


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


def test_rate_limiter_evicts_by_age_never_all_at_once() -> None:
    clock = ManualClock()
    limiter = RateLimiter(clock, rate=0.01, burst=2, max_keys=3)
    limiter.check("spent")
    limiter.check("spent")
    for key in ("b", "c"):
        clock.advance(1)
        limiter.check(key)
    clock.advance(1)
    with pytest.raises(RateLimited):  # touched last: the youngest bucket
        limiter.check("spent")
    for key in ("d", "e"):  # new keys past max_keys push out the oldest ones
        clock.advance(1)
        limiter.check(key)
        assert len(limiter) <= 3
    with pytest.raises(RateLimited):  # still remembered: "b" and "c" went first
        limiter.check("spent")
    limiter.check("b")  # forgotten, so a fresh bucket


def test_rate_limiter_drops_buckets_once_they_are_full_again() -> None:
    clock = ManualClock()
    limiter = RateLimiter(clock, rate=1.0, burst=5)
    for n in range(100):
        limiter.check(f"address-{n}")
    assert len(limiter) == 100
    clock.advance(4.9)
    limiter.check("late")
    assert len(limiter) == 101  # none is full yet
    clock.advance(0.2)
    limiter.check("later")
    assert len(limiter) == 2  # the hundred refilled and were dropped; nothing was lost


def test_one_officer_cannot_fill_the_session_table() -> None:
    """Sign-ins beyond MAX_SESSIONS_PER_OFFICER end that officer's oldest sessions; the
    table every other officer signs in to keeps its room. Expired sessions leave without a
    scan; a revocation ends exactly the officer's sessions."""
    clock = ManualClock(1_000_000)
    sessions = Sessions(clock, ttl_seconds=60)
    tokens = [sessions.issue("off-a")[0] for _ in range(MAX_SESSIONS_PER_OFFICER + 5)]
    assert sessions.session_count("off-a") == MAX_SESSIONS_PER_OFFICER
    for token in tokens[:5]:
        with pytest.raises(AuthError) as ended:
            sessions.lookup(token)
        assert ended.value.code == "no_session"
    assert all(sessions.lookup(t).officer == "off-a" for t in tokens[5:])
    other, _ = sessions.issue("off-b")
    assert sessions.session_count() == MAX_SESSIONS_PER_OFFICER + 1
    sessions.end_officer("off-a")
    assert sessions.session_count() == 1 and sessions.lookup(other).officer == "off-b"
    clock.advance(61)
    assert sessions.session_count() == 0

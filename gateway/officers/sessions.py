"""Officer sessions without passwords, and per-officer rate limits.

An officer's client proves possession of its signing key once per session:

1. ``POST /v1/session/challenge`` gives 32 random bytes, valid for a minute, usable once;
2. the client signs ``fpg session v1\\n<gateway>\\n<officer>\\n<base64 challenge>\\n``
   (gateway.protocol.officers.session_text) and
   ``POST /v1/session`` exchanges it for a bearer token valid ``ttl`` seconds.

A replayed challenge (already used) or a stale one (expired) is refused. Tokens are 32
random bytes; only their SHA-256 is kept, so the lookup compares hashes and a memory dump
holds no usable token. Sessions live in memory: after a restart clients simply sign in
again. Messages and read acknowledgements carry their own officer signatures, so a
stolen token cannot forge either.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.errors import ClientError

CHALLENGE_SIZE = 32
MAX_CHALLENGES = 100_000
MAX_SESSIONS = 100_000


class AuthError(ClientError):
    code = "unauthenticated"
    http_status = 401


class RateLimited(ClientError):
    code = "rate_limited"
    http_status = 429


@dataclass(frozen=True)
class Session:
    officer: str
    expires_ms: int


class Sessions:
    """Challenges and tokens, in memory, bounded."""

    def __init__(self, clock: Clock, *, ttl_seconds: float, challenge_seconds: float = 60.0):
        self.clock = clock
        self.ttl_ms = int(ttl_seconds * 1000)
        self.challenge_ms = int(challenge_seconds * 1000)
        self._challenges: dict[bytes, tuple[str, int]] = {}  # challenge -> officer, expiry
        self._tokens: dict[bytes, Session] = {}  # SHA-256 of token -> session

    def challenge(self, officer: str) -> tuple[bytes, int]:
        now = self.clock.now_ms()
        if len(self._challenges) >= MAX_CHALLENGES:
            self._challenges = {c: v for c, v in self._challenges.items() if v[1] > now}
            if len(self._challenges) >= MAX_CHALLENGES:
                raise RateLimited("too many sign-ins in progress; try again shortly")
        challenge = os.urandom(CHALLENGE_SIZE)
        expires = self.clock.now_ms() + self.challenge_ms
        self._challenges[challenge] = (officer, expires)
        return challenge, expires

    def take_challenge(self, officer: str, challenge: bytes) -> None:
        """Consume a challenge issued to ``officer``; refuse unknown, used or stale ones."""
        entry = self._challenges.pop(challenge, None)
        if entry is None:
            raise AuthError("unknown or already used challenge", code="bad_challenge")
        owner, expires = entry
        if owner != officer:
            raise AuthError("challenge was issued to another officer", code="bad_challenge")
        if self.clock.now_ms() >= expires:
            raise AuthError("challenge expired; ask for a new one", code="challenge_expired")

    def issue(self, officer: str) -> tuple[str, int]:
        now = self.clock.now_ms()
        if len(self._tokens) >= MAX_SESSIONS:
            self._tokens = {t: s for t, s in self._tokens.items() if s.expires_ms > now}
            if len(self._tokens) >= MAX_SESSIONS:
                raise RateLimited("too many open sessions; try again shortly")
        token = os.urandom(32)
        expires = self.clock.now_ms() + self.ttl_ms
        self._tokens[hashlib.sha256(token).digest()] = Session(officer, expires)
        return base64.urlsafe_b64encode(token).decode("ascii").rstrip("="), expires

    def lookup(self, token: str) -> Session:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            raise AuthError("malformed session token", code="no_session") from None
        session = self._tokens.get(hashlib.sha256(raw).digest())
        if session is None:
            raise AuthError("no such session; sign in again", code="no_session")
        if self.clock.now_ms() >= session.expires_ms:
            self._tokens.pop(hashlib.sha256(raw).digest(), None)
            raise AuthError("session expired; sign in again", code="session_expired")
        return session

    def end_officer(self, officer: str) -> None:
        """Drop every session of an officer (revocation)."""
        self._tokens = {t: s for t, s in self._tokens.items() if s.officer != officer}


class RateLimiter:
    """A token bucket per key: ``rate`` requests a second, bursts up to ``burst``."""

    def __init__(self, clock: Clock, rate: float, burst: int, max_keys: int = 100_000):
        self.clock = clock
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> tokens, last time

    def check(self, key: str) -> None:
        now = self.clock.monotonic()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
            error = RateLimited(f"too many requests; retry in {wait:.1f} s")
            error.retry_after = wait
            raise error
        if len(self._buckets) >= self.max_keys and key not in self._buckets:
            self._buckets.clear()  # forget idle buckets rather than grow without bound
        self._buckets[key] = (tokens - 1.0, now)

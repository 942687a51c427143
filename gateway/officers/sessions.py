"""Officer sessions without passwords, and the rate limits around them.

An officer's client proves possession of its signing key once per session:

1. ``POST /v1/session/challenge`` gives a 32-byte challenge, valid for a minute;
2. the client signs ``fpg session v1\\n<gateway>\\n<officer>\\n<base64 challenge>\\n``
   (gateway.protocol.officers.session_text) and
   ``POST /v1/session`` exchanges it for a bearer token valid ``ttl`` seconds.

Challenges cost the gateway nothing to hold: a challenge is ``expiry (8 bytes, ms,
big-endian) || 8 random bytes || the first 16 bytes of HMAC-SHA256(key, "fpg challenge
v1\\n" || expiry || random || officer id)``, under a key drawn at start and never
stored. So issuing one writes nothing, and a flood of challenge requests fills nothing:
the gateway recognises its own challenges by their MAC and reads their expiry from them.
A challenge is remembered only once it has signed someone in (single use), and only until
it expires, so that memory grows with the rate of *valid* sign-ins, which the per-officer
limit bounds. After a restart outstanding challenges no longer verify (a new key), and
clients ask for another, as they sign in again anyway.

Tokens are 32 random bytes; only their SHA-256 is kept, so the lookup compares hashes and
a memory dump holds no usable token. Sessions live in memory: after a restart clients
simply sign in again. Messages and read acknowledgements carry their own officer
signatures, so a stolen token cannot forge either.

Sign-in is limited three ways (:class:`SignInLimits`): per client address and claimed
officer id (each challenge and each attempt), per client address in total (a larger
budget), and per officer for sign-ins that proved the key. Nothing that a stranger can do
spends an officer's own budget: 400 addresses claiming one officer's id spend their own
buckets, and one address shared by many officers (a reverse proxy) gives each officer id
a bucket of its own.

Before any of that, all anonymous work (enrollment, challenges, sign-in attempts) waits
its turn in one line (:class:`AnonymousLine`), served at ``limits.anonymous_line_per_second``.
Those limits are per address and per claimed id, so 400 addresses could ask for 20,000
challenges a second between them; each is cheap, but a gateway answering thousands a
second has no time left for the officers' own requests, each of which takes several
turns of the event loop (reading, verifying on a worker thread, committing): sends took
a second and more under such a flood (bench/abuse.py). A request in the line waits
instead of being refused, and an HTTP/1.1 client waits for each answer before it sends
the next request on that connection, so a flood is slowed to the line's rate, whatever
its number of addresses, while an honest sign-in still goes through, after a wait of at
most the open connections divided by the rate. A request that would wait longer than
``anonymous_line_wait_seconds`` is refused at once (``429 rate_limited``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import heapq
import hmac
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.errors import ClientError

CHALLENGE_SIZE = 32
_EXPIRY_SIZE, _NONCE_SIZE = 8, 8
_HEAD = _EXPIRY_SIZE + _NONCE_SIZE  # the MAC covers these bytes and the officer id
_MAC_DOMAIN = b"fpg challenge v1\n"
MAX_SESSIONS = 100_000
MAX_SESSIONS_PER_OFFICER = 16  # a new sign-in beyond this ends the officer's oldest session


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
    """Stateless challenges, the challenges already used, and tokens, in memory."""

    def __init__(self, clock: Clock, *, ttl_seconds: float, challenge_seconds: float = 60.0):
        self.clock = clock
        self.ttl_ms = int(ttl_seconds * 1000)
        self.challenge_ms = int(challenge_seconds * 1000)
        self._key = os.urandom(32)  # per process: challenges die with it
        # Challenges that signed someone in, by their MAC, until their expiry; the heap
        # gives the next one to forget without a scan.
        self._used: dict[bytes, int] = {}
        self._used_expiry: list[tuple[int, bytes]] = []
        self._tokens: dict[bytes, Session] = {}  # SHA-256 of token -> session
        # Each officer's sessions, oldest first, and every session's expiry in a heap:
        # so that neither a full table nor one officer's many sign-ins needs a scan.
        self._of_officer: dict[str, OrderedDict[bytes, None]] = {}
        self._expiry: list[tuple[int, bytes]] = []

    def _mac(self, officer: str, head: bytes) -> bytes:
        # surrogatepass: an id from JSON may hold a lone surrogate; it must still MAC.
        text = _MAC_DOMAIN + head + officer.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, text, hashlib.sha256).digest()[: CHALLENGE_SIZE - _HEAD]

    def challenge(self, officer: str) -> tuple[bytes, int]:
        """A new challenge for ``officer`` and its expiry (ms); nothing is stored."""
        expires = self.clock.now_ms() + self.challenge_ms
        head = expires.to_bytes(_EXPIRY_SIZE, "big") + os.urandom(_NONCE_SIZE)
        return head + self._mac(officer, head), expires

    def check_challenge(self, officer: str, challenge: bytes) -> int:
        """The expiry of a challenge this gateway issued to ``officer`` and that has not
        expired; raise otherwise. Stateless: whether it was used is :meth:`consume`'s."""
        if len(challenge) != CHALLENGE_SIZE or not hmac.compare_digest(
                challenge[_HEAD:], self._mac(officer, challenge[:_HEAD])):
            raise AuthError("not a challenge of this gateway for this officer",
                            code="bad_challenge")
        expires = int.from_bytes(challenge[:_EXPIRY_SIZE], "big")
        if self.clock.now_ms() >= expires:
            raise AuthError("challenge expired; ask for a new one", code="challenge_expired")
        return expires

    def consume(self, challenge: bytes, expires: int) -> None:
        """Mark a checked challenge used, once its signature verified; refuse a second use.
        It is forgotten at its expiry, when :meth:`check_challenge` refuses it anyway."""
        self._forget_expired()
        mac = challenge[_HEAD:]
        if mac in self._used:
            raise AuthError("challenge already used; ask for a new one", code="bad_challenge")
        self._used[mac] = expires
        heapq.heappush(self._used_expiry, (expires, mac))

    def _forget_expired(self) -> None:
        now = self.clock.now_ms()
        while self._used_expiry and self._used_expiry[0][0] <= now:
            _, old = heapq.heappop(self._used_expiry)
            self._used.pop(old, None)

    def used_count(self) -> int:
        """How many used challenges are remembered."""
        self._forget_expired()
        return len(self._used)

    def take_challenge(self, officer: str, challenge: bytes) -> None:
        """Check and consume in one step (callers that verify nothing in between)."""
        self.consume(challenge, self.check_challenge(officer, challenge))

    def issue(self, officer: str) -> tuple[str, int]:
        """A new session for ``officer``: its token and expiry. The officer's oldest
        session ends if it has MAX_SESSIONS_PER_OFFICER already, so one officer (or one
        stolen key) cannot fill the table that every other officer signs in to."""
        self._forget_expired_sessions()
        mine = self._of_officer.get(officer)
        while mine and len(mine) >= MAX_SESSIONS_PER_OFFICER:
            self._drop(next(iter(mine)))
        if len(self._tokens) >= MAX_SESSIONS:
            raise RateLimited("too many open sessions; try again shortly")
        token = os.urandom(32)
        digest = hashlib.sha256(token).digest()
        expires = self.clock.now_ms() + self.ttl_ms
        self._tokens[digest] = Session(officer, expires)
        self._of_officer.setdefault(officer, OrderedDict())[digest] = None
        heapq.heappush(self._expiry, (expires, digest))
        return base64.urlsafe_b64encode(token).decode("ascii").rstrip("="), expires

    def _drop(self, digest: bytes) -> None:
        session = self._tokens.pop(digest, None)
        if session is None:
            return
        mine = self._of_officer[session.officer]
        del mine[digest]
        if not mine:
            del self._of_officer[session.officer]

    def _forget_expired_sessions(self) -> None:
        now = self.clock.now_ms()
        while self._expiry and self._expiry[0][0] <= now:
            self._drop(heapq.heappop(self._expiry)[1])

    def session_count(self, officer: str | None = None) -> int:
        """Open sessions, of one officer or of all."""
        self._forget_expired_sessions()
        if officer is None:
            return len(self._tokens)
        return len(self._of_officer.get(officer, ()))

    def lookup(self, token: str) -> Session:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            raise AuthError("malformed session token", code="no_session") from None
        session = self._tokens.get(hashlib.sha256(raw).digest())
        if session is None:
            raise AuthError("no such session; sign in again", code="no_session")
        if self.clock.now_ms() >= session.expires_ms:
            self._drop(hashlib.sha256(raw).digest())
            raise AuthError("session expired; sign in again", code="session_expired")
        return session

    def end_officer(self, officer: str) -> None:
        """Drop every session of an officer (revocation)."""
        for digest in list(self._of_officer.get(officer, ())):
            self._drop(digest)



class AnonymousLine:
    """One line for all anonymous requests, served at ``rate`` a second (on the real
    clock: it shares out the gateway's time); :meth:`turn` waits for the request's turn,
    or refuses it at once if that is more than ``max_wait`` seconds away."""

    def __init__(self, rate: float, max_wait: float,
                 now: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        self.spacing, self.max_wait = 1.0 / rate, max_wait
        self.now, self.sleep = now, sleep
        self._next = 0.0  # when the next request may be served

    async def turn(self) -> None:
        now = self.now()
        at = max(now, self._next)
        wait = at - now
        if wait > self.max_wait:
            error = RateLimited(f"the gateway is busy; retry in {wait:.0f} s")
            error.retry_after = wait
            raise error
        self._next = at + self.spacing
        if wait > 0:
            await self.sleep(wait)


class RateLimiter:
    """A token bucket per key: ``rate`` requests a second, bursts up to ``burst``.

    Buckets are kept in the order they were last touched. One idle long enough to be full
    again is the same as no bucket, so those at the old end are dropped as requests come;
    past ``max_keys`` the least recently touched go first. Never all at once: forgetting
    every bucket would hand each key that had spent its burst a fresh one.
    """

    def __init__(self, clock: Clock, rate: float, burst: int, max_keys: int = 100_000):
        self.clock = clock
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self._refill = self.burst / rate  # seconds an empty bucket takes to fill
        # key -> tokens, last time; least recently touched first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def check(self, key: str) -> None:
        now = self.clock.monotonic()
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        self._evict(now)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
            error = RateLimited(f"too many requests; retry in {wait:.1f} s")
            error.retry_after = wait
            raise error
        self._buckets[key] = (tokens - 1.0, now)

    def _evict(self, now: float) -> None:
        buckets = self._buckets
        while buckets:  # oldest first; stops at the first still refilling
            _, last = buckets[next(iter(buckets))]
            if len(buckets) < self.max_keys and now - last < self._refill:
                break
            buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)


class SignInLimits:
    """Who may ask for a challenge or try a signature, and how often.

    * every challenge and sign-in attempt spends a token of its (client address, claimed
      officer id) bucket and one of the address's total, larger bucket;
    * a sign-in whose signature verified spends a token of the officer's own bucket,
      which bounds the sessions and remembered challenges one key can make.

    An officer's own bucket is spent only by its key, so no flood of requests claiming
    its id, from however many addresses, locks it out; an address shared by many officers
    (a reverse proxy) gives each officer id its own bucket there, so one officer's
    retries, or a stranger claiming one id, do not lock out the others.
    """

    def __init__(self, per_address_officer: RateLimiter, per_address: RateLimiter,
                 per_officer: RateLimiter) -> None:
        self.per_address_officer = per_address_officer
        self.per_address = per_address
        self.per_officer = per_officer

    def from_address(self, address: str) -> None:
        """A challenge request or a sign-in attempt from ``address``, before its body is
        read (so that an address over its budget costs no parsing)."""
        self.per_address.check(address)

    def claiming(self, address: str, officer: str) -> None:
        """... and the officer id it claims, once the body is read."""
        self.per_address_officer.check(f"{address} {officer}")

    def signed_in(self, officer: str) -> None:
        """A sign-in that proved ``officer``'s key."""
        self.per_officer.check(officer)

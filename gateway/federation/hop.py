"""Signed hop requests: how one gateway proves to another that a request comes from it.

Every gateway-to-gateway request carries five headers (docs/PROTOCOL.md, "Hop requests"):

    FPG-Hop-Gateway:   the calling gateway's id
    FPG-Hop-Key:       its gateway signing key, base64 (32 bytes)
    FPG-Hop-Time:      Unix milliseconds when it was signed
    FPG-Hop-Nonce:     16 random bytes, base64url without padding (22 characters)
    FPG-Hop-Signature: Ed25519 signature, base64, over the signing string below

The signing string binds the method, the path with its query, the destination gateway
(so a request cannot be replayed to another partner), the caller, the time, the nonce and
the SHA-256 of the body:

    fpg hop v1
    METHOD
    PATH
    DESTINATION
    CALLER
    TIME
    NONCE
    BODY-SHA256-HEX

(one field per line, each line ending in a newline, no spaces). The receiver refuses a
caller that is not a partner, a key whose fingerprint it does not trust for that caller,
a bad signature, a time outside its window and a nonce it has already seen within it.

A partner that rotated its key (gateway.protocol.rotation) signs with its new key from its next
start on: :meth:`HopVerifier.authenticate` lets the partners module fetch that partner's
descriptor and follow the rotation (``learn``) before it refuses the key as untrusted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping

from gateway.clock import Clock
from gateway.crypto.keys import (
    ROLE_GATEWAY_SIGNING,
    SIGNATURE_SIZE,
    GatewaySigningKey,
    VerifyKey,
)
from gateway.errors import CryptoError, ForbiddenError, HopAuthError
from gateway.protocol.names import is_name

H_GATEWAY = "FPG-Hop-Gateway"
H_KEY = "FPG-Hop-Key"
H_TIME = "FPG-Hop-Time"
H_NONCE = "FPG-Hop-Nonce"
H_SIGNATURE = "FPG-Hop-Signature"
HOP_HEADERS = (H_GATEWAY, H_KEY, H_TIME, H_NONCE, H_SIGNATURE)

_NONCE = re.compile(r"[A-Za-z0-9_-]{22}")
_TIME = re.compile(r"[0-9]{1,15}")
MAX_NONCES = 1_000_000  # remembered at once; beyond that the oldest are forgotten early


def signing_string(method: str, path: str, destination: str, caller: str, time_ms: int,
                   nonce: str, body: bytes) -> bytes:
    return (f"fpg hop v1\n{method.upper()}\n{path}\n{destination}\n{caller}\n{time_ms}\n"
            f"{nonce}\n{hashlib.sha256(body).hexdigest()}\n").encode()


def new_nonce() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).decode("ascii").rstrip("=")


def sign_hop(key: GatewaySigningKey, caller: str, destination: str, method: str, path: str,
             body: bytes, time_ms: int, nonce: str | None = None) -> dict[str, str]:
    """The hop headers for one request."""
    nonce = nonce or new_nonce()
    signature = key.sign(signing_string(method, path, destination, caller, time_ms, nonce, body))
    return {
        H_GATEWAY: caller,
        H_KEY: key.public.b64(),
        H_TIME: str(time_ms),
        H_NONCE: nonce,
        H_SIGNATURE: base64.b64encode(signature).decode("ascii"),
    }


class HopVerifier:
    """Checks inbound hop requests against the trusted partners' keys.

    ``trusted(caller)`` gives the fingerprints trusted for a partner id, or None if the
    caller is not a partner. Seen nonces are kept for twice the time window (a request
    older than the window is refused on its time anyway), in memory: after a restart a
    replay within the window is possible, and harmless, since every message and receipt
    is deduplicated by its id in the database.
    """

    def __init__(self, me: str, clock: Clock, window_ms: int,
                 trusted: Callable[[str], frozenset[str] | None],
                 learn: Callable[[str, VerifyKey], Awaitable[bool]] | None = None) -> None:
        self.me = me
        self.clock = clock
        self.window_ms = window_ms
        self.trusted = trusted
        self.learn = learn  # (caller, key) -> is the key trusted now (after a rotation)?
        self._seen: OrderedDict[tuple[str, str], int] = OrderedDict()

    async def authenticate(self, method: str, path: str, headers: Mapping[str, str],
                           body: bytes) -> tuple[str, VerifyKey]:
        """:meth:`verify`, but a request from a partner signed by a key not trusted for it
        (fresh, and whose signature verifies with that key) first asks ``learn`` whether
        the partner rotated to it; refused as ``untrusted_key`` if not."""
        try:
            return self.verify(method, path, headers, body)
        except ForbiddenError as exc:
            if exc.code != "untrusted_key" or self.learn is None:
                raise
            caller = headers[H_GATEWAY]
            key = VerifyKey.from_b64(headers[H_KEY], ROLE_GATEWAY_SIGNING)
            if not self._signed(key, method, path, headers, body) \
                    or not await self.learn(caller, key):
                raise
        return self.verify(method, path, headers, body)

    def _signed(self, key: VerifyKey, method: str, path: str, headers: Mapping[str, str],
                body: bytes) -> bool:
        """Whether the request is fresh and signed by ``key`` (nothing else checked)."""
        try:
            time_ms = int(headers[H_TIME])
            if not self._fresh(time_ms, self.clock.now_ms()):
                return False
            signature = base64.b64decode(headers[H_SIGNATURE], validate=True)
            key.verify(signing_string(method, path, self.me, headers[H_GATEWAY], time_ms,
                                      headers[H_NONCE], body), signature)
        except (CryptoError, binascii.Error, ValueError, KeyError):
            return False
        return True

    def precheck(self, headers: Mapping[str, str]) -> None:
        """Refuse, before its body is read, a hop request that :meth:`verify` would refuse
        whatever the body: hop headers missing or malformed, a caller that is not a
        partner, a time outside the window, a nonce already used. A stranger cannot make
        this gateway read (up to ``batch_bytes`` of) a body it is going to refuse."""
        caller, nonce, _, time_ms = self._headers(headers)
        now = self.clock.now_ms()
        self._check_time(time_ms, now)
        self._check_nonce(caller, nonce, now)

    def _headers(self, headers: Mapping[str, str]) -> tuple[str, str, frozenset[str], int]:
        """Caller, nonce, the caller's trusted fingerprints and the request time."""
        values = {h: headers.get(h, "") for h in HOP_HEADERS}
        missing = [h for h, v in values.items() if not v]
        if missing:
            raise HopAuthError(f"hop request lacks {', '.join(missing)}", code="hop_unsigned")
        caller, nonce, when = values[H_GATEWAY], values[H_NONCE], values[H_TIME]
        if not is_name(caller) or not _NONCE.fullmatch(nonce) or not _TIME.fullmatch(when):
            raise HopAuthError("malformed hop headers", code="hop_malformed")
        fingerprints = self.trusted(caller)
        if fingerprints is None:
            raise ForbiddenError(f"gateway {caller} is not a partner of this gateway",
                                 code="unknown_partner")
        return caller, nonce, fingerprints, int(when)

    def _fresh(self, time_ms: int, now: int) -> bool:
        return abs(now - time_ms) <= self.window_ms

    def _check_time(self, time_ms: int, now: int) -> None:
        if not self._fresh(time_ms, now):
            raise HopAuthError("hop request time is outside the allowed window; check the "
                               "clocks", code="hop_stale")

    def _check_nonce(self, caller: str, nonce: str, now: int) -> None:
        self._forget(now)
        if (caller, nonce) in self._seen:
            raise HopAuthError("hop nonce already used (replayed request)", code="hop_replay")

    def verify(self, method: str, path: str, headers: Mapping[str, str],
               body: bytes) -> tuple[str, VerifyKey]:
        """The authenticated caller's gateway id and the key it signed with; raises
        HopAuthError or ForbiddenError."""
        caller, nonce, fingerprints, time_ms = self._headers(headers)
        try:
            key = VerifyKey.from_b64(headers[H_KEY], ROLE_GATEWAY_SIGNING)
            signature = base64.b64decode(headers[H_SIGNATURE], validate=True)
            if len(signature) != SIGNATURE_SIZE:
                raise ValueError("a signature is 64 bytes")
        except (CryptoError, binascii.Error, ValueError):
            raise HopAuthError("malformed hop key or signature", code="hop_malformed") from None
        if key.fingerprint not in fingerprints:
            raise ForbiddenError(f"the key signing for {caller} is not one this gateway "
                                 "trusts for it", code="untrusted_key")
        now = self.clock.now_ms()
        self._check_time(time_ms, now)
        try:
            key.verify(signing_string(method, path, self.me, caller, time_ms, nonce, body),
                       signature)
        except CryptoError:
            raise HopAuthError("hop signature does not verify", code="hop_bad_signature") \
                from None
        self._check_nonce(caller, nonce, now)
        self._seen[(caller, nonce)] = now + 2 * self.window_ms
        return caller, key

    def _forget(self, now: int) -> None:
        seen = self._seen
        while seen and (len(seen) >= MAX_NONCES or next(iter(seen.values())) < now):
            seen.popitem(last=False)

"""The partner gateways this gateway trusts, and what it knows of each.

Trust comes from configuration only: each ``[[partners]]`` entry pins a partner's id, its
base URL and the fingerprint of its gateway signing key. Everything after that is
automatic: the partner's signed descriptor is fetched and checked against the pinned
fingerprint, its signed desk directory is fetched with a signed hop request, both are
renewed every ``refresh_seconds``, and the partner is marked up or down by whether it
answers. A descriptor signed by any other key is refused and logged, never accepted.

Outbound requests to partners are made here (:meth:`Partners.request`), always signed
as hop requests (gateway.hop).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import aiohttp
import structlog

from gateway.clock import Clock
from gateway.config import Config, PartnerSection
from gateway.crypto.keys import VerifyKey, normalize_fingerprint
from gateway.crypto.note import NoteSigner, cosign_note
from gateway.descriptor import DESCRIPTOR_PATH, Descriptor, peek_descriptor, verify_descriptor
from gateway.directory import DirectoryEntry, open_directory
from gateway.errors import CryptoError, PeerError, UnavailableError
from gateway.hop import sign_hop
from gateway.httpbody import read_at_most
from gateway.identity import Identity

log = structlog.get_logger("gateway.partners")

FEDERATION_DIRECTORY_PATH = "/v1/federation/directory"
FEDERATION_MESSAGES_PATH = "/v1/federation/messages"
MAX_ANSWER = 16 * 1024 * 1024  # largest answer read from a partner


@dataclass
class Partner:
    config: PartnerSection
    fingerprints: frozenset[str]  # trusted key fingerprints (the pinned one)
    descriptor: Descriptor | None = None
    directory_note: bytes | None = None
    directory: dict[str, DirectoryEntry] | None = None
    fetched_ms: int = 0  # when the directory was last fetched
    up: bool | None = None  # None: not contacted yet
    last_contact_ms: int | None = None
    last_error: str | None = None
    kick: asyncio.Event = field(default_factory=asyncio.Event)  # retry now
    queued: asyncio.Event = field(default_factory=asyncio.Event)  # new messages

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def key(self) -> VerifyKey | None:
        return self.descriptor.signing_key if self.descriptor is not None else None

    def base(self) -> str:
        return self.config.url.rstrip("/")

    def verified_directory(self) -> dict[str, DirectoryEntry]:
        """Its desks, from the last directory that verified; UnavailableError before any."""
        if self.directory is None:
            raise _directory_unknown(self.id)
        return self.directory


class Partners:
    def __init__(self, config: Config, identity: Identity, clock: Clock) -> None:
        self.config = config
        self.identity = identity
        self.clock = clock
        self.by_id = {
            p.id: Partner(p, frozenset({normalize_fingerprint(p.fingerprint)}))
            for p in config.partners
        }
        self._http: aiohttp.ClientSession | None = None
        self._refreshing: dict[str, asyncio.Lock] = {p: asyncio.Lock() for p in self.by_id}

    # --- trust ---------------------------------------------------------------------------

    def trusted(self, gateway_id: str) -> frozenset[str] | None:
        """Fingerprints trusted for ``gateway_id``; None if it is not a partner."""
        partner = self.by_id.get(gateway_id)
        return partner.fingerprints if partner is not None else None

    def get(self, gateway_id: str) -> Partner | None:
        return self.by_id.get(gateway_id)

    # --- HTTP --------------------------------------------------------------------------

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.config.federation.request_timeout_seconds)
        self._http = aiohttp.ClientSession(timeout=timeout, raise_for_status=False)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def request(self, partner: Partner, method: str, path: str, body: bytes = b"",
                      content_type: str | None = None) -> tuple[int, bytes]:
        """A signed hop request to ``partner``: (status, body). Raises PeerError when the
        partner cannot be reached or its answer is too large."""
        if self._http is None:
            raise PeerError("the federation client is not started")
        headers = sign_hop(self.identity.signing_key, self.identity.gateway_id, partner.id,
                           method, path, body, self.clock.now_ms())
        if content_type is not None:
            headers["Content-Type"] = content_type
        try:
            async with self._http.request(method, partner.base() + path, data=body or None,
                                          headers=headers) as response:
                data = await read_at_most(response.content, MAX_ANSWER)
                if data is None:
                    raise PeerError(f"{partner.id} answered more than {MAX_ANSWER} bytes")
                return response.status, data
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise PeerError(f"{partner.id} unreachable ({type(exc).__name__}: {exc})") \
                from None

    # --- descriptors and directories -------------------------------------------------

    async def refresh(self, partner: Partner) -> None:
        """Fetch and verify the partner's descriptor and desk directory. Raises PeerError
        (unreachable, or refused: a key we do not trust, a bad signature)."""
        async with self._refreshing[partner.id]:
            status, data = await self.request(partner, "GET", DESCRIPTOR_PATH)
            if status != 200:
                raise PeerError(f"{partner.id}: descriptor request answered HTTP {status}")
            try:
                unverified = peek_descriptor(data)
                if unverified.signing_key.fingerprint not in partner.fingerprints:
                    log.error("partner_key_untrusted", partner=partner.id,
                              fingerprint=unverified.signing_key.fingerprint)
                    raise PeerError(f"{partner.id}: its descriptor is signed by a key whose "
                                    "fingerprint is not pinned for it")
                descriptor = verify_descriptor(data, partner.id, unverified.signing_key)
            except CryptoError as exc:
                log.error("partner_descriptor_refused", partner=partner.id, error=exc.message)
                raise PeerError(f"{partner.id}: descriptor refused ({exc.message})") from None
            status, note = await self.request(partner, "GET", FEDERATION_DIRECTORY_PATH)
            if status != 200:
                raise PeerError(f"{partner.id}: directory request answered HTTP {status}")
            try:
                desks = open_directory(note, partner.id, descriptor.signing_key)
            except CryptoError as exc:
                log.error("partner_directory_refused", partner=partner.id, error=exc.message)
                raise PeerError(f"{partner.id}: directory refused ({exc.message})") from None
            partner.descriptor, partner.directory_note, partner.directory = \
                descriptor, note, desks
            partner.fetched_ms = self.clock.now_ms()
            self.mark(partner, up=True)

    def mark(self, partner: Partner, *, up: bool, error: str | None = None) -> None:
        if partner.up is not up:
            (log.info if up else log.warning)(
                "partner_up" if up else "partner_down", partner=partner.id, error=error)
            if up and partner.up is False:
                partner.kick.set()  # it answers again: its sender catches up at once
        partner.up = up
        if up:
            partner.last_contact_ms = self.clock.now_ms()
            partner.last_error = None
        else:
            partner.last_error = error

    async def learn_officers(self, partner: Partner, key_ids: set[str]) -> None:
        """Refresh the partner's directory if it lacks one of these officers' signing keys
        (an officer enrolled there since the last refresh, who just wrote to us): our
        officers need it to verify what they read. Failures are logged, not raised."""
        known = {m["sign_key_id"] for d in (partner.directory or {}).values() for m in d.members}
        if key_ids <= known:
            return
        try:
            await self.refresh(partner)
        except PeerError as exc:
            log.warning("partner_refresh_failed", partner=partner.id, error=exc.message)

    async def directory_for_clients(self, partner: Partner) -> bytes:
        """The partner's signed directory with this gateway's signature added, so that an
        officer who pinned only its home gateway can check it; UnavailableError if not
        known yet. Fetched again first if older than ``directory_max_age_seconds`` (the
        cached one is served if the partner does not answer)."""
        age_ms = self.clock.now_ms() - partner.fetched_ms
        if age_ms > self.config.federation.directory_max_age_seconds * 1000:
            try:
                await self.refresh(partner)
            except PeerError as exc:
                self.mark(partner, up=False, error=exc.message)
        if partner.directory_note is None:
            raise _directory_unknown(partner.id)
        return cosign_note(partner.directory_note,
                           NoteSigner(self.identity.gateway_id, self.identity.signing_key))

    async def refresh_loop(self, partner: Partner) -> None:
        """Keep the partner's descriptor and directory fresh (supervised)."""
        while True:
            try:
                await self.refresh(partner)
                wait = self.config.federation.refresh_seconds
            except PeerError as exc:
                self.mark(partner, up=False, error=exc.message)
                wait = self.config.federation.health_seconds
            await self.clock.sleep(wait)


def _directory_unknown(gateway_id: str) -> UnavailableError:
    return UnavailableError(f"the directory of {gateway_id} is not known yet (it has not "
                            "answered since this gateway started)",
                            code="partner_directory_unknown")

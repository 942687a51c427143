"""The partner gateways this gateway trusts, and what it knows of each.

Trust comes from configuration only: each ``[[partners]]`` entry pins a partner's id, its
base URL and the fingerprint of its gateway signing key; each ``[[trust_anchors]]`` entry
names a roster signed by that anchor (gateway.federation.roster), whose gateways are partners like
pinned ones (a pinned entry wins over a roster's for the same id). Everything after that
is automatic: the partner's signed descriptor is fetched and checked against the trusted
fingerprint, its signed desk directory is fetched with a signed hop request, both are
renewed every ``refresh_seconds``, and the partner is marked up or down by whether it
answers. A descriptor signed by any other key is refused and logged, never accepted.

**Key rotation** (gateway.protocol.rotation): a descriptor signed by a key we do not trust yet is
accepted only if its key history leads, one statement signed by the previous key at a
time, from the key we trust to the new one. Then the new key is the one trusted (the old
one no longer signs anything new for this partner), the history is stored so that a
restart keeps following it, and officer bindings the partner signed with a key of that
chain before it was replaced still verify (:meth:`Partner.open_binding`). A hop request
signed by an unknown key of a partner makes us fetch the partner's descriptor first (at
most once per ``health_seconds``, :meth:`Partners.learn_key`), so that a partner that just
rotated is followed before it is refused.

Outbound requests to partners are made here (:meth:`Partners.request`), always signed
as hop requests (gateway.federation.hop), each partner over a session of its own: its
connections, and for an ``https://`` URL the CA its certificate is verified with and the
client certificate shown to it (``ca_file``, ``client_cert_file``: the partner's own or
``[federation]``'s; gateway.tls).

Log lines about one partner take its id (``partner``) from the log context, bound once
where the work for that partner starts: its supervised tasks (``gateway.app``), and
here the start-up steps and the request handlers' entry points (:meth:`learn_key`,
:meth:`learn_officers`, :meth:`directory_for_clients`).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import quote

import aiohttp
import structlog
from structlog.contextvars import bound_contextvars

from gateway.clock import Clock
from gateway.config import Config, PartnerSection, PartnerTls, plain_http_off_loopback
from gateway.crypto.keys import ROLE_GATEWAY_SIGNING, VerifyKey, normalize_fingerprint
from gateway.crypto.note import NoteSigner, cosign_note
from gateway.errors import (
    BadKeyError,
    CryptoError,
    GatewayError,
    NotFoundError,
    PeerError,
    UnavailableError,
)
from gateway.federation.hop import sign_hop
from gateway.federation.identity import Identity
from gateway.federation.roster import load_rosters
from gateway.httpbody import read_at_most
from gateway.protocol.descriptor import (
    DESCRIPTOR_PATH,
    Descriptor,
    peek_descriptor,
    verify_descriptor_history,
)
from gateway.protocol.officers import Binding, DirectoryEntry, open_binding, open_directory
from gateway.protocol.rotation import ChainKey, KeyHistoryError, peek_rotation, verify_history
from gateway.tls import TlsFileError, client_tls

if TYPE_CHECKING:
    from gateway.store import PartnerStore

log = structlog.get_logger("gateway.federation.partners")

FEDERATION_DIRECTORY_PATH = "/v1/federation/directory"
FEDERATION_PROOFS_PATH = "/v1/federation/desks/{desk}/proofs"
FEDERATION_EXCHANGED_PATH = "/v1/federation/exchanged"
FEDERATION_MESSAGES_PATH = "/v1/federation/messages"
FEDERATION_READS_PATH = "/v1/federation/reads"
MAX_CACHED_BINDINGS = 4096
MAX_ANSWER = 16 * 1024 * 1024  # largest answer read from a partner


@dataclass
class Partner:
    config: PartnerSection
    fingerprints: frozenset[str]  # trusted key fingerprints (pinned, or followed since)
    descriptor: Descriptor | None = None
    descriptor_note: bytes | None = None  # as the partner signed it, for officers' clients
    directory_note: bytes | None = None
    directory: dict[str, DirectoryEntry] | None = None
    fetched_ms: int = 0  # when the directory was last fetched
    up: bool | None = None  # None: not contacted yet
    last_contact_ms: int | None = None
    last_error: str | None = None
    kick: asyncio.Event = field(default_factory=asyncio.Event)  # retry now
    queued: asyncio.Event = field(default_factory=asyncio.Event)  # new messages
    probe: asyncio.Event = field(default_factory=asyncio.Event)  # found down: probe it now
    # Queue control (gateway.federation.queue): the messages the operator returned (or is
    # returning) since start, which the sender never posts, even from a batch read
    # before; and the sender's own, which it is posting, recording or expiring now and an
    # operator may not return (the sender sets ``in_hand`` while it runs).
    returned: set[str] = field(default_factory=set)
    in_hand: Callable[[], frozenset[str]] = field(default=frozenset)
    source: str = "pinned"  # or "roster <anchor>"
    valid_from: int | None = None  # roster partners: when they are trusted (Unix ms)
    valid_until: int | None = None
    # Keys trusted for this partner, oldest first, from the configured one to the current
    # one (empty until its descriptor or a stored history was verified), and the key
    # history statements behind them.
    chain: tuple[ChainKey, ...] = ()
    history: tuple[bytes, ...] = ()
    learned_ms: int = -(10**15)  # last descriptor fetch caused by an unknown hop key
    # Bindings already verified, by (note, key that verified it): a partner relays many
    # messages from few officers, and checking a binding costs more than the envelope.
    _bindings: dict[tuple[bytes, bytes], Binding] = field(default_factory=dict, repr=False)

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def key(self) -> VerifyKey | None:
        return self.descriptor.signing_key if self.descriptor is not None else None

    def base(self) -> str:
        return self.config.url.rstrip("/")

    @property
    def keys(self) -> list[VerifyKey]:
        """Every key trusted for this partner, newest first (for statements it signed
        before a rotation, e.g. checkpoints); only the first signs anything new."""
        chain = [k.key for k in reversed(self.chain)]
        return chain or [k for k in (self.key,) if k is not None]

    def valid_at(self, now_ms: int) -> bool:
        return ((self.valid_from is None or self.valid_from <= now_ms)
                and (self.valid_until is None or now_ms < self.valid_until))

    def open_binding(self, note: bytes, caller_key: VerifyKey) -> Binding:
        """An officer binding signed by this partner: with ``caller_key`` (the key its
        request was signed with), or with an older key of its chain if the binding was
        made before that key was replaced. Raises CryptoError."""
        cached = self._bindings.get((note, caller_key.raw))
        if cached is not None:
            return cached
        try:
            binding = open_binding(note, self.id, caller_key)
        except CryptoError as exc:
            first = exc
        else:
            if len(self._bindings) >= MAX_CACHED_BINDINGS:
                self._bindings.clear()
            self._bindings[(note, caller_key.raw)] = binding
            return binding
        for old in reversed(self.chain):
            if old.key == caller_key or old.retired is None:
                continue
            try:
                binding = open_binding(note, self.id, old.key)
            except CryptoError:
                continue
            if binding.not_before <= old.retired:
                return binding
        raise first

    def verified_directory(self) -> dict[str, DirectoryEntry]:
        """Its desks, from the last directory that verified; UnavailableError before any."""
        if self.directory is None:
            raise _directory_unknown(self.id)
        return self.directory


class Partners:
    def __init__(self, config: Config, identity: Identity, clock: Clock,
                 store: PartnerStore | None = None) -> None:
        """Raises ConfigError if a configured roster cannot be read or does not verify."""
        self.config = config
        self.identity = identity
        self.clock = clock
        self.store = store
        self.by_id = {
            p.id: Partner(p, frozenset({normalize_fingerprint(p.fingerprint)}))
            for p in config.partners
        }
        self._add_roster_partners()
        # Each partner's own session, with what it was made for (URL and TLS files).
        self._sessions: dict[str, tuple[tuple[str, PartnerTls], aiohttp.ClientSession]] = {}
        self._started = False
        self._refreshing: dict[str, asyncio.Lock] = {p: asyncio.Lock() for p in self.by_id}
        self._learning: dict[str, asyncio.Lock] = {p: asyncio.Lock() for p in self.by_id}

    def _add_roster_partners(self) -> None:
        me = self.identity.gateway_id
        for anchor, roster in load_rosters(self.config, self.clock.now_ms()):
            log.info("roster_loaded", anchor=anchor.id, gateways=len(roster.gateways),
                     valid_until=roster.valid_until)
            for entry in roster.gateways:
                known = self.by_id.get(entry.gateway)
                if entry.gateway == me:
                    continue
                if known is not None:
                    if entry.fingerprint not in known.fingerprints:
                        with bound_contextvars(partner=entry.gateway):
                            log.warning("roster_entry_ignored", anchor=anchor.id,
                                        trusted_by=known.source,
                                        fingerprint=entry.fingerprint)
                    continue
                if plain_http_off_loopback(entry.url):  # as for a [[partners]] entry
                    with bound_contextvars(partner=entry.gateway):
                        log.warning("roster_entry_ignored", anchor=anchor.id, url=entry.url,
                                    reason="plain http:// is only allowed on loopback")
                    continue
                section = PartnerSection(id=entry.gateway, url=entry.url,
                                         fingerprint=entry.fingerprint)
                self.by_id[entry.gateway] = Partner(
                    section, frozenset({entry.fingerprint}), source=f"roster {anchor.id}",
                    valid_from=entry.not_before,
                    valid_until=min(entry.not_after, roster.valid_until))

    # --- trust ---------------------------------------------------------------------------

    def trusted(self, gateway_id: str) -> frozenset[str] | None:
        """Fingerprints trusted for ``gateway_id``; None if it is not a partner (or a
        roster's partner outside its validity)."""
        partner = self.by_id.get(gateway_id)
        if partner is None or not partner.valid_at(self.clock.now_ms()):
            return None
        return partner.fingerprints

    async def load_keys(self) -> None:
        """Follow the key rotations stored for each partner (from before a restart): the
        stored history must verify and descend from the configured key; if it does not
        (the operator pinned another key since), it is ignored, loudly."""
        for partner in self.by_id.values():
            await self._load_keys_of(partner)

    async def _load_keys_of(self, partner: Partner) -> None:
        if self.store is None:
            return
        statements = await self.store.partner_key_history(partner.id)
        if not statements:
            return
        with bound_contextvars(partner=partner.id):
            try:
                current = peek_rotation(statements[-1]).new_key
                history = verify_history(statements, partner.id, current)
                chain = history.since_trusted(partner.fingerprints)
            except CryptoError as exc:
                log.warning("partner_stored_keys_ignored", error=exc.message)
                return
            partner.chain, partner.history = chain, tuple(statements)
            partner.fingerprints = frozenset({current.fingerprint})
            log.info("partner_key_followed", key_id=current.key_id,
                     fingerprint=current.fingerprint, rotations=len(chain) - 1,
                     stored=True)

    async def load_directories(self) -> None:
        """Each partner's last verified directory, from before a restart: verified again
        with the key that signed it, which must be one this gateway trusts for the
        partner (by fingerprint). Refreshed from the partner as usual when it answers."""
        for partner in self.by_id.values():
            await self._load_directory_of(partner)

    async def _load_directory_of(self, partner: Partner) -> None:
        if self.store is None:
            return
        stored = await self.store.partner_directory(partner.id)
        if stored is None:
            return
        note, raw_key, fetched_ms, descriptor_note = stored
        try:
            key = VerifyKey(raw_key, ROLE_GATEWAY_SIGNING)
            trusted = partner.fingerprints | {k.fingerprint for k in partner.keys}
            if key.fingerprint not in trusted:
                raise BadKeyError("signed by a key no longer trusted for the partner")
            desks = open_directory(note, partner.id, key)
        except CryptoError as exc:
            with bound_contextvars(partner=partner.id):
                log.warning("partner_stored_directory_ignored", error=exc.message)
            return
        partner.directory_note, partner.directory = note, desks
        partner.fetched_ms = fetched_ms
        partner.descriptor_note = partner.descriptor_note or descriptor_note

    # --- reload (gateway.reload) -----------------------------------------------------

    async def adopt(self, partner: Partner, config: Config) -> None:
        """Trust ``partner`` from now on (added by a reload of ``config``), with what
        was learnt of it before (followed keys, its last directory)."""
        self.config = config
        self.by_id[partner.id] = partner
        self._refreshing.setdefault(partner.id, asyncio.Lock())
        self._learning.setdefault(partner.id, asyncio.Lock())
        await self._load_keys_of(partner)
        await self._load_directory_of(partner)

    async def drop(self, partner_id: str, config: Config) -> None:
        """Trust ``partner_id`` no longer (removed by a reload of ``config``), and close its
        session; its loops are stopped first (gateway.federation.loops)."""
        self.config = config
        self.by_id.pop(partner_id, None)
        await self.close_session(partner_id)

    async def learn_key(self, gateway_id: str, key: VerifyKey) -> bool:
        """A partner's hop request came signed by ``key``, which we do not trust for it:
        fetch its descriptor (at most once per ``health_seconds``) in case it rotated to
        that key. Whether ``key`` is trusted now."""
        partner = self.by_id.get(gateway_id)
        if partner is None:
            return False
        with bound_contextvars(partner=partner.id):  # for a request: not in the partner's tasks
            return await self._learn_key(partner, key)

    async def _learn_key(self, partner: Partner, key: VerifyKey) -> bool:
        async with self._learning[partner.id]:
            if key.fingerprint in partner.fingerprints:
                return True  # learnt by a request that waited on the lock before us
            now = self.clock.now_ms()
            if now - partner.learned_ms < self.config.federation.health_seconds * 1000:
                log.warning("hop_key_untrusted", fingerprint=key.fingerprint,
                            checked="recently")
                return False
            partner.learned_ms = now
            try:
                await self._descriptor(partner)
            except PeerError as exc:
                log.warning("partner_refresh_failed", error=exc.message)
            if key.fingerprint in partner.fingerprints:
                return True
            log.error("hop_key_untrusted", fingerprint=key.fingerprint)
            return False

    def get(self, gateway_id: str) -> Partner | None:
        return self.by_id.get(gateway_id)

    def require(self, gateway_id: str) -> Partner:
        """The partner ``gateway_id``: NotFoundError ``unknown_gateway`` if it is none."""
        partner = self.by_id.get(gateway_id)
        if partner is None:
            raise NotFoundError(f"gateway {gateway_id[:64]!r} is not a partner of this "
                                "gateway", code="unknown_gateway")
        return partner

    # --- HTTP --------------------------------------------------------------------------

    async def start(self) -> None:
        self._started = True

    async def close(self) -> None:
        """Close every partner's session (the gateway stops)."""
        self._started = False
        sessions, self._sessions = self._sessions, {}
        for _, session in sessions.values():
            await session.close()

    async def close_session(self, partner_id: str) -> None:
        """Close the partner's session (removed, or its certificates replaced on disk):
        the next request opens a new one with the files as they are then."""
        held = self._sessions.pop(partner_id, None)
        if held is not None:
            await held[1].close()

    def session_of(self, partner_id: str) -> aiohttp.ClientSession | None:
        """The partner's session, if one is open."""
        held = self._sessions.get(partner_id)
        return None if held is None else held[1]

    async def _session(self, partner: Partner) -> aiohttp.ClientSession:
        """The partner's own session: its connections, and for an https:// URL its TLS
        context (the CA it is verified with, the client certificate shown). Made at its
        first request and again if its URL or TLS files changed. Raises PeerError."""
        if not self._started:
            raise PeerError("the federation client is not started")
        files = self.config.partner_tls(partner.config)
        held = self._sessions.get(partner.id)
        if held is not None and held[0] == (partner.config.url, files):
            return held[1]
        await self.close_session(partner.id)
        ssl_context: ssl.SSLContext | bool = True  # unused for http:// (loopback only)
        if partner.config.url.startswith("https://"):
            try:
                ssl_context = client_tls(files.ca_file, files.client_cert_file,
                                         files.client_key_file)
            except TlsFileError as exc:
                raise PeerError(f"{partner.id}: TLS files unusable ({exc.message})") from None
        timeout = aiohttp.ClientTimeout(total=self.config.federation.request_timeout_seconds)
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context),
                                        timeout=timeout, raise_for_status=False)
        self._sessions[partner.id] = ((partner.config.url, files), session)
        return session

    async def request(self, partner: Partner, method: str, path: str, body: bytes = b"",
                      content_type: str | None = None) -> tuple[int, bytes]:
        """A signed hop request to ``partner``: (status, body). Raises PeerError when the
        partner cannot be reached or its answer is too large."""
        http = await self._session(partner)
        headers = sign_hop(self.identity.signing_key, self.identity.gateway_id, partner.id,
                           method, path, body, self.clock.now_ms())
        if content_type is not None:
            headers["Content-Type"] = content_type
        try:
            async with http.request(method, partner.base() + path, data=body or None,
                                          headers=headers) as response:
                data = await read_at_most(response.content, MAX_ANSWER)
                if data is None:
                    raise PeerError(f"{partner.id} answered more than {MAX_ANSWER} bytes")
                return response.status, data
        except TimeoutError:  # a partner that accepts the connection and never answers
            raise PeerError(f"{partner.id} did not answer within "
                            f"{self.config.federation.request_timeout_seconds:g} s") from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise PeerError(f"{partner.id}: its TLS certificate does not verify "
                            f"({_verify_message(exc)}); a partner whose certificate a "
                            "private CA issued needs that CA as its ca_file") from None
        except aiohttp.ClientSSLError as exc:
            raise PeerError(f"{partner.id}: TLS handshake failed ({_ssl_reason(exc)}); "
                            "does it ask for a client certificate?") from None
        except aiohttp.ServerDisconnectedError:
            # Under TLS 1.3 a partner that refuses our client certificate (or its
            # absence) does so after the handshake: the connection just closes.
            hint = "" if not partner.config.url.startswith("https://") else (
                "; over https also how a partner refuses a missing or untrusted client "
                "certificate")
            raise PeerError(f"{partner.id} unreachable (ServerDisconnectedError: it closed "
                            f"the connection without an answer{hint})") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise PeerError(f"{partner.id} unreachable ({type(exc).__name__}: {exc})") \
                from None

    # --- descriptors and directories -------------------------------------------------

    async def _descriptor(self, partner: Partner) -> Descriptor:
        """Fetch and verify the partner's descriptor, following a key rotation if its key
        history leads from our trusted key to its new one. Raises PeerError."""
        status, data = await self.request(partner, "GET", DESCRIPTOR_PATH)
        if status != 200:
            raise PeerError(f"{partner.id}: descriptor request answered HTTP {status}")
        try:
            descriptor, chain = verify_descriptor_history(data, partner.id,
                                                          partner.fingerprints)
        except KeyHistoryError as exc:
            log.error("partner_key_untrusted", fingerprint=_fingerprint_of(data),
                      error=exc.message)
            raise PeerError(f"{partner.id}: its descriptor is signed by a key that is not "
                            f"trusted for it and does not follow from one ({exc.message})") \
                from None
        except CryptoError as exc:
            log.error("partner_descriptor_refused", error=exc.message)
            raise PeerError(f"{partner.id}: descriptor refused ({exc.message})") from None
        if descriptor.valid_until <= self.clock.now_ms():
            # A gateway signs a fresh descriptor for every request: this is an old copy
            # (replayed, or cached on the way), or its clock or ours is far off.
            log.error("partner_descriptor_refused", partner=partner.id, error="expired",
                      valid_until=descriptor.valid_until)
            raise PeerError(f"{partner.id}: its descriptor expired (valid until "
                            f"{descriptor.valid_until})")
        if descriptor.signing_key.fingerprint not in partner.fingerprints:
            await self._follow(partner, descriptor, chain)
        elif not partner.chain:
            partner.chain = chain
        partner.descriptor, partner.descriptor_note = descriptor, data
        return descriptor

    async def _follow(self, partner: Partner, descriptor: Descriptor,
                      chain: tuple[ChainKey, ...]) -> None:
        """Trust the partner's new key (``chain`` leads to it from the one we trusted),
        durably first."""
        if self.store is not None:
            await self.store.set_partner_key_history(partner.id, descriptor.key_history,
                                                     self.clock.now_ms())
        old = partner.fingerprints
        partner.chain = tuple(k for k in partner.chain if k.key != chain[0].key) + chain
        partner.history = descriptor.key_history
        partner.fingerprints = frozenset({descriptor.signing_key.fingerprint})
        log.warning("partner_key_rotated", old_fingerprints=sorted(old),
                    fingerprint=descriptor.signing_key.fingerprint,
                    key_id=descriptor.signing_key.key_id, rotations=len(chain) - 1)

    async def refresh(self, partner: Partner) -> None:
        """Fetch and verify the partner's descriptor and desk directory. Raises PeerError
        (unreachable, or refused: a key we do not trust, a bad signature)."""
        async with self._refreshing[partner.id]:
            if not partner.valid_at(self.clock.now_ms()):
                raise PeerError(f"{partner.id}: its roster entry is not valid now")
            descriptor = await self._descriptor(partner)
            status, note = await self.request(partner, "GET", FEDERATION_DIRECTORY_PATH)
            if status != 200:
                raise PeerError(f"{partner.id}: directory request answered HTTP {status}")
            try:
                desks = open_directory(note, partner.id, descriptor.signing_key)
            except CryptoError as exc:
                log.error("partner_directory_refused", error=exc.message)
                raise PeerError(f"{partner.id}: directory refused ({exc.message})") from None
            changed = note != partner.directory_note
            partner.directory_note, partner.directory = note, desks
            partner.fetched_ms = self.clock.now_ms()
            self.mark(partner, up=True)
            if changed and self.store is not None:  # kept for a restart while it is down
                assert partner.descriptor_note is not None  # set by _descriptor above
                await self.store.set_partner_directory(
                    partner.id, note, descriptor.signing_key.raw, partner.fetched_ms,
                    partner.descriptor_note)
        if changed:  # officers seal for its desks also while it is down: keep their proofs
            for desk in desks:
                try:
                    await self.membership_proofs(partner, desk)
                except GatewayError as exc:
                    log.warning("partner_proofs_failed", desk=desk, error=exc.message)

    def mark(self, partner: Partner, *, up: bool, error: str | None = None) -> None:
        if partner.up is not up:
            (log.info if up else log.warning)(
                "partner_up" if up else "partner_down", error=error)
            if up and partner.up is False:
                partner.kick.set()  # it answers again: its sender catches up at once
            if not up:  # its refresh loop probes it every health_seconds from now
                partner.probe.set()
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
        with bound_contextvars(partner=partner.id):  # for a request: not in the partner's tasks
            try:
                await self.refresh(partner)
            except PeerError as exc:
                log.warning("partner_refresh_failed", error=exc.message)

    async def directory_for_clients(self, partner: Partner) -> bytes:
        """The partner's signed directory with this gateway's signature added, so that an
        officer who pinned only its home gateway can check it; UnavailableError if not
        known yet. Fetched again first if older than ``directory_max_age_seconds`` (the
        cached one is served if the partner does not answer)."""
        age_ms = self.clock.now_ms() - partner.fetched_ms
        if age_ms > self.config.federation.directory_max_age_seconds * 1000:
            with bound_contextvars(partner=partner.id):  # an officer's request
                try:
                    await self.refresh(partner)
                except PeerError as exc:
                    self.mark(partner, up=False, error=exc.message)
        if partner.directory_note is None:
            raise _directory_unknown(partner.id)
        return cosign_note(partner.directory_note,
                           NoteSigner(self.identity.gateway_id, self.identity.signing_key))

    async def membership_proofs(self, partner: Partner, desk: str, known: int = 0) -> bytes:
        """The membership proofs of a partner's desk (docs/PROTOCOL.md 7.8), for officers'
        clients, which check them against the partner's key. The kept answer while it
        names the members the partner's directory lists and its checkpoint is not older
        than ``known``, with a consistency proof from ``known`` asked of the partner;
        otherwise asked for again (and kept). While the partner does not answer: the kept
        answer as it is, its consistency proof from the size it was asked with.
        UnavailableError if there is none; NotFoundError for a desk the partner lacks."""
        kept = await self.store.partner_proofs(partner.id, desk) if self.store else None
        size = _checkpoint_size(kept)
        listed = (partner.directory or {}).get(desk)
        if kept is not None and listed is not None and size is not None and size >= known \
                and _proves(kept, listed):
            return await self._with_consistency(partner, kept, known, size)
        path = FEDERATION_PROOFS_PATH.format(desk=quote(desk, safe="@")) + f"?known={known}"
        with bound_contextvars(partner=partner.id):  # an officer's request, or a refresh
            try:
                status, body = await self.request(partner, "GET", path)
                error = f"answered HTTP {status}"
            except PeerError as exc:
                status, body, error = 0, b"", exc.message
        if status == 404:
            raise NotFoundError(f"{partner.id} has no desk {desk[:100]!r}", code="unknown_desk")
        if status == 200:
            if self.store is not None:
                await self.store.set_partner_proofs(partner.id, desk, body, self.clock.now_ms())
            return body
        if kept is None:
            raise UnavailableError(f"{partner.id} cannot be asked for the membership of "
                                   f"{desk} now ({error})", code="partner_unavailable")
        return kept

    async def _with_consistency(self, partner: Partner, answer: bytes, known: int,
                                size: int) -> bytes:
        """A kept proofs answer with the partner's consistency proof from ``known`` to its
        checkpoint's ``size`` in place of the one it came with (unchanged if the partner
        does not answer: the client sees from ``known`` which proof it holds)."""
        doc = json.loads(answer)
        if doc.get("known") == known:
            return answer
        if known == size:  # the client saw this very tree: nothing to prove
            return json.dumps({**doc, "known": known, "consistency": []}).encode()
        path = f"/v1/ledger/proof/consistency?old={known}&new={size}"
        with bound_contextvars(partner=partner.id):
            try:
                status, body = await self.request(partner, "GET", path)
                proof = json.loads(body)["proof"] if status == 200 else None
            except (PeerError, ValueError, KeyError, TypeError):
                proof = None
        if not isinstance(proof, list):
            return answer
        return json.dumps({**doc, "known": known, "consistency": proof}).encode()

    async def refresh_loop(self, partner: Partner) -> None:
        """Keep the partner's descriptor and directory fresh (supervised), and probe it
        every ``health_seconds`` while it is down: also when its sender, not this loop,
        found it down, so that it is found again within ``health_seconds`` of answering
        (and its sender woken by :meth:`mark`), not at the end of the sender's backoff."""
        settings = self.config.federation
        while True:
            partner.probe.clear()
            try:
                await self.refresh(partner)
            except PeerError as exc:
                self.mark(partner, up=False, error=exc.message)
                await self.clock.sleep(settings.health_seconds)
                continue
            # At most one probe per health_seconds, whatever wakes it: a partner that
            # answers probes but fails batches must not be asked in a loop.
            await self.clock.sleep(settings.health_seconds)
            if partner.up is not False:
                await _sleep_or(self.clock, settings.refresh_seconds - settings.health_seconds,
                                partner.probe)


async def _sleep_or(clock: Clock, seconds: float, event: asyncio.Event) -> None:
    """Sleep ``seconds`` of ``clock``'s time, or less if ``event`` is set meanwhile."""
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait((sleeper, waiter), return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeper.cancel()
        waiter.cancel()


def _fingerprint_of(descriptor: bytes) -> str | None:
    """The fingerprint a descriptor announces, unverified (for the log), if it parses."""
    try:
        return peek_descriptor(descriptor).signing_key.fingerprint
    except CryptoError:
        return None


def _verify_message(exc: aiohttp.ClientConnectorCertificateError) -> str:
    """Why a partner's certificate did not verify, in OpenSSL's words."""
    error = exc.certificate_error
    return str(getattr(error, "verify_message", None) or error)


def _ssl_reason(exc: aiohttp.ClientSSLError) -> str:
    """Why a TLS handshake failed, in OpenSSL's words."""
    error = exc.os_error
    return str(getattr(error, "reason", None) or error)


def _checkpoint_size(answer: bytes | None) -> int | None:
    """The tree size of a kept proofs answer's checkpoint (None: none, or unreadable)."""
    try:
        size = json.loads(answer or b"")["checkpoint"].split("\n")[1]
        return int(size) if size.isdigit() else None
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        return None


def _proves(answer: bytes, desk: DirectoryEntry) -> bool:
    """Whether a kept proofs answer names exactly the members ``desk`` lists (whether the
    proofs hold is for the officer's client to check)."""
    try:
        doc = json.loads(answer)
        proven = {m["officer"] for m in doc["members"]}
    except (ValueError, KeyError, TypeError):
        return False
    return proven == {m["officer"] for m in desk.members}


def _directory_unknown(gateway_id: str) -> UnavailableError:
    return UnavailableError(f"the directory of {gateway_id} is not known yet (it has not "
                            "answered since this gateway started)",
                            code="partner_directory_unknown")

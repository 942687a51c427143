"""The officers' client library: everything ``gateway-client`` does, over the client API.

Sealing and opening happen here, on the officer's machine: the gateway only ever sees
envelopes. The gateway's signing key is pinned at enrollment (optionally against a
fingerprint read out by its operator) and every directory is verified against it, so
the client seals only for keys its own gateway vouches for.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from gateway.client import payload
from gateway.client.trust import TrustMemory
from gateway.clock import Clock, SystemClock
from gateway.crypto.envelope import (
    Envelope,
    EnvelopeHeader,
    content_key_of,
    new_message_id,
    open_envelope,
    open_with_content_key,
    peek_header,
    read_signer,
    rewrap_content_key,
    seal_envelope,
    verify_envelope,
)
from gateway.crypto.errors import NotARecipientError
from gateway.crypto.keys import (
    ROLE_GATEWAY_SIGNING,
    EncryptionPublicKey,
    OfficerEncryptionKey,
    OfficerSigningKey,
    VerifyKey,
    fingerprints_equal,
)
from gateway.errors import (
    BadSignatureError,
    ClientError,
    CryptoError,
    GatewayError,
    MalformedError,
)
from gateway.protocol import jsontext
from gateway.protocol.admission import admission_text, safety_code, safety_codes_equal
from gateway.protocol.cases import MoveRefused, check_move
from gateway.protocol.descriptor import (
    DESCRIPTOR_PATH,
    peek_descriptor,
    verify_descriptor,
    verify_descriptor_history,
)
from gateway.protocol.forwarding import MAX_DEPTH as MAX_FORWARD_DEPTH
from gateway.protocol.forwarding import check_permit, sign_permit
from gateway.protocol.history import DEFAULT_HISTORY_DAYS, MAX_SHARES, Share, share_text
from gateway.protocol.membership import (
    check_extends,
    check_membership,
    check_relayed_log,
    consistency_hashes,
    open_log,
    open_membership,
)
from gateway.protocol.notices import open_breach_notice, open_case_deadline_notice, open_notice
from gateway.protocol.officers import (
    DirectoryEntry,
    FormerOfficer,
    Signer,
    VerifiedDirectory,
    check_partner_signature,
    check_signed_while_bound,
    enroll_text,
    open_binding,
    open_directory_history,
    read_text,
    session_text,
)
from gateway.protocol.rotation import ChainKey, verify_history

DAY_MS = 86_400_000
DEFAULT_LIFETIME_MS = 7 * 24 * 3600 * 1000
STREAM_SILENCE_SECONDS = 45.0
ENVELOPE_TYPE = "application/vnd.fpg.envelope"


class ApiError(GatewayError):
    """The gateway refused a request; ``code`` is its stable error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})", code=code)
        self.status = status


@dataclass(frozen=True)
class Credentials:
    gateway_url: str
    gateway_id: str
    gateway_key: VerifyKey
    officer_id: str
    desks: tuple[str, ...]
    signing: OfficerSigningKey
    encryption: OfficerEncryptionKey


@dataclass(frozen=True)
class Forwarded:
    """A message a forward embeds, verified with its own signer's key and opened with the
    content key the forward passed on (docs/PROTOCOL.md 3.9)."""

    envelope: Envelope
    payload: dict[str, Any]
    sender_officer: str
    former: FormerOfficer | None
    permit: bool | None  # the forward's permit for it: holds, does not, or none given

    @property
    def header(self) -> EnvelopeHeader:
        return self.envelope.header


@dataclass(frozen=True)
class OpenedMessage:
    envelope: Envelope
    payload: dict[str, Any]
    sender_officer: str
    former: FormerOfficer | None = None  # the signer's binding has ended since (revoked...)
    shared_by: str | None = None  # sealed before this officer joined: who shared its key
    forwarded: tuple[Forwarded, ...] = ()  # a forward's chain, the forwarded message first

    @property
    def header(self) -> EnvelopeHeader:
        return self.envelope.header


async def _raise_for(response: aiohttp.ClientResponse) -> None:
    if response.status < 400:
        return
    try:
        doc = await response.json(content_type=None)
        code, message = str(doc.get("error")), str(doc.get("message"))
    except (ValueError, aiohttp.ContentTypeError, AttributeError):
        code, message = "http_error", response.reason or "error"
    raise ApiError(response.status, code, message)


async def fetch_gateway_key(http: aiohttp.ClientSession, url: str,
                            fingerprint: str | None) -> tuple[str, VerifyKey]:
    """The gateway's id and signing key from its descriptor, checked against ``fingerprint``
    when one is given (what the operator read out)."""
    async with http.get(url.rstrip("/") + DESCRIPTOR_PATH) as response:
        await _raise_for(response)
        data = await response.read()
    descriptor = peek_descriptor(data)
    key = VerifyKey(descriptor.signing_key.raw, ROLE_GATEWAY_SIGNING)
    if fingerprint is not None and not fingerprints_equal(fingerprint, key.fingerprint):
        raise ClientError(f"the gateway's key has fingerprint {key.fingerprint}, "
                          "not the one you were given: do not enroll", code="fingerprint")
    verify_descriptor(data, descriptor.gateway, key)  # self-signed: at least consistent
    return descriptor.gateway, key


async def enroll(http: aiohttp.ClientSession, url: str, code: str,
                 signing: OfficerSigningKey, encryption: OfficerEncryptionKey,
                 fingerprint: str | None = None) -> tuple[Credentials, dict[str, Any]]:
    gateway_id, key = await fetch_gateway_key(http, url, fingerprint)
    sign_b64, enc_b64 = signing.public.b64(), encryption.public.b64()
    proof = signing.sign(enroll_text(gateway_id, code, sign_b64, enc_b64))
    async with http.post(url.rstrip("/") + "/v1/enroll", json={
        "code": code, "sign_key": sign_b64, "enc_key": enc_b64,
        "signature": base64.b64encode(proof).decode("ascii"),
    }) as response:
        await _raise_for(response)
        doc = await response.json()
    if doc.get("gateway_key") != key.b64():
        raise ClientError("the gateway answered with another key than its descriptor's",
                          code="fingerprint")
    binding = open_binding(str(doc.get("binding", "")).encode("utf-8"), gateway_id, key)
    if binding.sign_key != signing.public or binding.enc_key != encryption.public or (
        binding.officer != doc.get("officer")
    ):
        raise ClientError("the gateway's binding does not name our keys", code="bad_binding")
    creds = Credentials(url.rstrip("/"), gateway_id, key, doc["officer"],
                        tuple(doc["desks"]), signing, encryption)
    return creds, doc


class GatewayClient:
    """One officer's session with their gateway."""

    def __init__(self, http: aiohttp.ClientSession, creds: Credentials,
                 clock: Clock | None = None, trust: TrustMemory | None = None) -> None:
        self.http = http
        self.creds = creds
        self.clock = clock or SystemClock()
        self.trust = trust or TrustMemory()  # checkpoints seen, partner keys pinned
        self._gateway_keys: dict[str, tuple[ChainKey, ...]] = {}  # verified this session
        self._token: str | None = None
        self.session_expires: int | None = None  # Unix ms, from the last sign-in
        self._directories: dict[str, VerifiedDirectory] = {}  # by gateway

    # --- plumbing ----------------------------------------------------------------------

    def address(self, desk: str) -> str:
        """A desk's address: a bare name is a desk of the home gateway."""
        return desk if "@" in desk else f"{desk}@{self.creds.gateway_id}"

    def _url(self, path: str) -> str:
        return self.creds.gateway_url + path

    async def sign_in(self) -> None:
        c = self.creds
        async with self.http.post(self._url("/v1/session/challenge"),
                                  json={"officer": c.officer_id}) as response:
            await _raise_for(response)
            challenge = base64.b64decode((await response.json())["challenge"])
        signature = c.signing.sign(session_text(c.gateway_id, c.officer_id, challenge))
        async with self.http.post(self._url("/v1/session"), json={
            "officer": c.officer_id, "challenge": base64.b64encode(challenge).decode("ascii"),
            "signature": base64.b64encode(signature).decode("ascii"),
        }) as response:
            await _raise_for(response)
            answer = await response.json()
            self._token = answer["token"]
            self.session_expires = answer.get("expires")

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, bytes, Any]:
        """Make an authenticated request (signing in again once if the session ended)."""
        extra = kwargs.pop("headers", {})  # the same on the retry after signing in again
        for attempt in (0, 1):
            if self._token is None:
                await self.sign_in()
            headers = {"Authorization": f"Bearer {self._token}", **extra}
            async with self.http.request(method, self._url(path), headers=headers,
                                         **kwargs) as response:
                if response.status == 401 and attempt == 0:
                    self._token = None
                    continue
                await _raise_for(response)
                return response.status, await response.read(), response.headers
        raise AssertionError("unreachable")

    async def get_json(self, path: str) -> Any:
        return jsontext.loads((await self.request("GET", path))[1])

    # --- directory ---------------------------------------------------------------------

    async def directory(self, refresh: bool = False,
                        gateway: str | None = None) -> dict[str, DirectoryEntry]:
        """The home gateway's directory, or a partner's (through the home gateway, which
        countersigns what it verified)."""
        return (await self.verified_directory(refresh, gateway)).desks

    async def verified_directory(self, refresh: bool = False,
                                 gateway: str | None = None) -> VerifiedDirectory:
        """As :meth:`directory`, with the former officers' bindings."""
        home = self.creds.gateway_id
        gateway = gateway or home
        if gateway not in self._directories or refresh:
            if gateway == home:
                _, body, _ = await self.request("GET", "/v1/directory")
            else:
                _, body, _ = await self.request("GET", f"/v1/directory?gateway={gateway}")
            try:
                verified = open_directory_history(body, home, self.creds.gateway_key,
                                                  directory_of=gateway)
            except BadSignatureError:
                if not await self.follow_key_rotation():
                    raise
                verified = open_directory_history(body, home, self.creds.gateway_key,
                                                  directory_of=gateway)
            if gateway != home:
                await self._check_partner_signature(body, gateway)
            await self._follow_log(gateway, verified)
            self._directories[gateway] = verified
        return self._directories[gateway]

    async def _follow_log(self, gateway: str, verified: VerifiedDirectory) -> None:
        """With every directory fetch: the gateway's ledger still extends the checkpoint
        this client saw before (ClientError ``ledger_fork``), and its newest checkpoint is
        remembered (docs/PROTOCOL.md 7.8). Skipped while there is none to see: no
        checkpoint yet, or a partner that has not answered."""
        known = self.trust.log(gateway)
        keys = [k.key for k in await self.gateway_keys(gateway)]
        try:
            if gateway == self.creds.gateway_id:
                _, note, _ = await self.request("GET", "/v1/ledger/checkpoint")
                seen = open_log(note.decode("utf-8", "replace"), keys)
                if known is not None and known != seen and seen.size > known.size:
                    consistency = await self.get_json(
                        f"/v1/ledger/proof/consistency?old={known.size}&new={seen.size}")
                    check_extends(known, seen, consistency_hashes(consistency.get("proof")))
                elif known is not None:
                    check_extends(known, seen, [])  # the same tree, or a smaller one
                self.trust.remember_log(gateway, seen)
                return
            if not verified.desks:
                return
            answer = await self.get_json(f"/v1/desks/{min(verified.desks)}/proofs"
                                         + (f"?known={known.size}" if known else ""))
        except ApiError as exc:
            if exc.code in ("no_checkpoint", "partner_unavailable"):
                return
            raise
        except MalformedError as exc:
            raise ClientError(f"the ledger answer of {gateway} is malformed ({exc.message})",
                              code="ledger_fork") from None
        seen = open_log(answer.get("checkpoint") if isinstance(answer, dict) else None, keys)
        if check_relayed_log(answer, known, seen):
            self.trust.remember_log(gateway, seen)

    async def follow_key_rotation(self) -> bool:
        """The home gateway may have rotated its key since it was pinned: follow its key
        history from the pinned key to its current one (each step signed by the key it
        replaces) and pin that, for this session. Whether the key changed; ClientError
        (``fingerprint``) if the new key does not follow from the pinned one."""
        pinned = self.creds.gateway_key
        await self.gateway_keys(self.creds.gateway_id, refresh=True)
        return self.creds.gateway_key != pinned

    async def gateway_keys(self, gateway: str, refresh: bool = False) -> tuple[ChainKey, ...]:
        """A gateway's signing keys with the times each was in use, oldest first, from the
        key history in its own descriptor: the home gateway's must lead to its current key
        from the pinned one (ClientError ``fingerprint``); a partner's descriptor comes
        through the home gateway and must lead from the key this client pinned for it the
        first time it met it (ClientError ``partner_key``)."""
        home = gateway == self.creds.gateway_id
        if refresh or gateway not in self._gateway_keys:
            if home:
                async with self.http.get(self._url(DESCRIPTOR_PATH)) as response:
                    await _raise_for(response)
                    data = await response.read()
                pinned: str | None = self.creds.gateway_key.fingerprint
            else:
                _, data, _ = await self.request("GET", f"{DESCRIPTOR_PATH}?gateway={gateway}")
                pinned = self.trust.fingerprint(gateway)
            try:
                trusted = {pinned or peek_descriptor(data).signing_key.fingerprint}
                descriptor, _ = verify_descriptor_history(data, gateway, trusted)
                history = verify_history(descriptor.key_history, gateway,
                                         descriptor.signing_key)
            except CryptoError as exc:
                if home:
                    raise ClientError(f"the gateway's key is not the pinned one and does not "
                                      f"follow from it ({exc.message})",
                                      code="fingerprint") from None
                raise ClientError(f"the key shown for {gateway} is not the one this client "
                                  f"pinned for it and does not follow from it "
                                  f"({exc.message}): do not seal; tell your security officer",
                                  code="partner_key") from None
            if home:
                self.creds = dataclasses.replace(self.creds, gateway_key=descriptor.signing_key)
            else:
                self.trust.pin(gateway, descriptor.signing_key.fingerprint)
            self._gateway_keys[gateway] = history.keys
        return self._gateway_keys[gateway]

    async def _check_partner_signature(self, note: bytes, gateway: str) -> None:
        for refresh in (False, True):  # the partner may have rotated its key since
            key = (await self.gateway_keys(gateway, refresh))[-1].key
            try:
                check_partner_signature(note, gateway, key)
                return
            except BadSignatureError:
                continue
        raise ClientError(f"the directory of {gateway} does not carry {gateway}'s own "
                          "signature: your gateway changed it, or passed on a forgery. Do not "
                          "seal; tell your security officer", code="partner_signature")

    async def _check_membership(self, address: str, desk: DirectoryEntry) -> None:
        """The desk's members are proven by its gateway's ledger, which extends the
        checkpoint this client saw before (docs/PROTOCOL.md 7.8)."""
        gateway = address.partition("@")[2]
        known = self.trust.log(gateway)
        keys = [k.key for k in await self.gateway_keys(gateway)]
        answer = await self.get_json(f"/v1/desks/{address}/proofs"
                                     + (f"?known={known.size}" if known else ""))
        if gateway == self.creds.gateway_id:
            self.trust.remember_log(gateway, check_membership(answer, desk, keys, known))
            return
        # A partner's proofs come from the home gateway's copy; while the partner does not
        # answer, their consistency proof may start from another size than ours.
        seen = open_membership(answer, desk, keys)
        if check_relayed_log(answer, known, seen):
            self.trust.remember_log(gateway, seen)

    async def _desk(self, address: str, refresh: bool = False) -> DirectoryEntry:
        """A desk to seal for: every member proven by its admission chain and by its
        gateway's ledger."""
        gateway = address.partition("@")[2]
        verified = await self.verified_directory(refresh, gateway)
        desk = verified.desks.get(address)
        if desk is None:
            raise ClientError(f"no desk {address} in the directory", code="unknown_desk")
        if not desk.members:
            raise ClientError(f"desk {address} has no admitted officer yet", code="empty_desk")
        verified.check_members(address, await self.gateway_keys(gateway))
        await self._check_membership(address, desk)
        return desk

    # --- desk membership ---------------------------------------------------------------

    async def members(self, desk: str) -> dict[str, Any]:
        """The desk's members (who admitted each, when) and the officers waiting to join."""
        desk = self.address(desk)
        result: dict[str, Any] = await self.get_json(f"/v1/desks/{desk}/members")
        return result

    async def pending_safety_code(self, desk: str, officer: str) -> tuple[dict[str, Any], str]:
        """A waiting officer as the gateway shows it, and the safety code of those keys."""
        desk = self.address(desk)
        for waiting in (await self.members(desk))["pending"]:
            if waiting["officer"] == officer:
                return waiting, safety_code(desk, officer, waiting["sign_key"],
                                            waiting["enc_key"])
        raise ClientError(f"no officer {officer} is waiting to join {desk}", code="not_pending")

    async def admit(self, desk: str, officer: str, typed_code: str) -> dict[str, Any]:
        """Admit a waiting officer once the code it shows (``typed_code``) matches the one
        its keys give here; ClientError ``safety_code_mismatch`` otherwise."""
        desk = self.address(desk)
        waiting, expected = await self.pending_safety_code(desk, officer)
        if not safety_codes_equal(typed_code, expected):
            raise ClientError("the safety code does not match: the keys the gateway shows are "
                              "not the new officer's. Do not admit; tell your security "
                              "officer", code="safety_code_mismatch")
        at = self.clock.now_ms()
        text = admission_text(desk, officer, waiting["sign_key"], waiting["enc_key"],
                              self.creds.officer_id, at)
        _, body, _ = await self.request("POST", f"/v1/desks/{desk}/admissions", json={
            "officer": officer, "at": at,
            "signature": base64.b64encode(self.creds.signing.sign(text)).decode("ascii"),
        })
        result: dict[str, Any] = jsontext.loads(body)
        return result

    async def notices(self, desk: str, after: int = 0, *, unread: bool = False,
                      limit: int | None = None) -> dict[str, Any]:
        """The desk's stored notices after cursor ``after`` (membership, breaches,
        escalations, non-delivery), each with when this officer read it, and how many it
        has not read; ``unread``: only those."""
        desk = self.address(desk)
        query = f"?after={after}" + ("&unread=1" if unread else "") + (
            f"&limit={limit}" if limit else "")
        result: dict[str, Any] = await self.get_json(f"/v1/desks/{desk}/notices{query}")
        return result

    async def notice(self, desk: str, cursor: int) -> dict[str, Any]:
        """One notice of the desk by its cursor (the gateway marks it read)."""
        desk = self.address(desk)
        result: dict[str, Any] = await self.get_json(f"/v1/desks/{desk}/notices/{cursor}")
        return result

    async def mark_notices_read(self, desk: str, cursors: list[int]) -> dict[str, Any]:
        desk = self.address(desk)
        _, body, _ = await self.request("POST", f"/v1/desks/{desk}/notices/read",
                                        json={"cursors": cursors})
        result: dict[str, Any] = jsontext.loads(body)
        return result

    async def open_signed_notice(self, notice: dict[str, Any]) -> Any:
        """Verify a stored notice's gateway signature with a key of this gateway's
        verified key history and parse it: a breach notice (``escalation``) or a
        non-delivery notice. CryptoError if none verifies; None for an unsigned notice."""
        note = notice.get("notice")
        if not isinstance(note, str):
            return None
        raw = base64.b64decode(note, validate=True)
        event = notice.get("event")
        opener: Any = (open_breach_notice if event == "escalation" else
                       open_case_deadline_notice if event in ("case_due", "case_overdue")
                       else open_notice)
        home = self.creds.gateway_id
        keys = [k.key for k in await self.gateway_keys(home)] or [self.creds.gateway_key]
        for key in keys[:-1]:
            try:
                return opener(raw, home, key)
            except BadSignatureError:
                continue  # signed before a rotation, perhaps: an older key of the chain
        return opener(raw, home, keys[-1])

    async def recipients(self, to: str) -> list[tuple[str, str]]:
        """Who a message to desk ``to`` would be sealed for, each proven by its admission
        chain: (officer id, who admitted it)."""
        to = self.address(to)
        desk = await self._desk(to)
        return [(m["officer"], str(m.get("admission", {}).get("by", "?"))) for m in desk.members]

    def my_safety_code(self, desk: str) -> str:
        """The code this officer's screen shows for joining ``desk``."""
        desk = self.address(desk)
        return safety_code(desk, self.creds.officer_id, self.creds.signing.public.b64(),
                           self.creds.encryption.public.b64())

    # --- sending -----------------------------------------------------------------------

    def _from_desk(self, frm: str | None) -> str:
        desks = self.creds.desks
        if frm is None:
            if len(desks) != 1:
                raise ClientError(f"say which desk you send from: {', '.join(desks)}",
                                  code="choose_desk")
            return desks[0]
        address = self.address(frm)
        if address not in desks:
            raise ClientError(f"you are not an officer of {address}", code="not_a_member")
        return address

    async def send(self, kind: str, to: str, doc: dict[str, Any], *, priority: str = "routine",
                   frm: str | None = None, in_reply_to: str | None = None,
                   thread: str | None = None, lifetime_ms: int = DEFAULT_LIFETIME_MS,
                   message_id: str | None = None, handling: str | None = None,
                   due: str | None = None, forwards: str | None = None,
                   permit: str | None = None) -> dict[str, Any]:
        """Seal ``doc`` for every current officer of desk ``to`` and send it. The signed
        header carries ``handling`` if given, a case's due day (its payload's deadline)
        and a status's state and new due day (docs/PROTOCOL.md 3.2)."""
        to = self.address(to)
        body = payload.encode(doc, kind)
        mid = message_id or new_message_id()
        now = self.clock.now_ms()
        if kind == "case":
            due = doc["deadline"]
        header = EnvelopeHeader(
            id=mid, kind=kind, priority=priority, sender=self._from_desk(frm), recipient=to,
            created=now, expires=now + lifetime_ms, thread=thread or mid,
            in_reply_to=in_reply_to, handling=handling,
            state=doc.get("state") if kind == "status" else None, due=due,
            forwards=forwards, permit=permit,
        )
        for refresh in (False, True):
            desk = await self._desk(to, refresh)
            data = seal_envelope(header, body, self.creds.signing, desk.encryption_keys())
            try:
                _, answer, _ = await self.request(
                    "POST", "/v1/messages", data=data, headers={"Content-Type": ENVELOPE_TYPE}
                )
            except ApiError as exc:
                if exc.code == "recipients_mismatch" and not refresh:
                    continue  # the desk changed since we fetched the directory
                raise
            result: dict[str, Any] = jsontext.loads(answer)
            return result
        raise AssertionError("unreachable")

    async def reply(self, original: OpenedMessage, doc: dict[str, Any], *,
                    priority: str | None = None, handling: str | None = None
                    ) -> dict[str, Any]:
        """Answer ``original`` in its thread; the handling code stays the original's
        unless another is given."""
        h = original.header
        frm = h.recipient if h.recipient in self.creds.desks else h.sender
        to = h.sender if frm == h.recipient else h.recipient
        return await self.send("reply", to, doc, priority=priority or h.priority, frm=frm,
                               in_reply_to=h.id, thread=h.thread,
                               handling=handling or h.handling)

    async def handover(self, original: OpenedMessage, doc: dict[str, Any]) -> dict[str, Any]:
        """Acknowledge, signed, that the persons ``original`` announced were handed over to
        this officer's desk (its recipient): a ``handover`` in its thread."""
        h = original.header
        if h.recipient not in self.creds.desks:
            raise ClientError(f"only {h.recipient}, which {h.id} was sent to, acknowledges "
                              "the handover", code="not_the_recipient")
        return await self.send("handover", h.sender, {**doc, "type": "handover"},
                               priority=h.priority, frm=h.recipient, in_reply_to=h.id,
                               thread=h.thread, handling=h.handling)

    # --- requests (case threads) ---------------------------------------------------------

    async def cases(self, *, state: str | None = None, partner: str | None = None,
                    overdue: bool = False, closed: bool = False) -> list[dict[str, Any]]:
        """Requests of this officer's desks as the gateway records them, soonest due
        first (what the signed headers said: state, due day, desks)."""
        query = [f"overdue={int(overdue)}", f"closed={int(closed)}"]
        if state is not None:
            query.append(f"state={state}")
        if partner is not None:
            query.append(f"partner={partner}")
        result: dict[str, Any] = await self.get_json(f"/v1/cases?{'&'.join(query)}")
        cases: list[dict[str, Any]] = result["cases"]
        return cases

    async def case(self, case_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.get_json(f"/v1/cases/{case_id}")
        return result

    async def move(self, case_id: str, state: str, doc: dict[str, Any], *,
                   due: str | None = None, priority: str | None = None) -> dict[str, Any]:
        """Move request ``case_id`` to ``state`` with a signed status message to the other
        desk; refused here, before anything is sealed, if the lifecycle does not allow it
        (gateway.protocol.cases); the gateways check it again."""
        case = await self.case(case_id)
        mine = set(self.creds.desks)
        mover = case["requester"] if case["requester"] in mine else case["executor"]
        to = case["executor"] if mover == case["requester"] else case["requester"]
        try:
            check_move(case["state"], state, mover, case["requester"], case["executor"])
        except MoveRefused as refused:
            raise ClientError(str(refused), code=refused.code) from None
        # Its handling code and priority carry on: from the case message's signed header
        # (verified; the requester cannot open what it sealed for the other desk).
        h = (await self._verified(case_id))[0].header
        return await self.send("status", to, {**doc, "type": "status", "state": state},
                               priority=priority or h.priority, frm=mover,
                               in_reply_to=case.get("last_move") or case_id,
                               thread=case_id, handling=h.handling, due=due)

    # --- reading -----------------------------------------------------------------------

    async def inbox(self, desk: str, after: int = 0, limit: int | None = None) -> dict[str, Any]:
        desk = self.address(desk)
        query = f"?after={after}" + (f"&limit={limit}" if limit else "")
        result: dict[str, Any] = await self.get_json(f"/v1/desks/{desk}/inbox{query}")
        return result

    async def sent(self, after: int = 0, limit: int | None = None) -> dict[str, Any]:
        """The messages this officer sent, with their status (delivered, read, replied,
        non-delivered, pending): metadata only, from ``GET /v1/sent``."""
        query = f"?after={after}" + (f"&limit={limit}" if limit else "")
        result: dict[str, Any] = await self.get_json(f"/v1/sent{query}")
        return result

    async def sent_ids(self, max_pages: int = 40) -> list[str]:
        """The ids of the messages this officer sent (at most ``max_pages`` pages)."""
        ids: list[str] = []
        after = 0
        for _ in range(max_pages):
            page = await self.sent(after)
            ids.extend(m["id"] for m in page["messages"])
            if page.get("next") is None:
                break
            after = page["next"]
        return ids

    async def open(self, message_id: str) -> OpenedMessage:
        """Fetch, verify the sender against the directory, and decrypt locally."""
        envelope, signer = await self._verified(message_id)
        share = None
        if self.creds.encryption.public.key_id not in envelope.header.recipients:
            share = await self._my_share(envelope)  # sealed before this officer joined
        plain = open_envelope(envelope, self.creds.encryption,
                              share.wrap if share is not None else None)
        doc = payload.decode(plain, envelope.header.kind)
        payload.check_header(doc, envelope.header)
        chain = (await self._unwrap_forward(envelope.header, doc, 1)
                 if envelope.header.kind == "forward" else ())
        return OpenedMessage(envelope, doc,
                             signer.officer, signer.former,
                             share.by if share is not None else None, chain)

    async def _unwrap_forward(self, header: EnvelopeHeader, doc: dict[str, Any],
                              depth: int) -> tuple[Forwarded, ...]:
        """The messages a forward embeds, each verified against its own sender's gateway
        directory: the first sender's signature holds however many hands it went through."""
        if depth > MAX_FORWARD_DEPTH:
            raise CryptoError("a forward nested deeper than this client unwraps",
                              code="bad_forward")
        inner, signer = await self._verify_bytes(base64.b64decode(doc["original"]))
        h = inner.header
        if h.id != header.forwards:
            raise CryptoError("the forward embeds another message than its header names",
                              code="bad_forward")
        if h.handling is not None and header.handling != h.handling:
            raise CryptoError(f"the forward changed the handling code {h.handling}",
                              code="handling_changed")
        inner_doc = payload.decode(
            open_with_content_key(inner, base64.b64decode(doc["content_key"])), h.kind)
        payload.check_header(inner_doc, h)
        permit: bool | None = None
        if header.permit is not None:
            try:
                check_permit(header.permit, signer.key, h.id, header.recipient)
                permit = True
            except CryptoError:
                permit = False
        link = Forwarded(inner, inner_doc, signer.officer, signer.former, permit)
        rest = (await self._unwrap_forward(h, inner_doc, depth + 1)
                if h.kind == "forward" else ())
        return (link, *rest)

    async def forward(self, message_id: str, to: str, text: str = "", *,
                      permit: str | None = None, priority: str | None = None
                      ) -> dict[str, Any]:
        """Forward a message this officer can open to desk ``to``: the original envelope,
        as its sender signed it, and its content key, sealed for ``to``'s officers."""
        opened = await self.open(message_id)
        envelope, h = opened.envelope, opened.header
        wrap = None
        if self.creds.encryption.public.key_id not in h.recipients:
            wrap = (await self._my_share(envelope)).wrap
        key = content_key_of(envelope, self.creds.encryption, wrap)
        doc: dict[str, Any] = {"type": "forward",
                               "original": base64.b64encode(envelope.raw).decode("ascii"),
                               "content_key": base64.b64encode(key).decode("ascii")}
        if text:
            doc["text"] = text
        frm = h.recipient if h.recipient in self.creds.desks else h.sender
        return await self.send("forward", to, doc, priority=priority or h.priority, frm=frm,
                               handling=h.handling, forwards=h.id, permit=permit)

    async def permit(self, message_id: str, to: str) -> str:
        """This officer's permission for its message ``message_id`` to go on to ``to``."""
        envelope, _ = await self._verified(message_id)
        if envelope.signer != self.creds.signing.public.key_id:
            raise ClientError("only the officer who sent a message can permit it to go on",
                              code="not_the_sender")
        return sign_permit(self.creds.signing, message_id, self.address(to))

    async def _verified(self, message_id: str) -> tuple[Envelope, Signer]:
        """A message whose sender's signature verified against the directory."""
        _, data, _ = await self.request("GET", f"/v1/messages/{message_id}")
        return await self._verify_bytes(data)

    async def _verify_bytes(self, data: bytes) -> tuple[Envelope, Signer]:
        """An envelope whose sender's signature verified against its gateway's
        directory (this gateway's, or a partner's through it)."""
        key_id = read_signer(data)
        # The sender's gateway, unverified, only says whose directory holds the key.
        gateway = peek_header(data).sender.partition("@")[2]
        signer = (await self.verified_directory(gateway=gateway)).signer(key_id)
        if signer is None:  # perhaps an officer enrolled since we fetched the directory
            signer = (await self.verified_directory(True, gateway)).signer(key_id)
        if signer is None:
            raise CryptoError(f"the sender key {key_id} is not in the directory",
                              code="unknown_sender")
        envelope = verify_envelope(data, signer.key)
        check_signed_while_bound(signer, envelope.header.sender, envelope.header.created)
        return envelope, signer

    async def _my_share(self, envelope: Envelope) -> Share:
        """This officer's history share of ``envelope``, signed by a proven member of the
        desk it was sent to; NotARecipientError if nobody shared it."""
        h = envelope.header
        try:
            _, body, _ = await self.request("GET", f"/v1/messages/{h.id}/share")
        except ApiError as exc:
            if exc.code == "no_share":
                raise NotARecipientError("this message was sealed before you joined the desk "
                                         "and nobody shared it with you") from None
            raise
        share = Share.from_json(jsontext.loads(body))
        if share.message != h.id:
            raise CryptoError("the share is for another message", code="bad_share")
        gateway = h.recipient.partition("@")[2]
        verified = await self.verified_directory(gateway=gateway)
        key = verified.proven_member_key(h.recipient, share.by,
                                         await self.gateway_keys(gateway))
        text = share_text(h.id, envelope.digest, self.creds.officer_id,
                          self.creds.encryption.public.key_id, share.wrap, share.by, share.at)
        try:
            key.verify(text, share.signature)
        except BadSignatureError:
            raise CryptoError(f"the share is not signed by {share.by}",
                              code="bad_share") from None
        return share

    async def share_history(self, desk: str, officer: str, *, since_ms: int | None = None,
                            threads: frozenset[str] | None = None) -> int:
        """Share with ``officer``, a member of ``desk`` (admitted after these messages), the
        content keys of the desk's messages delivered since ``since_ms`` (default: the last
        180 days) or, with ``threads``, those of these threads. How many were stored."""
        desk = self.address(desk)
        entry = await self._desk(desk, refresh=True)  # every member proven, the newcomer too
        member = next((m for m in entry.members if m["officer"] == officer), None)
        if member is None:
            raise ClientError(f"{officer} is not a member of {desk}", code="not_a_member")
        recipient = EncryptionPublicKey.from_b64(member["enc_key"])
        since = (self.clock.now_ms() - DEFAULT_HISTORY_DAYS * DAY_MS if since_ms is None
                 else since_ms)
        batch: list[dict[str, Any]] = []
        stored, after = 0, 0
        while True:
            page = await self.inbox(desk, after)
            for item in page["messages"]:
                after = item["cursor"]
                if item["delivered"] < since or (threads is not None
                                                 and item["thread"] not in threads):
                    continue
                share = await self._share_one(item["id"], officer, recipient)
                if share is not None:
                    batch.append(share)
                if len(batch) == MAX_SHARES:
                    stored += await self._post_shares(desk, officer, batch)
                    batch = []
            if page.get("next") is None:
                break
        if batch:
            stored += await self._post_shares(desk, officer, batch)
        return stored

    async def _share_one(self, message_id: str, officer: str,
                         recipient: EncryptionPublicKey) -> dict[str, Any] | None:
        envelope, _ = await self._verified(message_id)
        if recipient.key_id in envelope.header.recipients:
            return None  # sealed for the officer already
        mine = None
        if self.creds.encryption.public.key_id not in envelope.header.recipients:
            mine = (await self._my_share(envelope)).wrap  # passed on from our own share
        wrap = rewrap_content_key(envelope, self.creds.encryption, recipient, mine)
        at = self.clock.now_ms()
        text = share_text(message_id, envelope.digest, officer, recipient.key_id, wrap,
                          self.creds.officer_id, at)
        return Share(message_id, wrap, self.creds.officer_id, at,
                     self.creds.signing.sign(text)).to_json()

    async def _post_shares(self, desk: str, officer: str, batch: list[dict[str, Any]]) -> int:
        _, body, _ = await self.request("POST", f"/v1/desks/{desk}/shares",
                                        json={"officer": officer, "shares": batch})
        return int(jsontext.loads(body)["stored"])

    async def acknowledge(self, message: OpenedMessage) -> dict[str, Any]:
        read_ms = self.clock.now_ms()
        signature = self.creds.signing.sign(
            read_text(message.header.id, message.envelope.digest, read_ms)
        )
        _, body, _ = await self.request(
            "POST", f"/v1/messages/{message.header.id}/read",
            json={"read": read_ms, "signature": base64.b64encode(signature).decode("ascii")},
        )
        result: dict[str, Any] = jsontext.loads(body)
        return result

    async def read(self, message_id: str) -> OpenedMessage:
        """Open a message and send its signed read acknowledgement."""
        message = await self.open(message_id)
        if message.header.recipient in self.creds.desks:
            await self.acknowledge(message)
        return message

    async def status(self, message_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.get_json(f"/v1/messages/{message_id}/status")
        return result

    async def stream(self, desks: list[str] | None = None,
                     connected: asyncio.Event | None = None,
                     since: int | None = None) -> AsyncIterator[tuple[str, Any]]:
        """Live events as (kind, data) until the server ends the stream.

        ``connected`` is set once the gateway has subscribed this stream: from then on no
        event is missed. With ``since`` (a notice cursor) the gateway first sends the
        desks' stored notices after it, then live events. The gateway sends a keep-alive
        every 15 s, so a connection that stays silent for 45 s is taken as dead (aiohttp
        raises a timeout).
        """
        query = "&".join([f"desk={d}" for d in desks or []]
                         + ([f"since={since}"] if since is not None else []))
        for attempt in (0, 1):
            if self._token is None:
                await self.sign_in()
            response = await self.http.get(
                self._url("/v1/stream" + (f"?{query}" if query else "")),
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=aiohttp.ClientTimeout(total=None, sock_read=STREAM_SILENCE_SECONDS),
            )
            if response.status == 401 and attempt == 0:
                response.release()
                self._token = None  # the gateway restarted or the session ended: sign in
                continue
            break
        async with response:
            await _raise_for(response)
            kind, data = None, []
            async for raw in response.content:
                line = raw.decode("utf-8").rstrip("\n")
                if line == ": connected" and connected is not None:
                    connected.set()
                elif line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data.append(line[6:])
                elif line == "" and kind is not None:
                    yield kind, jsontext.loads("\n".join(data)) if data else {}
                    kind, data = None, []

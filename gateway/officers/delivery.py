"""Delivery to desks on this gateway: what an officer may send, read and acknowledge.

Every check happens before anything is written, so a refused request changes nothing:

* **send**: the envelope must be signed by the officer making the request, verify, come
  from one of the officer's desks, go to a desk that exists, be wrapped for exactly the
  desk's current officers, not be expired, fit within the limits a partner desk's gateway
  states in its descriptor (413 ``too_large_for_partner``: refused now rather than by the
  partner later), and, if it answers a message, answer one its desk can see, in the same
  thread; a ``status`` that moves a request must be a move its lifecycle allows, made by
  the desk it belongs to (gateway.protocol.cases). Then the store accepts it (message,
  ledger events, inbox row and the request's state in one commit).
* **inbox / fetch / status**: only for officers of the desk concerned.
* **read**: a signed acknowledgement over ``fpg read v1\\n<message id>\\n<envelope
  SHA-256>\\n<read time ms>\\n`` by an officer of the recipient desk. For a message
  that came from a partner, the acknowledgement is also queued to travel back there.

Messages to desks of partner gateways go to that partner's outbox (gateway.federation.sender).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from gateway.clock import Clock
from gateway.crypto.envelope import Envelope, read_signer, verify_envelope_on
from gateway.crypto.keys import ROLE_OFFICER_SIGNING, VerifyKey
from gateway.crypto.worker import CryptoWorker
from gateway.errors import (
    BadSignatureError,
    ClientError,
    ConflictError,
    CryptoError,
    ForbiddenError,
    GoneError,
    NotFoundError,
    TooLargeError,
)
from gateway.federation.partners import Partner, Partners
from gateway.ledger.events import decode_entry
from gateway.officers.admission import may_see
from gateway.officers.directory import Directory, DirectoryService, Officer
from gateway.officers.quotas import Quotas
from gateway.protocol.cases import MoveRefused, check_status
from gateway.protocol.forwarding import check_permit
from gateway.protocol.officers import read_claim, read_text
from gateway.store import (
    CONFLICT,
    DUPLICATE,
    REFUSED,
    AcceptOutcome,
    DeliveryStore,
    InboxItem,
    IncomingMessage,
    ReadAck,
    SentItem,
    StoredMessage,
)


def _refused_move(code: str, message: str) -> ClientError:
    """The error for a status move the request's lifecycle does not allow."""
    if code == "not_your_move":
        return ForbiddenError(message, code=code)
    return ConflictError(message, code=code)


class Delivery:
    def __init__(self, store: DeliveryStore, directory: DirectoryService, clock: Clock,
                 worker: CryptoWorker, *, gateway: str, max_envelope: int,
                 clock_skew_ms: int, partners: Partners | None = None,
                 quotas: Quotas | None = None) -> None:
        self.store = store
        self.quotas = quotas
        self.worker = worker
        self.directory = directory
        self.clock = clock
        self.gateway = gateway
        self.max_envelope = max_envelope
        self.clock_skew_ms = clock_skew_ms
        self.partners = partners

    # --- sending -----------------------------------------------------------------------

    async def send(self, officer: Officer, data: bytes) -> AcceptOutcome:
        if read_signer(data, max_size=self.max_envelope) != officer.sign_key.key_id:
            raise ForbiddenError("the envelope is not signed by the signed-in officer",
                                 code="signer_mismatch")
        envelope = await verify_envelope_on(self.worker, data, officer.sign_key,
                                            max_size=self.max_envelope)
        h = envelope.header
        # A resend of what is already stored is answered "duplicate" whatever has changed
        # since (expiry, desk members), so a client that lost the first answer may retry.
        # Recent messages are known from memory; older ones are looked up only when a
        # check below refuses the envelope.
        recent = self.store.recent_digest(h.id)
        if recent is not None:
            return self._resent(h.id, envelope.digest, recent)
        try:
            return await self._accept(officer, envelope)
        except ClientError:
            stored = await self.store.get_message(h.id)
            if stored is None:
                raise
            return self._resent(h.id, envelope.digest, stored.digest)

    @staticmethod
    def _resent(message_id: str, digest: str, stored_digest: str) -> AcceptOutcome:
        if stored_digest != digest:
            raise ConflictError("another message already has this id", code="id_conflict")
        return AcceptOutcome(DUPLICATE, message_id)

    async def _accept(self, officer: Officer, envelope: Envelope) -> AcceptOutcome:
        h = envelope.header
        directory = await self.directory.get()
        if h.sender not in officer.desks:
            raise ForbiddenError(f"you are not an officer of {h.sender}", code="not_a_member")
        partner = self._partner(h.recipient)
        if partner is not None:
            address, wanted = h.recipient, self._partner_desk_keys(partner, h.recipient)
            _check_partner_limits(partner, len(envelope.raw), len(officer.binding))
            _check_partner_fields(partner, h.extensions)
        else:
            desk = self._desk(directory, h.recipient)
            address, wanted = desk.address, desk.recipient_key_ids
        now = self.clock.now_ms()
        if h.expires <= now:
            raise ClientError("the message has already expired", code="expired")
        if h.created > now + self.clock_skew_ms:
            raise ClientError("created lies in the future; check the client's clock",
                              code="bad_time")
        if frozenset(h.recipients) != wanted:
            raise ConflictError(
                f"the envelope must be sealed for the {len(wanted)} current officer(s) of "
                f"{address}; fetch the directory again", code="recipients_mismatch"
            )
        if h.in_reply_to is not None:
            await self._check_answer(envelope)
        if h.state is not None:  # asked first so that a refused move costs no quota;
            await self._check_move(envelope)  # the store asks again as it commits
        if h.kind == "forward":
            await self._check_forward(envelope, directory)
        actor = officer.sign_key.key_id
        if partner is not None:
            message = IncomingMessage(envelope, now, "local", actor, relay_to=partner.id)
        else:
            message = IncomingMessage(envelope, now, "local", actor, deliver_to=address)
        if self.quotas is not None:  # the last check: a refusal above costs no quota
            self.quotas.charge(officer.id, h.sender, len(envelope.raw))
        outcome = await self.store.accept(message)
        if outcome.status == CONFLICT:
            raise ConflictError("another message already has this id", code="id_conflict")
        if outcome.status == REFUSED and outcome.refusal is not None:
            raise _refused_move(*outcome.refusal)
        if partner is not None:
            partner.queued.set()
        return outcome

    def _partner(self, address: str) -> Partner | None:
        gateway = address.partition("@")[2]
        if self.partners is None or gateway == self.gateway:
            return None
        return self.partners.get(gateway)

    @staticmethod
    def _partner_desk_keys(partner: Partner, address: str) -> frozenset[str]:
        entry = partner.verified_directory().get(address)
        if entry is None:
            raise NotFoundError(f"no desk {address}", code="unknown_desk")
        return frozenset(m["enc_key_id"] for m in entry.members)

    def _desk(self, directory: Directory, address: str) -> Any:
        desk = directory.desk(address)
        if desk is None:
            if "@" not in address:
                raise NotFoundError(f"no desk {address!r}: desk addresses look like "
                                    "desk@gateway", code="unknown_desk")
            gateway = address.partition("@")[2]
            if gateway != self.gateway:
                raise NotFoundError(f"gateway {gateway} is not a partner of this gateway",
                                    code="unknown_gateway")
            raise NotFoundError(f"no desk {address}", code="unknown_desk")
        return desk

    async def _check_answer(self, envelope: Envelope) -> None:
        h = envelope.header
        assert h.in_reply_to is not None
        original = await self.store.get_message(h.in_reply_to)
        if original is None or h.sender not in (original.recipient, original.sender):
            raise ClientError("in_reply_to names no message your desk has", code="bad_reply")
        if h.thread != original.thread:
            raise ClientError("a reply stays in the thread of the message it answers",
                              code="bad_reply")
        if h.kind == "handover" and original.kind != "hotline":
            raise ClientError("a handover receipt answers a hotline alert", code="bad_reply")
        if h.kind == "handover" and h.sender != original.recipient:
            raise ForbiddenError("only the desk a message was sent to acknowledges a handover "
                                 "it announced", code="not_the_recipient")

    async def _check_forward(self, envelope: Envelope, directory: Directory) -> None:
        """A forward passes on a message the sending desk has, with its handling code; an
        H2 message only with a permit by the officer who signed it (docs/PROTOCOL.md 3.9)."""
        h = envelope.header
        assert h.forwards is not None
        original = await self.store.get_message(h.forwards)
        if original is None or h.sender not in (original.recipient, original.sender):
            raise ConflictError("forwards names no message your desk has", code="bad_forward")
        if original.handling is not None and h.handling != original.handling:
            raise ClientError(f"a forward keeps the handling code of what it forwards "
                              f"({original.handling})", code="handling_changed")
        if original.handling != "H2":
            return
        if h.permit is None:
            raise ForbiddenError(
                f"{original.id} is H2: it goes on only with the permission of whoever sent it "
                f"({original.sender}); ask for it (gateway-client permit) and forward with "
                "--permit", code="handling_forbids_onward")
        key = self._signing_key(original, directory)
        try:
            if key is None:
                raise BadSignatureError("the sender's key is not known here")
            check_permit(h.permit, key, original.id, h.recipient)
        except CryptoError as exc:
            raise ForbiddenError(f"the permit for {original.id} to go on to {h.recipient} "
                                 f"does not hold ({exc.message})",
                                 code="handling_forbids_onward") from None

    def _signing_key(self, message: StoredMessage, directory: Directory) -> VerifyKey | None:
        """The signing key of whoever signed ``message``: an officer of this gateway
        (former ones too) or of the partner it came from."""
        if message.actor is None:
            return None
        if message.origin == "local":
            officer = directory.officer_by_key(message.actor)
            return officer.sign_key if officer is not None else None
        partner = self.partners.get(message.origin) if self.partners is not None else None
        if partner is None or partner.directory is None:
            return None
        for entry in partner.directory.values():
            for member in entry.members:
                if member.get("sign_key_id") == message.actor:
                    return VerifyKey.from_b64(member["sign_key"], ROLE_OFFICER_SIGNING)
        return None

    async def _check_move(self, envelope: Envelope) -> None:
        h = envelope.header
        try:
            check_status(h, await self.store.case(h.thread))
        except MoveRefused as refused:
            raise _refused_move(refused.code, str(refused)) from None

    # --- reading -----------------------------------------------------------------------

    async def check_desk(self, officer: Officer, desk: str) -> None:
        """404 for a desk that does not exist here, 403 for one the officer is not in."""
        self._desk(await self.directory.get(), desk)
        if desk not in officer.desks:
            raise ForbiddenError(f"you are not an officer of {desk}", code="not_a_member")

    async def inbox(self, officer: Officer, desk: str, after: int, limit: int) -> list[InboxItem]:
        await self.check_desk(officer, desk)
        return await self.store.inbox(desk, after, limit)

    async def sent(self, officer: Officer, after: int, limit: int) -> list[SentItem]:
        """The messages this officer sent (never another officer's, even of its desks)."""
        return await self.store.sent(officer.sign_key.key_id, after, limit)

    async def fetch(self, officer: Officer, message_id: str) -> StoredMessage:
        """A message the officer's desks sent or received, with its envelope; 404 for
        anything else, 410 once its envelope was deleted after the retention period."""
        message = await self.visible(officer, message_id)
        if not message.envelope:
            raise GoneError(f"message {message_id} was deleted after the retention period; "
                            "its digest and ledger entries remain", code="purged")
        return message

    async def visible(self, officer: Officer, message_id: str) -> StoredMessage:
        """A message the officer's desks sent or received (its envelope may be gone)."""
        message = await self.store.get_message(message_id)
        if message is None or not ({message.recipient, message.sender} & officer.desks):
            raise NotFoundError(f"no message {message_id} for your desks",
                                code="unknown_message")
        return message

    async def status(self, officer: Officer, message_id: str) -> dict[str, Any]:
        """A message's progress, for officers of its desks and of their supervisor desks
        (who watch over those desks' service levels; the envelope stays for the desks)."""
        message = await self.store.get_message(message_id)
        if message is None or not ({message.recipient, message.sender} & officer.desks):
            directory = await self.directory.get()
            if message is None or not any(may_see(officer, directory, desk) for desk in
                                          (message.sender, message.recipient)):
                raise NotFoundError(f"no message {message_id} for your desks",
                                    code="unknown_message")
        seqs = await self.store.events_of_message(message_id)
        rows = await self.store.ledger_rows_at(seqs)
        events = [decode_entry(rows[s].entry) for s in seqs if s in rows]
        return {
            "id": message.id,
            "digest": message.digest,
            "from": message.sender,
            "to": message.recipient,
            "accepted": message.accepted_ms,
            "first_read": message.first_read_ms,
            "first_reply": message.first_reply_ms,
            "reads": [{"officer": o, "read": t, "claimed": read_claim(ack)}
                      for o, t, ack in await self.store.reads_of(message_id)],
            "events": events,
            "notices": [n.decode("utf-8") for n in await self.store.notices_of(message_id)],
        }

    async def read(self, officer: Officer, message_id: str, read_ms: int,
                   signature_b64: str) -> str:
        message = await self.fetch(officer, message_id)
        if message.recipient not in officer.desks:
            raise ForbiddenError("only officers of the recipient desk acknowledge reading",
                                 code="not_a_member")
        # The gateway records the read at its own time; the officer's signed time is kept
        # beside it, and must be near now: a read cannot be back-dated or post-dated.
        now = self.clock.now_ms()
        if abs(read_ms - now) > self.clock_skew_ms:
            raise ClientError(
                f"the signed read time is more than {self.clock_skew_ms // 1000} s from the "
                "gateway's clock; check the device's clock", code="bad_time")
        try:
            signature = base64.b64decode(signature_b64, validate=True)
            ack = read_text(message_id, message.digest, read_ms)
            officer.sign_key.verify(ack, signature)
        except (binascii.Error, ValueError, BadSignatureError):
            raise ClientError("the read acknowledgement's signature does not verify",
                              code="bad_signature") from None
        # A message that came from a partner: the acknowledgement travels back to it.
        partner = None if message.origin == "local" else self._partner(message.sender)
        recorded = await self.store.record_read(ReadAck(
            message_id, officer.id, officer.sign_key.key_id, now, ack + signature,
            forward_to=partner.id if partner is not None else None,
            binding=officer.binding if partner is not None else None,
        ))
        if partner is not None:
            partner.queued.set()
        return recorded



def _check_partner_limits(partner: Partner, size: int, binding: int) -> None:
    """Refuse (413 ``too_large_for_partner``) a message larger than the partner says it
    accepts: its envelope limit, or its batch limit, which must hold the envelope in
    base64 with the officer's binding (docs/PROTOCOL.md 5, 10.4). Limits not stated (an
    older partner, or one not heard from yet) refuse nothing here."""
    limits = partner.descriptor.limits if partner.descriptor is not None else None
    if limits is None or limits.fits(size, binding):
        return
    largest = limits.largest_envelope(binding)
    assert largest is not None  # (something refused it)
    raise TooLargeError(
        f"this message is {_size(size)} sealed, attachments included; {partner.id} accepts "
        f"messages of at most {_size(largest)} ({largest} bytes). Make the attachments "
        f"smaller, or send them in parts, each in its own message",
        code="too_large_for_partner")


def _check_partner_fields(partner: Partner, fields: frozenset[str]) -> None:
    """Refuse (400 ``partner_lacks_feature``) a message whose header carries an optional
    field the partner's descriptor does not list: it would refuse it (docs/PROTOCOL.md
    3.2, 5). A partner not heard from yet refuses nothing here."""
    if not fields or partner.descriptor is None:
        return
    missing = sorted(fields - partner.descriptor.header_fields)
    if missing:
        raise ClientError(
            f"{partner.id} does not accept the header field(s) {', '.join(missing)} (its "
            "gateway is older): send it without a handling code, due day or case state",
            code="partner_lacks_feature")


def _size(n: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"

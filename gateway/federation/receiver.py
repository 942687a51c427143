"""The receiving side of the relay: batches and read acknowledgements from partners.

A batch is accepted only from a partner whose hop signature verifies. Each message is
then checked on its own: the sending officer's binding must be signed by the calling
partner and cover the sender desk and the time; the envelope must verify with the
officer's key; the recipient desk must exist here and at least one of its current officers
must be able to open it; it must not have expired, nor have been created further ahead of
this gateway's clock than the clocks of a client and two gateways may differ. Accepted
messages are committed together (group commit) before any receipt is sent; the receipts
are signed while that commit runs. A resend of a stored message gets a ``duplicate``
receipt, which is only ever given for a message that is durably stored.

The sending side is gateway.federation.sender.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from collections.abc import Coroutine
from typing import Any, NamedTuple

import structlog

from gateway.clock import Clock
from gateway.crypto.envelope import Envelope, read_signer, verify_envelopes_on
from gateway.crypto.keys import SIGNATURE_SIZE, VerifyKey
from gateway.crypto.worker import CryptoWorker
from gateway.errors import ClientError, CryptoError, MalformedError
from gateway.federation.identity import Identity
from gateway.federation.partners import Partner
from gateway.federation.receipts import ACCEPTED, DUPLICATE, REJECTED, Receipt
from gateway.officers.directory import Directory, DirectoryService
from gateway.protocol import jsontext
from gateway.protocol.officers import READ_LINE, Binding, read_text
from gateway.store import (
    CONFLICT,
    READ_DUPLICATE,
    READ_RECORDED,
    REFUSED,
    IncomingMessage,
    ReadAck,
    ReceiverStore,
)

log = structlog.get_logger("gateway.federation.receiver")

BATCH_MEDIA_TYPE = "application/vnd.fpg.batch+json"
READS_MEDIA_TYPE = "application/vnd.fpg.reads+json"
MAX_BATCH_ITEMS = 5000
MAX_READ_ACK = 1024  # an acknowledgement's text and signature
READ_RECORDED_OUTCOME, READ_DUPLICATE_OUTCOME = "recorded", "duplicate"
READ_OUTCOMES = (READ_RECORDED_OUTCOME, READ_DUPLICATE_OUTCOME, REJECTED)
_SIGN_CHUNK = 16  # receipts signed between two turns of the loop (about 0.3 to 1 ms)
# Envelopes of a relay batch decoded and prepared while the chunk before them is checked
# on the worker's threads (a chunk this size is split over both; see gateway.crypto.worker).
_VERIFY_CHUNK = 64


class Receiver:
    """Checks, stores and answers the batches partners relay to this gateway."""

    def __init__(self, store: ReceiverStore, directory: DirectoryService, identity: Identity,
                 clock: Clock, worker: CryptoWorker, max_envelope: int, *,
                 max_ahead_ms: int) -> None:
        self.store = store
        self.worker = worker
        self.directory = directory
        self.identity = identity
        self.clock = clock
        self.max_envelope = max_envelope
        # How far an envelope's ``created`` may lie ahead of this gateway's clock: the
        # client's skew the sending gateway allowed, plus the two gateways' (hop window).
        self.max_ahead_ms = max_ahead_ms

    async def receive(self, partner: Partner, caller_key: VerifyKey,
                      body: bytes) -> tuple[list[str], set[str]]:
        """One signed receipt (as text) per message of the batch, in order; and the signing
        key ids of the officers whose messages were accepted."""
        try:
            doc = jsontext.loads(body)
            items = doc["messages"]
            if doc.get("v") != 1 or not isinstance(items, list):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise ClientError("a relay batch is a JSON object {\"v\": 1, \"messages\": [...]}",
                              code="bad_batch") from None
        if not 1 <= len(items) <= MAX_BATCH_ITEMS:
            raise ClientError(f"a relay batch holds 1 to {MAX_BATCH_ITEMS} messages",
                              code="bad_batch")
        # Checks each message on its own, looks up all their ids at once, then submits
        # every accept in batch order (the store commits them together and keeps that
        # order in the inbox).
        now = self.clock.now_ms()
        checked = await self._check_all(partner, caller_key, items, now)
        stored = await self.store.stored_digests(
            [c.header.id for c in checked if isinstance(c, Envelope)])
        directory = await self.directory.get()
        receipts: list[Receipt | None] = []
        accepts: list[tuple[int, Envelope, Any]] = []
        for envelope_or_receipt in checked:
            decided = self._decide(partner, envelope_or_receipt, stored, directory, now)
            if isinstance(decided, Receipt):
                receipts.append(decided)
                continue
            envelope = decided
            accepts.append((len(receipts), envelope, self.store.accept(IncomingMessage(
                envelope, now, partner.id, envelope.signer,
                deliver_to=envelope.header.recipient))))
            receipts.append(None)
        # While the accepts are planned and committed (the writer thread, the fsync), the
        # receipts are signed, those of the accepts as "accepted", which nearly all will
        # be. None is sent before the commit: an outcome that turns out different (a
        # concurrent accept of the same id) is signed again from the store's answer.
        for i, envelope, _ in accepts:
            receipts[i] = self._receipt(partner, envelope.header.id, envelope.digest,
                                        ACCEPTED, None, now)
        signed = await self._sign_all([r for r in receipts if r is not None])
        assert len(signed) == len(items)
        for i, envelope, pending in accepts:
            outcome = await pending
            if outcome.status == ACCEPTED:
                continue
            if outcome.status == CONFLICT:
                status, reason = REJECTED, "id_conflict"
            elif outcome.status == REFUSED and outcome.refusal is not None:
                status, reason = REJECTED, outcome.refusal[0]  # a status for no request
            else:
                status, reason = outcome.status, None
            (signed[i],) = await self._sign_all([self._receipt(
                partner, envelope.header.id, envelope.digest, status, reason, now)])
        return signed, {envelope.signer for _, envelope, _ in accepts}

    async def _sign_all(self, receipts: list[Receipt]) -> list[str]:
        """Each receipt signed, as text; a few at a time, giving the loop back between
        them so that the committer (and every other request) keeps moving meanwhile."""
        key = self.identity.signing_key
        signed: list[str] = []
        for start in range(0, len(receipts), _SIGN_CHUNK):
            await asyncio.sleep(0)
            signed.extend(r.sign(key).decode("utf-8")
                          for r in receipts[start : start + _SIGN_CHUNK])
        return signed

    async def receive_reads(self, partner: Partner, caller_key: VerifyKey,
                            body: bytes) -> list[dict[str, str | None]]:
        """Record the read acknowledgements a partner's officers made of messages this
        gateway relayed to them; one outcome per acknowledgement, in order."""
        try:
            doc = jsontext.loads(body)
            items = doc["reads"]
            if doc.get("v") != 1 or not isinstance(items, list):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise ClientError("read acknowledgements are a JSON object "
                              "{\"v\": 1, \"reads\": [...]}", code="bad_batch") from None
        if not 1 <= len(items) <= MAX_BATCH_ITEMS:
            raise ClientError(f"a batch holds 1 to {MAX_BATCH_ITEMS} read acknowledgements",
                              code="bad_batch")
        results: list[dict[str, str | None]] = []
        for item in items:
            try:
                ack = await self._check_read(partner, caller_key, item)
            except _Refused as refused:
                log.info("read_ack_rejected", partner=partner.id, message=refused.message_id,
                         reason=refused.reason)
                results.append({"id": refused.message_id, "outcome": REJECTED,
                                "reason": refused.reason})
                continue
            recorded = await self.store.record_read(ack)
            outcome = READ_DUPLICATE_OUTCOME if recorded == READ_DUPLICATE else \
                READ_RECORDED_OUTCOME
            assert recorded in (READ_RECORDED, READ_DUPLICATE)  # the message was found
            results.append({"id": ack.message_id, "outcome": outcome, "reason": None})
        return results

    async def _check_read(self, partner: Partner, caller_key: VerifyKey, item: Any) -> ReadAck:
        """A partner officer's read acknowledgement, checked; raises _Refused."""
        try:
            ack = base64.b64decode(item["ack"], validate=True)
            binding_note = base64.b64decode(item["binding"], validate=True)
            if not SIGNATURE_SIZE < len(ack) <= MAX_READ_ACK:
                raise ValueError
            text, signature = ack[:-SIGNATURE_SIZE], ack[-SIGNATURE_SIZE:]
            line, message_id, digest, read_field, end = text.decode("ascii").split("\n")
            read_ms = int(read_field)
            if line != READ_LINE or end != "" or read_text(message_id, digest, read_ms) != text:
                raise ValueError
        except (KeyError, TypeError, binascii.Error, ValueError, UnicodeDecodeError):
            raise _Refused("", "", "malformed_item") from None
        try:
            binding = partner.open_binding(binding_note, caller_key)
        except CryptoError:
            raise _Refused(message_id, digest, "bad_binding") from None
        message = await self.store.get_message(message_id)
        if message is None or message.digest != digest:
            raise _Refused(message_id, digest, "unknown_message")
        if (message.recipient.partition("@")[2] != partner.id
                or message.recipient not in binding.desks):
            raise _Refused(message_id, digest, "not_a_member")
        if not binding.not_before <= read_ms < binding.not_after:
            raise _Refused(message_id, digest, "outside_binding")
        try:
            binding.sign_key.verify(text, signature)
        except CryptoError:
            raise _Refused(message_id, digest, "bad_signature") from None
        # Recorded when it arrived here, like an acknowledgement of this gateway's own
        # officers: the signed read time (checked against the binding) stays in ``ack``.
        return ReadAck(message_id, f"{binding.officer}@{partner.id}",
                       binding.sign_key.key_id, self.clock.now_ms(), ack)

    async def _check_all(self, partner: Partner, caller_key: VerifyKey, items: list[Any],
                         now: int) -> list[Receipt | Envelope]:
        """Each item's verified envelope, or the receipt rejecting it. The signatures are
        checked on the crypto worker's threads, a chunk at a time: while one chunk is
        checked there, the next is decoded and prepared here."""
        chunks: list[tuple[list[_Refused | _Unverified],
                           Coroutine[Any, Any, list[Envelope | CryptoError]]]] = []
        checked: list[Receipt | Envelope] = []
        try:
            for start in range(0, len(items), _VERIFY_CHUNK):
                prepared: list[_Refused | _Unverified] = []
                for item in items[start : start + _VERIFY_CHUNK]:
                    try:
                        prepared.append(self._prepare(partner, caller_key, item))
                    except _Refused as refused:
                        prepared.append(refused)
                verifying = verify_envelopes_on(
                    self.worker, [(p.data, p.binding.sign_key) for p in prepared
                                  if isinstance(p, _Unverified)], max_size=self.max_envelope)
                chunks.append((prepared, verifying))
                await asyncio.sleep(0)  # the chunk's checks go to the worker now
            for prepared, verifying in chunks:
                outcomes = iter(await verifying)
                for p in prepared:
                    try:
                        if isinstance(p, _Refused):
                            raise p
                        outcome = next(outcomes)
                        if isinstance(outcome, MalformedError):
                            # The signature verified: what it covers is not an envelope.
                            raise _Refused("", p.digest, "malformed_envelope")
                        if isinstance(outcome, CryptoError):
                            raise _Refused("", p.digest, "bad_signature")
                        checked.append(self._bound(partner, p, outcome))
                    except _Refused as refused:
                        checked.append(self._receipt(partner, refused.message_id,
                                                     refused.digest, REJECTED, refused.reason,
                                                     now))
        finally:
            # If the request was cancelled meanwhile: the chunks not awaited yet are closed
            # (closing one already awaited does nothing).
            for _, verifying in chunks:
                verifying.close()
        return checked

    def _decide(self, partner: Partner, checked: Receipt | Envelope,
                stored: dict[str, str], directory: Directory, now: int) -> Receipt | Envelope:
        """A receipt now (rejected, duplicate), or the verified envelope to accept."""
        if isinstance(checked, Receipt):
            return checked
        envelope, h = checked, checked.header
        if h.id in stored:
            return self._resent(partner, envelope, stored[h.id], now)
        desk = directory.desk(h.recipient)
        reason = None
        if desk is None:
            reason = "unknown_desk"
        elif not desk.recipient_key_ids & frozenset(h.recipients):
            reason = "no_current_recipient"
        elif h.expires <= now:
            reason = "expired"
        elif h.created > now + self.max_ahead_ms:
            reason = "bad_time"
        if reason is not None:
            return self._receipt(partner, h.id, envelope.digest, REJECTED, reason, now)
        return envelope

    def _prepare(self, partner: Partner, caller_key: VerifyKey, item: Any) -> _Unverified:
        """The envelope and the binding of the officer the partner vouches for, whose key
        must have signed it; raises _Refused."""
        try:
            data = base64.b64decode(item["envelope"], validate=True)
            binding_note = base64.b64decode(item["binding"] or "", validate=True)
        except (KeyError, TypeError, binascii.Error, ValueError):
            raise _Refused("", "", "malformed_item") from None
        digest = hashlib.sha256(data).hexdigest()
        try:
            signer = read_signer(data, max_size=self.max_envelope)
        except CryptoError:
            raise _Refused("", digest, "malformed_envelope") from None
        try:
            binding = partner.open_binding(binding_note, caller_key)
        except CryptoError:
            raise _Refused("", digest, "bad_binding") from None
        if binding.sign_key.key_id != signer:
            raise _Refused("", digest, "bad_binding")
        return _Unverified(data, digest, binding)

    def _bound(self, partner: Partner, unverified: _Unverified, envelope: Envelope) -> Envelope:
        """The verified envelope, if its officer's binding covers it; raises _Refused."""
        h, binding = envelope.header, unverified.binding
        if (h.sender not in binding.desks or h.sender.partition("@")[2] != partner.id
                or not binding.not_before <= h.created < binding.not_after):
            raise _Refused(h.id, unverified.digest, "sender_not_bound")
        if h.recipient.partition("@")[2] != self.identity.gateway_id:
            raise _Refused(h.id, unverified.digest, "not_for_this_gateway")
        return envelope

    def _resent(self, partner: Partner, envelope: Envelope, stored_digest: str,
                now: int) -> Receipt:
        h = envelope.header
        if stored_digest != envelope.digest:
            return self._receipt(partner, h.id, envelope.digest, REJECTED, "id_conflict", now)
        return self._receipt(partner, h.id, envelope.digest, DUPLICATE, None, now)

    def _receipt(self, partner: Partner, message_id: str, digest: str, outcome: str,
                 reason: str | None, now: int) -> Receipt:
        if outcome == REJECTED:
            log.info("relay_rejected", partner=partner.id, message=message_id, reason=reason)
        assert outcome in (ACCEPTED, DUPLICATE, REJECTED)
        return Receipt(self.identity.gateway_id, partner.id, message_id, digest, outcome,
                       reason, now)


class _Unverified(NamedTuple):
    data: bytes
    digest: str
    binding: Binding


class _Refused(Exception):
    def __init__(self, message_id: str, digest: str, reason: str) -> None:
        super().__init__(reason)
        self.message_id, self.digest, self.reason = message_id, digest, reason

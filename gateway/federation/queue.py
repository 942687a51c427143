"""Operators' control of the partner queues: list what waits, show one message, return it.

``gateway queue list|show|return`` reach this through the admin socket
(gateway.channels.admin); nothing else does. An operator sees metadata only: ids, desks,
kind, priority, envelope size, times, attempts and the last error. The gateway holds no
plaintext, and the ciphertext is not shown either.

**Returning** a message takes it out of its partner's outbox with a non-delivery notice
signed by this gateway for the sending desk: the path of a message the partner refused
for good (gateway.federation.sender), with the ledger event ``rejected``, reason
``returned``, and the operator's reason in the notice (``note``) and in the desk's stored
notice, never in the ledger (see docs/SECURITY.md). A message is returned only if it is
queued now and not in the sender's hands: one it is posting, whose receipts it is
recording or that it is expiring is refused with ``in_flight`` (try again in a moment:
it is then delivered, refused or expired, or still queued). The claim is taken without
an ``await`` between the check and the claim (``Partner.returned``), and the sender
leaves claimed messages out of every batch it posts, so a return and a delivery never
both happen.
"""

from __future__ import annotations

import re
from typing import Any

import structlog

from gateway.clock import Clock
from gateway.errors import ClientError, ConflictError, MalformedError, NotFoundError
from gateway.federation.partners import Partners
from gateway.federation.sender import non_delivery
from gateway.ledger.events import REJECTED
from gateway.protocol.notices import RETURNED, check_note
from gateway.store import QueuedMessage, QueueStore

log = structlog.get_logger("gateway.federation.queue")

MAX_LISTED = 1000  # messages one listing shows
_MESSAGE_ID = re.compile(r"[0-9a-f]{32}")  # as envelopes name them (docs/PROTOCOL.md)


class QueueControl:
    def __init__(self, store: QueueStore, partners: Partners, clock: Clock) -> None:
        self.store = store
        self.partners = partners
        self.clock = clock

    async def listing(self, partner: str | None) -> dict[str, Any]:
        """The queued messages (of ``partner``, or all), in sending order, and how many
        there are in all if that is more than MAX_LISTED."""
        if partner is not None and self.partners.get(partner) is None:
            raise NotFoundError(f"{partner} is not a partner of this gateway",
                                code="unknown_partner")
        found = await self.store.queued_messages(partner, MAX_LISTED + 1)
        return {"now": self.clock.now_ms(), "partner": partner,
                "messages": [describe(m) for m in found[:MAX_LISTED]],
                "truncated": len(found) > MAX_LISTED}

    async def show(self, message_id: str) -> dict[str, Any]:
        message = await self._queued(message_id)
        partner = self.partners.get(message.partner)
        doc = describe(message)
        doc["in_flight"] = partner is not None and message_id in partner.in_hand()
        return {"now": self.clock.now_ms(), "message": doc}

    async def return_message(self, message_id: str, reason: str) -> dict[str, Any]:
        """Take ``message_id`` out of its outbox with a signed non-delivery notice that
        carries ``reason``; ClientError (nothing changed) if it is not queued, in the
        sender's hands, or the reason is not acceptable."""
        try:
            note = check_note(reason)
        except MalformedError as exc:
            raise ClientError(exc.message, code="bad_reason") from None
        message = await self._queued(message_id)
        partner = self.partners.get(message.partner)
        if partner is None:  # queued for a gateway that is no partner since a restart
            raise ConflictError(f"message {message_id} waits for {message.partner}, which is "
                                "not a partner of this gateway now", code="unknown_partner")
        # Check and claim with no await between (see the module docstring).
        if message_id in partner.returned:
            raise ConflictError(f"message {message_id} is being returned already",
                                code="not_queued")
        if message_id in partner.in_hand():
            raise ConflictError(f"message {message_id} is being relayed to {partner.id} now; "
                                "try again in a moment", code="in_flight")
        partner.returned.add(message_id)
        done = False
        try:
            items = await self.store.queued_items(partner.id, [message_id])
            if not items:
                raise NotFoundError(f"message {message_id} is not queued (delivered, expired "
                                    "or returned meanwhile)", code="not_queued")
            now = self.clock.now_ms()
            notice = non_delivery(self.partners.identity, partner.id, items[0], RETURNED,
                                  REJECTED, now, note)
            recorded = await self.store.record_expiry(partner.id, [notice])
            done = recorded == 1
        finally:
            if not done:  # (nothing written: the sender may take it again)
                partner.returned.discard(message_id)
            # The sender may have left it out of a batch meanwhile and be waiting with
            # others queued behind it: it reads its outbox again.
            partner.queued.set()
        log.warning("queue_returned", message=message_id, to_partner=partner.id,
                    reason_chars=len(note))
        return {"id": message_id, "partner": partner.id, "sender": message.sender,
                "returned": now}

    async def _queued(self, message_id: str) -> QueuedMessage:
        if not _MESSAGE_ID.fullmatch(message_id):
            raise ClientError("not a message id (32 lowercase hex digits)",
                              code="bad_message_id")
        message = await self.store.queued_message(message_id)
        if message is None:
            raise NotFoundError(f"message {message_id} is not queued for any partner "
                                "(unknown, delivered, expired or returned)", code="not_queued")
        return message


def describe(m: QueuedMessage) -> dict[str, Any]:
    return {"id": m.message_id, "partner": m.partner, "sender": m.sender,
            "recipient": m.recipient, "kind": m.kind, "priority": m.priority,
            "size": m.size, "digest": m.digest, "accepted": m.accepted_ms,
            "queued": m.queued_ms, "expires": m.expires_ms, "attempts": m.attempts,
            "last_error": m.last_error}

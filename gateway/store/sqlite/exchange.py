"""What this gateway and one partner exchanged, for reconciling the two: the messages this
gateway's officers sent to the partner's desks (each with where it stands here) and the
messages the partner relayed here, accepted in a window of time."""

from __future__ import annotations

from gateway.store import Exchanged
from gateway.store.sqlite.engine import StoreEngine

#: Where a message sent to a partner stands here: still queued; delivered (the partner's
#: signed receipt says accepted or duplicate); returned to its sender (refused by the
#: partner, expired or returned by the operator, each with a non-delivery notice); or
#: unsent (none of these: it left the queue without a trace).
_SENT = (
    "SELECT m.id, m.digest, m.accepted_ms,"
    " CASE WHEN o.message_id IS NOT NULL THEN 'queued'"
    " WHEN r.outcome IN ('accepted', 'duplicate') THEN 'delivered'"
    " WHEN r.outcome = 'rejected' OR n.message_id IS NOT NULL THEN 'returned'"
    " ELSE 'unsent' END"
    " FROM messages m"
    " LEFT JOIN outbox o ON o.message_id = m.id AND o.partner = ?"
    " LEFT JOIN receipts r ON r.message_id = m.id AND r.partner = ?"
    " LEFT JOIN notices n ON n.message_id = m.id"
    " WHERE m.origin = 'local' AND m.recipient LIKE ? AND m.accepted_ms >= ?"
    " AND m.accepted_ms < ? ORDER BY m.accepted_ms, m.mseq LIMIT ?"
)
_RECEIVED = (
    "SELECT id, digest, accepted_ms FROM messages WHERE origin = ? AND accepted_ms >= ?"
    " AND accepted_ms < ? ORDER BY accepted_ms, mseq LIMIT ?"
)


class ExchangeQueries(StoreEngine):
    async def exchanged(self, partner: str, since_ms: int, until_ms: int,
                        limit: int) -> Exchanged:
        """Messages sent to ``partner``'s desks and received from it, accepted here in
        [since_ms, until_ms), at most ``limit`` of each (a scan of that window)."""
        sent = await self._read(_SENT, (partner, partner, f"%@{partner}", since_ms, until_ms,
                                        limit + 1))
        received = await self._read(_RECEIVED, (partner, since_ms, until_ms, limit + 1))
        return Exchanged(
            sent=[(r[0], r[1], r[2], r[3]) for r in sent[:limit]],
            received=[(r[0], r[1], r[2]) for r in received[:limit]],
            truncated=len(sent) > limit or len(received) > limit)

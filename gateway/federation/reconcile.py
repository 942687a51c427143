"""Reconciliation with a partner: do both gateways tell the same story of what passed
between them?

Each gateway lists, for a window of time, the messages its officers sent to the other's
desks (with where each stands: queued, delivered, returned, or unsent) and the messages
it received from the other (``GET /v1/federation/exchanged``, a signed hop request,
docs/PROTOCOL.md 10.11). Comparing the two lists flags, by message id:

* ``unsent_here``: accepted here for the partner and gone from the queue with no
  receipt and no non-delivery notice (withheld, or deleted, on this side);
* ``unsent_there``: the partner accepted it for a desk here and shows it unsent there;
* ``lost_there``: this gateway holds the partner's signed receipt, the partner does not
  list it as received;
* ``lost_here``: the partner holds this gateway's receipt, it is not here;
* ``digest_mismatch``: both list the id with different envelopes.

Messages still queued on either side are counted, not flagged. Each side lists its own
messages by its own accept time; the lists the other side is compared against are taken
over the window widened by ``slack`` on both ends (clocks, time in flight).
"""

from __future__ import annotations

import json
from typing import Any

from gateway.errors import PeerError
from gateway.federation.partners import FEDERATION_EXCHANGED_PATH, Partners
from gateway.store import Exchanged, ExchangeStore

MAX_LISTED = 10_000  # per list and answer; a larger window must be split
SLACK_MS = 3_600_000


def exchanged_json(gateway: str, partner: str, since_ms: int, until_ms: int,
                   exchanged: Exchanged) -> dict[str, Any]:
    return {"gateway": gateway, "partner": partner, "since": since_ms, "until": until_ms,
            "sent": [list(row) for row in exchanged.sent],
            "received": [list(row) for row in exchanged.received],
            "truncated": exchanged.truncated}


def _parse(body: bytes, partner: str) -> Exchanged:
    try:
        doc = json.loads(body)
        sent = [(str(i), str(d), int(t), str(s)) for i, d, t, s in doc["sent"]]
        received = [(str(i), str(d), int(t)) for i, d, t in doc["received"]]
        return Exchanged(sent, received, bool(doc["truncated"]))
    except (ValueError, KeyError, TypeError):
        raise PeerError(f"{partner} answered reconciliation with something else") from None


async def reconcile(store: ExchangeStore, partners: Partners, partner_id: str,
                    since_ms: int, until_ms: int) -> dict[str, Any]:
    """Compare what this gateway and ``partner_id`` exchanged, accepted in
    [since_ms, until_ms); raises PeerError if the partner does not answer."""
    partner = partners.require(partner_id)
    wide = (since_ms - SLACK_MS, until_ms + SLACK_MS)
    path = FEDERATION_EXCHANGED_PATH + f"?since={max(wide[0], 0)}&until={wide[1]}"
    status, body = await partners.request(partner, "GET", path)
    if status != 200:
        raise PeerError(f"{partner_id} refused reconciliation (HTTP {status})")
    theirs = _parse(body, partner_id)
    ours = await store.exchanged(partner_id, max(wide[0], 0), wide[1], MAX_LISTED)
    return {"partner": partner_id, **compare(ours, theirs, since_ms, until_ms)}


def compare(ours: Exchanged, theirs: Exchanged, since_ms: int,
            until_ms: int) -> dict[str, Any]:
    """Counts and flags of two sides' lists (each over the widened window), judging the
    messages each side accepted in [since_ms, until_ms)."""
    in_window = range(since_ms, until_ms)
    flags: list[dict[str, Any]] = []

    def flag(code: str, mid: str, **more: Any) -> None:
        flags.append({"flag": code, "id": mid, **more})

    their_received = {mid: digest for mid, digest, _ in theirs.received}
    our_received = {mid: digest for mid, digest, _ in ours.received}
    counts = {"sent": 0, "received": 0, "matched": 0, "queued_here": 0, "queued_there": 0,
              "returned": 0}
    for mid, digest, at, state in ours.sent:
        if at not in in_window:
            continue
        counts["sent"] += 1
        if mid in their_received:
            if their_received[mid] != digest:
                flag("digest_mismatch", mid, accepted=at)
            else:
                counts["matched"] += 1
        elif state == "queued":
            counts["queued_here"] += 1
        elif state == "returned":
            counts["returned"] += 1
        elif state == "delivered":
            flag("lost_there", mid, accepted=at)
        else:
            flag("unsent_here", mid, accepted=at)
    for mid, digest, at, state in theirs.sent:
        if at not in in_window:
            continue
        counts["received"] += 1
        if mid in our_received:
            if our_received[mid] != digest and not any(f["id"] == mid for f in flags):
                flag("digest_mismatch", mid, accepted=at)
        elif state == "queued":
            counts["queued_there"] += 1
        elif state == "returned":
            counts["returned"] += 1
        elif state == "delivered":
            flag("lost_here", mid, accepted=at)
        else:
            flag("unsent_there", mid, accepted=at)
    return {"since": since_ms, "until": until_ms, "counts": counts, "flags": flags,
            "truncated": ours.truncated or theirs.truncated}

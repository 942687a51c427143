"""Reconciliation's two halves on their own: where the store says each message sent to a
partner stands (real SQLite), and what comparing two sides' lists flags."""

from __future__ import annotations

from pathlib import Path

from gateway.federation.reconcile import compare
from gateway.store import Exchanged, NonDelivery
from gateway.store.sqlite import SqliteStore
from tests.helpers import T0, Officer, db_path, incoming, make_envelope

A = "a" * 64
B = "b" * 64


def test_each_discrepancy_is_flagged_and_the_rest_counted() -> None:
    ours = Exchanged(
        sent=[("m1", A, T0, "delivered"), ("m2", A, T0, "delivered"), ("m3", A, T0, "unsent"),
              ("m4", A, T0, "queued"), ("m5", A, T0, "returned"), ("m6", A, T0, "delivered"),
              ("old", A, T0 - 10, "unsent")],  # before the window: not judged
        received=[("t1", A, T0 + 5), ("t5", B, T0)], truncated=False)
    theirs = Exchanged(
        sent=[("t1", A, T0, "delivered"), ("t2", A, T0, "delivered"), ("t3", A, T0, "unsent"),
              ("t4", A, T0, "queued"), ("t5", A, T0, "delivered")],
        received=[("m1", A, T0 + 9), ("m6", B, T0)], truncated=True)
    result = compare(ours, theirs, T0, T0 + 1)
    assert sorted((f["flag"], f["id"]) for f in result["flags"]) == [
        ("digest_mismatch", "m6"), ("digest_mismatch", "t5"), ("lost_here", "t2"),
        ("lost_there", "m2"), ("unsent_here", "m3"), ("unsent_there", "t3")]
    assert result["counts"] == {"sent": 6, "received": 5, "matched": 1, "queued_here": 1,
                                "queued_there": 1, "returned": 1}
    assert result["truncated"] is True


async def test_the_store_says_where_each_sent_message_stands(tmp_path: Path) -> None:
    store = await SqliteStore.open(db_path(tmp_path))
    try:
        a, b = Officer(), Officer()
        envelopes = [make_envelope(a, [b], to="desk@la-mps") for _ in range(4)]
        for env in envelopes:
            await store.accept(incoming(env, relay_to="la-mps"))
        queued, delivered, returned, unsent = (e.header.id for e in envelopes)
        async with store.transaction() as tx:
            await tx.execute("INSERT INTO receipts (message_id, partner, outcome, reason,"
                             " receipt, received_ms) VALUES (?, 'la-mps', 'accepted', NULL,"
                             " x'00', ?)", (delivered, T0))
            await tx.execute("DELETE FROM outbox WHERE message_id IN (?, ?)",
                             (delivered, unsent))
        assert await store.record_expiry("la-mps", [NonDelivery(
            returned, "trafficking@vn-mps", "expired", b"note", T0, "0" * 16)]) == 1
        got = await store.exchanged("la-mps", 0, T0 + 1, 100)
        assert {m: state for m, _, _, state in got.sent} == {
            queued: "queued", delivered: "delivered", returned: "returned", unsent: "unsent"}
        assert got.received == [] and not got.truncated
        assert (await store.exchanged("la-mps", 0, T0 + 1, 3)).truncated
        assert (await store.exchanged("kh-cnp", 0, T0 + 1, 100)).sent == []
    finally:
        await store.close()

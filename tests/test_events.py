"""Ledger entry encoding: the fast encoder writes exactly canonical JSON."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import LedgerError
from gateway.ledger.events import EVENT_TYPES, LedgerEvent, decode_entry

_text = st.one_of(st.none(), st.text(max_size=40))


@settings(max_examples=500, deadline=None)
@given(
    type_=st.sampled_from(sorted(EVENT_TYPES)), mid=st.text(max_size=40),
    t=st.integers(min_value=0, max_value=2**53), seq=st.integers(min_value=0, max_value=2**40),
    fields=st.fixed_dictionaries({
        k: _text for k in ("digest", "sender", "recipient", "kind", "priority", "partner",
                           "actor", "ref", "outcome", "reason")
    }),
)
def test_fast_encoder_equals_canonical_json(type_, mid, t, seq, fields) -> None:
    event = LedgerEvent(type_, mid, t, **fields)
    assert event.encode(seq) == event.reference_encode(seq)
    doc = decode_entry(event.encode(seq))
    assert doc["seq"] == seq and doc["msg"] == mid and doc["type"] == type_


def test_bad_events_are_refused() -> None:
    for event in (LedgerEvent("gossip", "a", 1), LedgerEvent("read", "a", 1.5),  # type: ignore[arg-type]
                  LedgerEvent("read", "a", True), LedgerEvent("read", "a", 1, actor=7),  # type: ignore[arg-type]
                  LedgerEvent("read", 5, 1)):  # type: ignore[arg-type]
        with pytest.raises(LedgerError):
            event.encode(0)
    for raw in (b"x", b"[]", b'{"v":2}', b'{"v":1,"seq":"1","type":"read"}'):
        with pytest.raises(LedgerError):
            decode_entry(raw)

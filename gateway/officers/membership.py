"""Desk membership notices: each desk's live streams hear who waits to join, joined, left;
and every join and departure becomes a ledger entry.

The store writes a notice (``desk_notices``) in the transaction of each change, in
whichever process makes it: an enrollment (``pending``, or ``joined`` for a desk's first
member, admitted by the operator), an admission (``joined``, by whom), a revocation
(``left``). After each directory reload this

* appends an ``admitted`` or ``departed`` ledger entry for each join or departure not in
  the ledger yet, marking the notice in the same commit (only the gateway process appends
  to the ledger, which is why an operator's command leaves it to the next reload, or the
  next start);
* has the stored notices published (gateway.officers.notices) as ``membership`` stream
  events; ``GET /v1/desks/{desk}/notices`` reads them back.

An ``admitted`` entry: ``msg`` the officer's id, ``recipient`` the desk, ``t`` the
admission's time, ``ref`` who admitted it (an officer id or ``operator``), ``actor`` that
officer's or the gateway's signing key id, ``digest`` the SHA-256 hex of the admission
text (docs/PROTOCOL.md 7.6), which names both of the officer's keys. A ``departed`` entry:
``msg``, ``recipient``, ``t`` the revocation's time, ``reason`` ``revoked``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from gateway.ledger.events import LedgerEvent
from gateway.officers.directory import Directory
from gateway.officers.notices import StoredNotices
from gateway.protocol.admission import OPERATOR
from gateway.protocol.membership import ADMITTED, DEPARTED, admission_digest
from gateway.store import MEMBERSHIP, DeskNotice, NoticeStore

__all__ = ["MEMBERSHIP", "MembershipNotices"]
PAGE = 500


class MembershipNotices:
    def __init__(self, store: NoticeStore, gateway: str, feed: StoredNotices | None,
                 operator_key_id: Callable[[], str],
                 checkpoint: Callable[[], Awaitable[object]]) -> None:
        self.store = store
        self.gateway = gateway
        self.feed = feed  # publishes the stored notices (None: nobody listens)
        self.operator_key_id = operator_key_id  # the gateway's current signing key id
        self.checkpoint = checkpoint  # signs a checkpoint covering the new entries
        self._lock = asyncio.Lock()  # reloads from a request and from the watcher overlap

    async def catch_up(self, directory: Directory) -> None:
        """Ledger the joins and departures not in the ledger yet, then publish the notices
        stored since (membership ones included: a join is told once it can be proven)."""
        async with self._lock:
            if await self._ledger(directory):
                await self.checkpoint()  # clients can prove the new members at once
        if self.feed is not None:
            await self.feed.catch_up()

    async def _ledger(self, directory: Directory) -> bool:
        """Append the entries of the joins and departures not ledgered yet, in order, up
        to the first join this directory does not know (made after it was built: the
        reload its change causes ledgers it). Whether anything was appended."""
        after, appended = 0, False
        while pending := await self.store.unledgered_notices(after, PAGE):
            entries = []
            for notice in pending:
                event = self.entry(notice, directory)
                if event is None:
                    break
                entries.append((notice.seq, event))
            if entries:
                await self.store.ledger_notices(entries)
                appended = True
            if len(entries) < len(pending):
                break
            after = pending[-1].seq
        return appended

    def entry(self, notice: DeskNotice, directory: Directory) -> LedgerEvent | None:
        """The ledger entry of a join or departure; None for a join ``directory`` lacks."""
        desk = f"{notice.desk}@{self.gateway}"
        assert notice.officer is not None  # (joins and departures name their officer)
        if notice.kind != "joined":
            return LedgerEvent(DEPARTED, notice.officer, notice.at_ms, recipient=desk,
                               reason="revoked")
        officer = directory.officers.get(notice.officer)
        admission = officer.admissions.get(desk) if officer is not None else None
        if officer is None or admission is None:
            return None
        admitter = directory.officers.get(admission.by)
        actor = (self.operator_key_id() if admission.by == OPERATOR
                 else admitter.sign_key.key_id if admitter is not None else None)
        return LedgerEvent(ADMITTED, officer.id, admission.at,
                           digest=admission_digest(desk, officer.id, officer.sign_key.b64(),
                                                  officer.enc_key.b64(), admission), recipient=desk,
                           actor=actor, ref=admission.by)

"""The relay to partner gateways: one sender task per partner.

One supervised task per partner drains that partner's outbox: a batch of at most
``batch_size`` messages (flash before immediate before priority before routine,
first queued first within a rank), one batch in flight per partner, posted as a signed
hop request to ``/v1/federation/messages``. The partner answers one signed receipt per
message; only receipts that verify, name this gateway and match the message's digest are
recorded (the message leaves the outbox, its ``relayed`` and ``receipt`` events are
written, the sending desk hears of it). Checking a batch's receipts and committing them
run while the next batch is built and posted, with their messages left out of it; if
they are refused, that is noticed when the next answer comes (or at once if there is no
next batch), and both batches stay queued: the partner, which committed them, answers
their resends ``duplicate``. After a full batch the next one is read from the outbox
(and what expired meanwhile taken out) while the full one is in flight; it is sent only
if no message was queued in the meantime, since a new one may rank before it. Any
failure (unreachable, an error status, a bad receipt) keeps the whole batch queued and
backs off: ``retry_first_seconds`` doubling up to ``retry_max_seconds``, with jitter,
stored in the database so a restart keeps it (a deadline further off than the cap, left
by a wall clock that was set back since, is cut to the cap). While a partner is down it
is probed every ``health_seconds`` (gateway.federation.partners) and its sender catches up as soon
as it answers. A partner's sender never waits on another's.

**Refusals.** A partner that answers a batch with a 4xx that concerns its messages, not
the link (anything but 401/403, hop authentication; 404, a gateway without the route;
408 and 429, try later) is up and has said no. A batch of several is then sent again in
halves, at once, until the refusal concerns one message; that message leaves the outbox
with a signed non-delivery notice (the ``rejected`` ledger event, reason the partner's
code) and the queue moves on. A message the partner's receipt rejects gets the same
notice with its receipt. Neither marks the partner down nor backs off: one oversized
message never holds up the others. Batches are also cut to the partner's stated
``batch_bytes`` (its descriptor's ``limits``) when that is smaller than ours.

**Operators' returns** (gateway.federation.queue) take a message out of the outbox with
the same notice (``rejected``, reason ``returned``). A message ends one way only: the
sender leaves out of every batch, even one read before, the messages an operator returned
(``Partner.returned``), and shows through ``Partner.in_hand`` the ones it is posting,
recording or expiring, which an operator may not return until it is done. Both are
checked and set without an ``await`` between, so neither can slip in between the other's
check and its claim. Every post that does not deliver a message (partner unreachable,
batch refused) is counted on its outbox row with the error, for ``gateway queue``.

The receiving side is gateway.federation.receiver.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import random
import re
from typing import Any, NamedTuple

import structlog

from gateway.clock import Clock
from gateway.config import FederationSection
from gateway.crypto.keys import VerifyKey
from gateway.crypto.worker import CryptoWorker
from gateway.errors import CryptoError, PeerError, StoreError
from gateway.federation.identity import Identity
from gateway.federation.partners import (
    FEDERATION_MESSAGES_PATH,
    FEDERATION_READS_PATH,
    Partner,
    Partners,
)
from gateway.federation.receipts import REJECTED, Receipt, open_receipts_on
from gateway.federation.receiver import BATCH_MEDIA_TYPE, READ_OUTCOMES, READS_MEDIA_TYPE
from gateway.ledger.events import REJECTED as REJECTED_EVENT
from gateway.metrics import Metrics
from gateway.protocol import jsontext
from gateway.protocol.notices import NonDeliveryNotice
from gateway.store import (
    ExpiredItem,
    NonDelivery,
    OutboxItem,
    PartnerState,
    QueuedRead,
    RelayResult,
    SenderStore,
)

log = structlog.get_logger("gateway.federation.sender")

EXPIRED_REASON = "expired"
# Whole-batch answers that are about the link or its timing, not the messages: hop
# authentication (401, 403), no such route (404), try later (408, 429). Every other 4xx
# refuses the messages themselves.
LINK_REFUSALS = frozenset({401, 403, 404, 408, 429})
_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Refusal reasons the protocol names (docs/PROTOCOL.md 10.4): the only values of the
# refused-messages metric's reason label besides "other", so that a partner cannot grow
# its series without bound.
KNOWN_REFUSALS = frozenset({
    "too_large", "bad_batch", "unsupported_media_type", "malformed_item",
    "malformed_envelope", "bad_binding", "bad_signature", "sender_not_bound",
    "not_for_this_gateway", "unknown_desk", "no_current_recipient", "expired", "bad_time",
    "id_conflict"})


class Refused(Exception):
    """The partner answered a batch with a 4xx that refuses its messages (not a
    PeerError: the partner is up, and the batch is split, not retried after a wait)."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(f"HTTP {status} {code}")
        self.status, self.code = status, code


def backoff_seconds(failures: int, first: float, cap: float, rng: random.Random) -> float:
    """Wait after ``failures`` consecutive failures: doubling from ``first``, capped,
    with "equal jitter" (between half and all of it) so that partners do not retry in step."""
    base: float = min(cap, first * (2 ** min(failures - 1, 30)))
    return base / 2 + rng.random() * base / 2


class Sender:
    """The relay task of one partner."""

    def __init__(self, partner: Partner, partners: Partners, store: SenderStore, clock: Clock,
                 settings: FederationSection, me: str, worker: CryptoWorker,
                 rng: random.Random | None = None, metrics: Metrics | None = None) -> None:
        self.partner = partner
        self.worker = worker
        self.metrics = metrics
        self.partners = partners
        self.store = store
        self.clock = clock
        self.settings = settings
        self.me = me
        self.rng = rng or random.Random()  # noqa: S311 -- jitter, not a secret
        self._recording: asyncio.Task[int] | None = None  # receipts of the last batch
        self._recording_ids: frozenset[str] = frozenset()
        self._in_flight: frozenset[str] = frozenset()  # the batch posted and not answered
        self._posting: frozenset[str] = frozenset()  # the batch being posted now
        self._expiring: frozenset[str] = frozenset()  # expired ones being recorded
        # The batch after a full one, read from the outbox while that one is in flight.
        self._prefetch: asyncio.Task[_Batch] | None = None
        # After a batch was refused whole: the most messages the next one holds (halved at
        # each such refusal, back to batch_size once a batch is answered).
        self._split: int | None = None

    async def run(self) -> None:
        # Every line this task logs (and the tasks it starts, which copy its context) names
        # the partner, without passing it at each call.
        self.partner.in_hand = lambda: self._busy | self._posting | self._expiring
        try:
            with structlog.contextvars.bound_contextvars(partner=self.partner.id):
                await self._run()
        finally:
            self.partner.in_hand = frozenset
            for task in (self._prefetch, self._recording):
                if task is not None:
                    task.cancel()

    async def _run(self) -> None:
        p, s = self.partner, self.settings
        state = await self.store.partner_state(p.id)
        while True:
            # The batch read ahead while the last one was in flight, unless a message was
            # queued since (it may rank before it): then the outbox is read again.
            prefetched = await self.prefetched(usable=not p.queued.is_set())
            now = self.clock.now_ms()
            if prefetched is None:  # (reading ahead expired what was due then)
                await self.expire(now)
            latest = now + int(s.retry_max_seconds * 1000)
            if state.next_attempt_ms > latest:
                # Further off than any backoff: the wall clock was set back since the
                # deadline was written (or the cap lowered). Wait no longer than the cap.
                state = dataclasses.replace(state, next_attempt_ms=latest)
            if state.next_attempt_ms > now and not p.kick.is_set():
                # Backing off: only a kick (partner answers, operator) ends it early; wake
                # also when a queued message expires, to issue its notice on time.
                until = state.next_attempt_ms
                first_expiry = await self.store.next_expiry(p.id)
                if first_expiry is not None:
                    until = min(until, first_expiry + 1)
                await _wait(p.kick, max(until - now, 1) / 1000)
                continue
            p.kick.clear()
            p.queued.clear()
            # A partner that failed is probed with one message, not a full batch: building
            # and encoding hundreds of envelopes for a dead partner would hold up this
            # gateway's event loop, and so the other partners, at every retry.
            # (Once it answered, ``next_attempt_ms`` is 0 while its receipts are checked.)
            size = 1 if state.next_attempt_ms else min(s.batch_size, self._split or s.batch_size)
            if prefetched is not None and len(prefetched.items) > size:
                prefetched = None  # (read before a refusal split the batches)
            if prefetched is not None:
                batch, body = prefetched
            else:
                batch = await self.next_batch(size)
                body = batch_body(batch)
            returned = p.returned
            if returned and any(item.message_id in returned for item in batch):
                batch = [item for item in batch if item.message_id not in returned]
                body = batch_body(batch)
            # From here until the batch is answered (and then while its receipts are
            # recorded), an operator may not return these messages.
            self._posting = frozenset(item.message_id for item in batch)
            # Read acknowledgements go after the batch: their query runs meanwhile.
            reads_query = asyncio.create_task(self.store.read_outbox_batch(p.id, s.batch_size))
            reads: list[QueuedRead] = []
            if len(batch) == size > 1:
                # A full batch: more is probably waiting. Read (and expire) the next one
                # while this one is in flight; it is used only if nothing was queued
                # meanwhile, which might have to go first.
                self._in_flight = frozenset(item.message_id for item in batch)
                self._prefetch = asyncio.create_task(self.prefetch(size))
            try:
                recorded = await self.send(batch, body) if batch else None
                reads = await _reads_of(reads_query)
                if reads:
                    await self.send_reads(reads)
                elif not batch:
                    # Nothing to send: wait for a message (or a kick), or for the last
                    # batch's receipts to be checked and recorded, whichever comes first.
                    await _wait_any((p.queued, p.kick), self._recording)
                    if self._recording is None or not self._recording.done():
                        continue
                    recorded = await self.recorded()
            except Refused as exc:
                await self.prefetched(usable=False)
                await _reads_of(reads_query)  # (sent at the next round)
                self.partners.mark(p, up=True)  # it answered: up, and no backoff
                if state.next_attempt_ms:
                    state = dataclasses.replace(state, next_attempt_ms=0,
                                                last_contact_ms=self.clock.now_ms())
                    await self.store.set_partner_state(state)
                if len(batch) > 1:
                    self._split = len(batch) // 2
                    log.warning("relay_batch_refused", messages=len(batch), status=exc.status,
                                error=exc.code, next_size=self._split)
                    await self.note_attempts(batch, f"refused: {exc}")
                    continue
                try:
                    await self.refuse(batch[0], exc.code)
                except StoreError as store_exc:  # (still queued: refused again next round)
                    log.error("refusal_not_recorded", error=store_exc.message)
                continue
            except PeerError as exc:
                await self.prefetched(usable=False)
                await _reads_of(reads_query)  # (read again at the next attempt)
                failures = state.failures + 1
                delay = backoff_seconds(failures, s.retry_first_seconds, s.retry_max_seconds,
                                        self.rng)
                self.partners.mark(p, up=False, error=exc.message)
                if self.metrics is not None:
                    self.metrics.retries.labels(p.id).inc()
                log.warning("relay_failed", messages=len(batch), reads=len(reads),
                            failures=failures, retry_in=round(delay, 2), error=exc.message)
                state = PartnerState(p.id, failures, self.clock.now_ms() + int(delay * 1000),
                                     state.last_contact_ms, exc.message[:200])
                await self.store.set_partner_state(state)
                await self.note_attempts(batch, exc.message)
                continue
            finally:
                self._posting = frozenset()
                reads_query.cancel()  # (done by now, unless something unforeseen was raised)
            if batch:
                self._split = None
            log.debug("relayed", messages=recorded or 0, reads=len(reads))
            if recorded is not None or reads:
                # Receipts that verified (or read acknowledgements answered): healthy.
                if state.failures or state.next_attempt_ms:
                    state = PartnerState(p.id, 0, 0, self.clock.now_ms(), None)
                    await self.store.set_partner_state(state)
            elif state.next_attempt_ms:
                # It answered: no more waiting, and full batches again. The failures are
                # kept until its receipts verify, so that a partner whose receipts are
                # refused backs off further each time.
                state = dataclasses.replace(state, next_attempt_ms=0,
                                            last_contact_ms=self.clock.now_ms())
                await self.store.set_partner_state(state)

    @property
    def _busy(self) -> frozenset[str]:
        """Messages in flight or whose receipts are being checked and recorded."""
        return self._recording_ids | self._in_flight

    async def next_batch(self, size: int) -> list[OutboxItem]:
        """The next batch of at most ``size``: first in priority order, leaving out the
        messages in flight and those whose receipts are still being recorded."""
        busy = self._busy
        max_bytes = self.batch_bytes()
        batch = await self.store.outbox_batch(self.partner.id, size + len(busy), max_bytes)
        if busy:
            batch = [item for item in batch if item.message_id not in busy]
        return within_bytes(batch[:size], max_bytes)

    def batch_bytes(self) -> int:
        """The largest batch body to send: ours, or the partner's if it says it accepts
        less (docs/PROTOCOL.md 5)."""
        descriptor = self.partner.descriptor
        theirs = descriptor.limits.batch_bytes if descriptor is not None else None
        return min(self.settings.batch_bytes, theirs or self.settings.batch_bytes)

    async def prefetch(self, size: int) -> _Batch:
        """While a batch is in flight: expire what is due, then read and encode the batch
        after it."""
        await self.expire(self.clock.now_ms())
        batch = await self.next_batch(size)
        return _Batch(batch, batch_body(batch))

    async def prefetched(self, *, usable: bool) -> _Batch | None:
        """The batch read ahead, once the batch before it is answered, if it is still
        ``usable``; None if there is none (or it failed: the batch is read again)."""
        task, self._prefetch = self._prefetch, None
        self._in_flight = frozenset()
        if task is None:
            return None
        if not usable:
            task.cancel()
        try:
            batch = await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise
            return None
        except StoreError as exc:
            log.error("prefetch_failed", error=exc.message)
            return None
        return batch if usable and batch.items else None

    async def recorded(self) -> int | None:
        """Wait for the receipts of the last batch to be checked and recorded: how many
        were recorded, or None if no batch was waiting for that. Raises PeerError if the
        receipts were refused. A failed commit leaves those messages queued: they are sent
        again (answered duplicate)."""
        pending, self._recording = self._recording, None
        if pending is None:
            return None
        try:
            return await pending
        except StoreError as exc:
            log.error("receipts_not_recorded", error=exc.message)
            return 0
        finally:
            self._recording_ids = frozenset()

    async def expire(self, now: int) -> None:
        """Take messages that expired while queued out of the outbox, each with a signed
        non-delivery notice for its sending desk (gateway.protocol.notices)."""
        busy, returned = self._busy, self.partner.returned
        while found := await self.store.expired_outbox(self.partner.id, now, 1000):
            # (``returned`` and ``in_hand`` are read and claimed with no await between.)
            expired = [e for e in found
                       if e.message_id not in busy and e.message_id not in returned]
            notices = [self.notice(item, EXPIRED_REASON, EXPIRED_REASON, now)
                       for item in expired]
            self._expiring = frozenset(item.message_id for item in expired)
            try:
                recorded = await self.store.record_expiry(self.partner.id, notices)
            finally:
                self._expiring = frozenset()
            log.warning("relay_expired", messages=recorded)
            if len(found) < 1000 or not expired:
                return

    def notice(self, item: ExpiredItem, reason: str, event: str, now: int) -> NonDelivery:
        """A signed non-delivery notice for the sending desk of ``item``."""
        return non_delivery(self.partners.identity, self.partner.id, item, reason, event, now)

    async def note_attempts(self, batch: list[OutboxItem], error: str) -> None:
        """Count an undelivered post of ``batch`` on its outbox rows (for operators)."""
        try:
            await self.store.note_attempts(self.partner.id,
                                           [item.message_id for item in batch], error[:200])
        except StoreError as exc:  # (a figure for operators: the relay goes on without it)
            log.error("attempts_not_recorded", error=exc.message)

    def count_refused(self, reason: str, messages: int = 1) -> None:
        if self.metrics is not None:
            label = reason if reason in KNOWN_REFUSALS else "other"
            self.metrics.refused.labels(self.partner.id, label).inc(messages)

    async def refuse(self, item: OutboxItem, code: str) -> None:
        """The partner refused ``item``, alone in its batch, for good: it leaves the outbox
        with a non-delivery notice for its sending desk (reason: the partner's code)."""
        queued = await self.store.queued_items(self.partner.id, [item.message_id])
        if not queued:
            return  # (taken out meanwhile, e.g. expired)
        notice = self.notice(queued[0], code, REJECTED_EVENT, self.clock.now_ms())
        await self.store.record_expiry(self.partner.id, [notice])
        self.count_refused(code)
        log.warning("relay_refused", message=item.message_id, error=code,
                    envelope_bytes=len(item.envelope))

    async def send_reads(self, reads: list[QueuedRead]) -> None:
        """Post read acknowledgements back to the partner the messages came from; raises
        PeerError unless it answered each of them."""
        p = self.partner
        body = json.dumps({"v": 1, "reads": [
            {"ack": _b64(r.ack), "binding": _b64(r.binding)} for r in reads
        ]}, separators=(",", ":")).encode("ascii")
        status, answer = await self.partners.request(p, "POST", FEDERATION_READS_PATH, body,
                                                     READS_MEDIA_TYPE)
        if status != 200:
            raise PeerError(f"{p.id} answered the read acknowledgements with HTTP {status}: "
                            f"{_error_code(answer)}")
        try:
            results = jsontext.loads(answer)["results"]
            if not isinstance(results, list) or len(results) != len(reads):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise PeerError(f"{p.id}: its answer to read acknowledgements is malformed") \
                from None
        for read, result in zip(reads, results, strict=True):
            if not isinstance(result, dict) or result.get("outcome") not in READ_OUTCOMES:
                raise PeerError(f"{p.id}: its answer to read acknowledgements is malformed")
            if result["outcome"] == REJECTED:
                log.warning("read_ack_rejected", message=read.message_id,
                            reason=str(result.get("reason"))[:64])
        self.partners.mark(p, up=True)
        await self.store.forget_reads(p.id, [r.seq for r in reads])

    async def send(self, batch: list[OutboxItem], body: bytes) -> int | None:
        """Post one batch (``body``: :func:`batch_body`); raises PeerError unless the
        partner answers it. Its receipts are checked and recorded while the next batch is
        prepared and posted (see :meth:`recorded`); those of the batch before are awaited
        here: how many of them were recorded (None if there was no batch before), or
        PeerError if they were refused."""
        p = self.partner
        if p.key is None:
            await self.partners.refresh(p)
        sent_ms = self.clock.now_ms()
        status, answer = await self.partners.request(p, "POST", FEDERATION_MESSAGES_PATH, body,
                                                     BATCH_MEDIA_TYPE)
        if 400 <= status < 500 and status not in LINK_REFUSALS:
            code = _error_code(answer)
            raise Refused(status, code if _CODE.fullmatch(code) else f"http_{status}")
        if status != 200:
            raise PeerError(f"{p.id} answered the batch with HTTP {status}: "
                            f"{_error_code(answer)}")
        # The partner's key as of its answer: its call to us may have taught us a rotation
        # while the batch was in flight.
        key = p.key
        assert key is not None
        previous = await self.recorded()
        # Checking the receipts (a signature each) and committing them overlap the
        # partner's work on the next batch instead of adding to it; their messages are
        # left out of the next batches until then.
        self._recording = asyncio.create_task(self._record(batch, answer, sent_ms, key))
        self._recording_ids = frozenset(item.message_id for item in batch)
        return previous

    async def _record(self, batch: list[OutboxItem], answer: bytes, sent_ms: int,
                      key: VerifyKey) -> int:
        """Check the partner's receipts for ``batch`` and record them: how many were.
        Raises PeerError, recording none, if any of them is malformed, does not verify,
        or names another message, sender or digest."""
        p = self.partner
        try:
            notes = jsontext.loads(answer)["receipts"]
            if not isinstance(notes, list) or len(notes) != len(batch):
                raise ValueError("wrong number of receipts")
            raws = [note.encode("utf-8") for note in notes]
            receipts = await open_receipts_on(self.worker, raws, p.id, key)
            received_ms = self.clock.now_ms()
            results = []
            rejected: dict[str, Receipt] = {}
            for item, raw, receipt in zip(batch, raws, receipts, strict=True):
                # A rejection of an envelope the partner could not verify names no id.
                named = receipt.message_id == item.message_id or (
                    receipt.outcome == REJECTED and receipt.message_id == "")
                if receipt.sender != self.me or not named or receipt.digest != item.digest:
                    raise ValueError(f"receipt for {item.message_id} names another message")
                results.append(RelayResult(item.message_id, receipt.outcome, receipt.reason,
                                           raw, sent_ms, received_ms, key.key_id))
                if receipt.outcome == REJECTED:
                    rejected[item.message_id] = receipt
        except (ValueError, KeyError, TypeError, AttributeError, CryptoError) as exc:
            message = exc.message if isinstance(exc, CryptoError) else str(exc)
            log.error("receipts_refused", error=message)
            raise PeerError(f"{p.id}: receipts refused ({message})") from None
        self.partners.mark(p, up=True)
        notices = []
        if rejected:  # refused for good: the sending desk gets a notice with the receipt
            for queued in await self.store.queued_items(p.id, list(rejected)):
                reason = rejected[queued.message_id].reason or ""
                reason = reason if _CODE.fullmatch(reason) else "rejected"
                notices.append(self.notice(queued, reason, REJECTED_EVENT, received_ms))
        recorded = await self.store.record_relay(p.id, results, notices)
        for notice in notices:
            self.count_refused(notice.reason)
        return recorded


def non_delivery(identity: Identity, partner: str, item: ExpiredItem, reason: str,
                 event: str, now: int, note: str | None = None) -> NonDelivery:
    """A non-delivery notice for the sending desk of ``item``, queued for ``partner``,
    signed by this gateway: ``event`` is the ledger event it writes (``expired`` or
    ``rejected``), ``note`` an operator's reason (returned messages only)."""
    key = identity.signing_key
    signed = NonDeliveryNotice(identity.gateway_id, partner, item.message_id, item.digest,
                               item.sender, item.recipient, item.expires_ms, reason, now,
                               note).sign(key)
    return NonDelivery(item.message_id, item.sender, reason, signed, now, key.public.key_id,
                       event, note)


class _Batch(NamedTuple):
    items: list[OutboxItem]
    body: bytes  # batch_body(items)


def batch_body(batch: list[OutboxItem]) -> bytes:
    """The JSON body of a relay batch: ``{"v":1,"messages":[{"envelope": base64,
    "binding": base64 or null}, ...]}``, compact, written directly (the same bytes as
    ``json.dumps`` with ``separators=(",", ":")``: base64 needs no escaping)."""
    items = [b'{"envelope":"' + base64.b64encode(item.envelope) + b'","binding":'
             + (b"null" if item.binding is None
                else b'"' + base64.b64encode(item.binding) + b'"') + b"}"
             for item in batch]
    return b'{"v":1,"messages":[' + b",".join(items) + b"]}"


def within_bytes(batch: list[OutboxItem], max_bytes: int) -> list[OutboxItem]:
    """The first messages of ``batch`` whose :func:`batch_body` is at most ``max_bytes``
    (``batch_bytes``, the limit a receiver applies to the body); at least one, so that a
    message too large for any batch is still tried, alone. The store's byte limit counts
    envelopes and bindings as stored, while the body holds them in base64, a third more."""
    size = len(b'{"v":1,"messages":[]}')
    for i, item in enumerate(batch):
        size += (i > 0) + len(b'{"envelope":"","binding":}') + _b64_size(len(item.envelope)) \
            + (4 if item.binding is None else _b64_size(len(item.binding)) + 2)
        if i and size > max_bytes:
            return batch[:i]
    return batch


def _b64_size(n: int) -> int:
    return 4 * ((n + 2) // 3)


async def _reads_of(query: asyncio.Task[list[QueuedRead]]) -> list[QueuedRead]:
    """The read acknowledgements ``query`` found; none if it failed (logged): they stay
    queued for the next round."""
    try:
        return await query
    except StoreError as exc:
        log.error("read_outbox_failed", error=exc.message)
        return []


async def _wait(event: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        pass


async def _wait_any(events: tuple[asyncio.Event, ...],
                    task: asyncio.Task[Any] | None = None) -> None:
    """Until one of ``events`` is set or ``task`` (if any; left running) is done."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait([*waits, *([task] if task is not None else [])],
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _error_code(answer: bytes) -> str:
    try:
        return str(jsontext.loads(answer).get("error", "no error code"))
    except (ValueError, AttributeError):
        return "no error code"

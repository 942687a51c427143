"""Witnessing: checking that each partner's ledger only ever grows.

Every ``witness_seconds`` the gateway fetches each partner's latest signed checkpoint
(``GET /v1/ledger/checkpoint``) and compares it with the newest one it saw from that
partner before:

* larger tree: the partner must prove, with a consistency proof
  (``GET /v1/ledger/proof/consistency?old=&new=``), that the new tree extends the old one;
* same size: the root must be the same;
* smaller tree: the log shrank.

A checkpoint that passes is kept (table ``partner_checkpoints``) as the reference for the
next one. One that fails, or whose signature does not verify with the partner's key, is
refused: the old reference stays, an error is logged (``partner_ledger_alarm``), the
counter ``fpg_witness_alarms_total{partner, reason}`` goes up, and the alarm is shown
by ``gateway partners``. A partner that has made no checkpoint yet is simply skipped.
Each partner is checked by a task of its own, whose log lines carry the partner's id
(bound once for the task, ``gateway.tasks``).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import structlog

from gateway.clock import Clock
from gateway.crypto.note import NoteVerifier
from gateway.errors import LedgerError, PeerError
from gateway.federation.partners import Partner, Partners
from gateway.metrics import Metrics
from gateway.protocol import jsontext
from gateway.protocol.checkpoint import Checkpoint, open_checkpoint
from gateway.protocol.merkle import verify_consistency
from gateway.store import StoredCheckpoint, WitnessStore

log = structlog.get_logger("gateway.federation.witness")

CHECKPOINT_PATH = "/v1/ledger/checkpoint"
CONSISTENCY_PATH = "/v1/ledger/proof/consistency"
MAX_PROOF_HASHES = 128  # a consistency proof of any tree under 2^64 entries is shorter

# Outcomes of one check, and alarm reasons.
FIRST, SAME, EXTENDED, NO_CHECKPOINT = "first", "same", "extended", "no_checkpoint"
SHRANK, FORKED, BAD_SIGNATURE = "shrank", "forked", "bad_signature"


@dataclass(frozen=True)
class Alarm:
    reason: str
    time_ms: int
    seen_size: int  # size of the refused checkpoint
    kept_size: int  # size of the reference kept


class WitnessAlarm(LedgerError):
    """A partner's checkpoint is inconsistent with the one seen before (refused)."""

    code = "witness_alarm"


class Witness:
    def __init__(self, store: WitnessStore, partners: Partners, clock: Clock, metrics: Metrics,
                 interval: float) -> None:
        self.store = store
        self.partners = partners
        self.clock = clock
        self.metrics = metrics
        self.interval = interval
        self.alarms: dict[str, Alarm] = {}  # the latest alarm of each partner

    async def run(self, partner: Partner) -> None:
        """Check the partner's checkpoint every ``interval`` seconds (supervised)."""
        while True:
            try:
                await self.check(partner)
            except PeerError as exc:
                log.debug("witness_unreachable", error=exc.message)
            except WitnessAlarm:
                pass  # logged and counted where raised
            await self.clock.sleep(self.interval)

    async def check(self, partner: Partner) -> str:
        """Fetch and judge the partner's latest checkpoint: FIRST, SAME, EXTENDED or
        NO_CHECKPOINT; raises WitnessAlarm (refused) or PeerError (unreachable)."""
        status, note = await self.partners.request(partner, "GET", CHECKPOINT_PATH)
        if status == 404:
            return NO_CHECKPOINT
        if status != 200:
            raise PeerError(f"{partner.id}: checkpoint request answered HTTP {status}")
        return await self.observe(partner, note)

    async def observe(self, partner: Partner, note: bytes) -> str:
        """Judge a checkpoint note from ``partner`` against the last one kept."""
        if partner.descriptor is None:
            await self.partners.refresh(partner)
        assert partner.descriptor is not None and partner.key is not None
        origin = partner.descriptor.ledger_origin
        try:
            # Any key of the partner's followed chain: a checkpoint signed before its last
            # rotation is still its own.
            checkpoint = open_checkpoint(note, origin,
                                         [NoteVerifier(origin, k) for k in partner.keys])
        except LedgerError as exc:
            raise self._alarm(partner, BAD_SIGNATURE, 0, None, exc.message) from None
        kept = await self.store.partner_checkpoint(partner.id)
        now = self.clock.now_ms()
        outcome = FIRST
        if kept is not None:
            if checkpoint.size < kept.size:
                raise self._alarm(partner, SHRANK, checkpoint.size, kept,
                                  f"its tree went back from {kept.size} to {checkpoint.size}")
            if checkpoint.size == kept.size:
                if checkpoint.root != kept.root:
                    raise self._alarm(partner, FORKED, checkpoint.size, kept,
                                      f"two different roots for tree size {kept.size}")
                outcome = SAME
            else:
                await self._check_consistent(partner, kept, checkpoint)
                outcome = EXTENDED
        if outcome != SAME:
            await self.store.set_partner_checkpoint(
                partner.id, StoredCheckpoint(checkpoint.size, checkpoint.root, note, now))
            log.debug("witnessed", size=checkpoint.size, outcome=outcome)
        return outcome

    async def _check_consistent(self, partner: Partner, kept: StoredCheckpoint,
                                new: Checkpoint) -> None:
        path = f"{CONSISTENCY_PATH}?old={kept.size}&new={new.size}"
        status, answer = await self.partners.request(partner, "GET", path)
        if status != 200:
            # A partner that cannot prove the extension of a tree it signed has forked.
            raise self._alarm(partner, FORKED, new.size, kept,
                              f"no consistency proof from {kept.size} to {new.size} "
                              f"(HTTP {status})")
        try:
            hashes = jsontext.loads(answer)["proof"]
            if not isinstance(hashes, list) or len(hashes) > MAX_PROOF_HASHES:
                raise ValueError
            proof = [_b64decode(h) for h in hashes]
            verify_consistency(kept.size, new.size, kept.root, new.root, proof)
        except (ValueError, KeyError, TypeError, LedgerError):
            raise self._alarm(partner, FORKED, new.size, kept,
                              f"the tree of size {new.size} does not extend the one of size "
                              f"{kept.size}") from None

    def _alarm(self, partner: Partner, reason: str, seen_size: int,
               kept: StoredCheckpoint | None, detail: str) -> WitnessAlarm:
        kept_size = kept.size if kept is not None else 0
        self.alarms[partner.id] = Alarm(reason, self.clock.now_ms(), seen_size, kept_size)
        self.metrics.witness_alarms.labels(partner=partner.id, reason=reason).inc()
        log.error("partner_ledger_alarm", reason=reason, seen_size=seen_size,
                  kept_size=kept_size, detail=detail)
        return WitnessAlarm(f"{partner.id}: checkpoint refused ({reason}): {detail}")


def _b64decode(value: object) -> bytes:
    if not isinstance(value, str):
        raise TypeError
    return base64.b64decode(value, validate=True)

"""Membership a gateway cannot show differently to different officers (docs/PROTOCOL.md 7.8).

Every admission to a desk is an ``admitted`` entry of the desk's gateway's ledger, whose
``digest`` is the SHA-256 of the admission statement (7.6), which names the desk, the
officer and both its keys. Before sealing for a desk, a client asks for the desk's
**membership proofs**: the gateway's latest checkpoint, a consistency proof from the
checkpoint the client remembers, and for each member its entry with an inclusion proof.
:func:`check_membership` accepts the desk only if the checkpoint is signed by the desk's
gateway, extends the remembered one, and proves every member listed in the directory.
A gateway that shows one officer an extra reader must therefore log it where every other
officer, partner and auditor can see it; one that shows two officers different trees is
caught the first time either is shown the other's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.crypto.keys import VerifyKey
from gateway.crypto.note import NoteVerifier
from gateway.errors import ClientError, LedgerError, MalformedError, ProofError
from gateway.protocol import jsontext
from gateway.protocol.admission import Admission, admission_text
from gateway.protocol.checkpoint import Checkpoint, open_checkpoint
from gateway.protocol.merkle import HASH_SIZE, leaf_hash, verify_consistency, verify_inclusion
from gateway.protocol.officers import DirectoryEntry

ADMITTED = "admitted"  # ledger entry type of a join (gateway.ledger.events)
DEPARTED = "departed"  # and of a departure (a revoked binding)
MAX_TREE_SIZE = 10**18 - 1  # what a query may carry (18 digits), far beyond any ledger
MAX_PROOF = 64  # hashes in one proof: a tree of 2^63 entries needs fewer


def admission_digest(desk: str, officer: str, sign_key: str, enc_key: str,
                     admission: Admission) -> str:
    """The ``digest`` of an ``admitted`` entry: SHA-256 hex of the admission statement."""
    text = admission_text(desk, officer, sign_key, enc_key, admission.by, admission.at)
    return hashlib.sha256(text).hexdigest()


@dataclass(frozen=True)
class LogState:
    """What a client remembers of one gateway's ledger: its last verified checkpoint."""

    origin: str
    size: int
    root: bytes

    def to_json(self) -> dict[str, Any]:
        return {"origin": self.origin, "size": self.size,
                "root": base64.b64encode(self.root).decode("ascii")}

    @classmethod
    def from_json(cls, doc: Any) -> LogState:
        try:
            origin, size = doc["origin"], doc["size"]
            root = base64.b64decode(doc["root"], validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise MalformedError("a remembered checkpoint needs origin, size and root") \
                from None
        if (not isinstance(origin, str) or not isinstance(size, int) or isinstance(size, bool)
                or size < 0 or len(root) != HASH_SIZE):
            raise MalformedError("a remembered checkpoint needs origin, size and root")
        return cls(origin, size, root)


def proofs_answer(desk: str, checkpoint_note: bytes, known: int, consistency: list[bytes],
                  members: list[tuple[str, int, bytes, list[bytes]]]) -> dict[str, Any]:
    """The body of ``GET /v1/desks/{desk}/proofs``: ``members`` as (officer id, entry
    position, entry bytes, inclusion proof against the checkpoint)."""
    return {
        "desk": desk,
        "checkpoint": checkpoint_note.decode("utf-8"),
        "known": known,
        "consistency": [_b64(h) for h in consistency],
        "members": [{"officer": officer, "seq": seq, "entry": entry.decode("utf-8"),
                     "proof": [_b64(h) for h in proof]}
                    for officer, seq, entry, proof in members],
    }


def check_membership(answer: Any, desk: DirectoryEntry, keys: Sequence[VerifyKey],
                     known: LogState | None) -> LogState:
    """Check the membership proofs of a desk of the home gateway (which answers them
    itself, from the size the client asked): :func:`open_membership`, then that its
    checkpoint extends ``known``. The checkpoint to remember from now on."""
    seen = open_membership(answer, desk, keys)
    if known is not None:
        if answer.get("known") != known.size and seen.size != known.size:
            raise ClientError(f"{_FORK.format(size=known.size)}: the consistency proof is "
                              "from another size", code="ledger_fork")
        try:
            proof = [] if seen.size == known.size else _hashes(answer.get("consistency"))
        except MalformedError as exc:
            raise ClientError(f"{_FORK.format(size=known.size)}: {exc.message}",
                              code="ledger_fork") from None
        check_extends(known, seen, proof)
    return seen


def open_membership(answer: Any, desk: DirectoryEntry, keys: Sequence[VerifyKey]) -> LogState:
    """Check a desk's membership proofs against its directory entry (already verified):
    the checkpoint is signed by one of ``keys`` (its gateway's, newest last) and proves
    every member's ``admitted`` entry. The checkpoint; ClientError ``unproven_member``
    naming the first member it does not prove (the caller must not seal)."""
    if not isinstance(answer, Mapping):
        raise ClientError("the gateway's membership proofs are malformed",
                          code="unproven_member")
    checkpoint = _checkpoint(answer.get("checkpoint"), keys)
    entries = {m.get("officer"): m for m in _list(answer.get("members"))
               if isinstance(m, Mapping)}
    for member in desk.members:
        officer = member["officer"]
        reason = _member_unproven(desk.address, member, entries.get(officer), checkpoint)
        if reason is not None:
            raise ClientError(f"{officer} is listed as a member of {desk.address} but the "
                              f"gateway's ledger does not prove it ({reason}); nothing was "
                              "sealed", code="unproven_member")
    return LogState(checkpoint.origin, checkpoint.size, checkpoint.root)


_FORK = "the gateway's ledger does not extend the one this client saw before ({size} entries)"


def check_extends(earlier: LogState, later: LogState, proof: Sequence[bytes]) -> None:
    """``later`` extends ``earlier`` by ``proof`` (RFC 9162 consistency; equal sizes need
    equal roots); ClientError ``ledger_fork`` otherwise."""
    fork = _FORK.format(size=earlier.size)
    if later.origin != earlier.origin:
        raise ClientError(f"{fork}: its origin changed from {earlier.origin!r} to "
                          f"{later.origin!r}", code="ledger_fork")
    try:
        verify_consistency(earlier.size, later.size, earlier.root, later.root, proof)
    except ProofError as exc:
        raise ClientError(f"{fork}: {exc.message}. Someone may be shown a different "
                          "membership: do not seal; tell your security officer",
                          code="ledger_fork") from None


def consistency_hashes(proof: Any) -> list[bytes]:
    """A consistency proof as an answer carries it: base64 hashes (MalformedError)."""
    return _hashes(proof)


def check_relayed_log(answer: Any, known: LogState | None, seen: LogState) -> bool:
    """For a partner's desk, whose proofs the home gateway passes on from its copy: that
    the partner's checkpoint ``seen`` (from :func:`open_membership`) extends ``known``,
    the one the client remembers, if the answer's consistency proof starts there.
    Whether to remember ``seen``: not when the proof starts elsewhere (the partner did
    not answer; the members are proven, its log is checked at the next chance).
    ClientError ``ledger_fork`` if the partner's log does not extend ``known``."""
    if known is None or known == seen:
        return True
    if seen.size == known.size:
        check_extends(known, seen, [])  # two trees of one size: a fork, whoever passed it
    if not isinstance(answer, Mapping) or answer.get("known") != known.size:
        return False
    try:
        proof = _hashes(answer.get("consistency"))
    except MalformedError as exc:
        raise ClientError(f"{_FORK.format(size=known.size)}: {exc.message}",
                          code="ledger_fork") from None
    check_extends(known, seen, proof)
    return True


def open_log(note: Any, keys: Sequence[VerifyKey]) -> LogState:
    """A gateway's checkpoint note, signed by one of ``keys``, as the client remembers it;
    ClientError ``bad_checkpoint`` otherwise."""
    checkpoint = _checkpoint(note, keys, "bad_checkpoint")
    return LogState(checkpoint.origin, checkpoint.size, checkpoint.root)


def _checkpoint(note: Any, keys: Sequence[VerifyKey], code: str = "unproven_member"
                ) -> Checkpoint:
    if not isinstance(note, str):
        raise ClientError("the gateway's answer carries no checkpoint", code=code)
    origin = note.partition("\n")[0]
    try:
        return open_checkpoint(note.encode("utf-8"), origin,
                               [NoteVerifier(origin, key) for key in keys])
    except LedgerError as exc:
        raise ClientError(f"the ledger checkpoint is not the gateway's ({exc.message})",
                          code=code) from None


def _member_unproven(desk: str, member: Mapping[str, Any], proof: Any,
                     checkpoint: Checkpoint) -> str | None:
    """Why ``member``'s admission is not proven by ``proof`` (None: it is)."""
    if proof is None:
        return "no ledger entry"
    seq, entry = proof.get("seq"), proof.get("entry")
    if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(entry, str):
        return "a malformed entry"
    try:
        doc = jsontext.loads(entry.encode("utf-8"))
        admission = Admission.from_json(member.get("admission"))
        expected = admission_digest(desk, member["officer"], member["sign_key"],
                                    member["enc_key"], admission)
        if not (isinstance(doc, dict) and doc.get("type") == ADMITTED
                and doc.get("digest") == expected):
            return "its entry is not this admission"
        verify_inclusion(leaf_hash(entry.encode("utf-8")), seq, checkpoint.size,
                         _hashes(proof.get("proof")), checkpoint.root)
    except (ProofError, MalformedError) as exc:
        return exc.message
    return None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _hashes(value: Any) -> list[bytes]:
    if not isinstance(value, list) or len(value) > MAX_PROOF:
        raise MalformedError("a proof is a list of base64 hashes")
    try:
        return [base64.b64decode(h, validate=True) for h in value]
    except (TypeError, ValueError, binascii.Error):
        raise MalformedError("a proof is a list of base64 hashes") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")

"""Hashing and proofs for the ledger's Merkle tree (RFC 9162 section 2.1; RFC 6962).

Pure math: SHA-256 only, no I/O. Storage plugs in through node ids: the ledger stores the
hash of every complete subtree ``(level, index)`` (leaves ``[index << level,
(index + 1) << level)``), produced by :class:`CompactRange` as leaves are appended. To
serve a root or proof it asks :func:`subtree_ranges_for_size`, :func:`inclusion_path_nodes`
or :func:`consistency_path_nodes` which nodes it needs (:func:`needed_nodes`), loads them
into any mapping and calls :func:`root_from_nodes` or :func:`materialize`. Proof elements
over incomplete ranges are folds of complete subtrees, so nothing else is ever stored.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence

from gateway.errors import ProofError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "NodeId",
    "ProofError",
    "consistency_path_nodes",
    "consistency_proof",
    "fold_range",
    "inclusion_path_nodes",
    "inclusion_proof",
    "leaf_hash",
    "materialize",
    "needed_nodes",
    "node_hash",
    "root_from_leaves",
    "root_from_nodes",
    "subtree_ranges_for_size",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32

#: ``(level, index)`` of a complete subtree: leaves ``[index << level, (index + 1) << level)``.
NodeId = tuple[int, int]

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


# --- hashing ---------------------------------------------------------------------------


def leaf_hash(entry: bytes) -> bytes:
    """The hash of one log entry: SHA-256(0x00 || entry)."""
    return hashlib.sha256(_LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


#: The root of the tree with no leaves: SHA-256 of the empty string.
EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ValueError(f"{what} is {len(value)} bytes, not {HASH_SIZE}")


def root_from_leaves(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH of the given leaf hashes, straight from RFC 9162 section 2.1.1.

    The reference definition (split at the largest power of two smaller than n), O(n)
    hashes; used as an oracle and for small trees. ``EMPTY_ROOT`` for no leaves.
    """
    for i, h in enumerate(leaf_hashes):
        _check_hash(h, f"leaf hash {i}")
    if not leaf_hashes:
        return EMPTY_ROOT

    def mth(lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return leaf_hashes[lo]
        mid = lo + _split(hi - lo)
        return node_hash(mth(lo, mid), mth(mid, hi))

    return mth(0, len(leaf_hashes))


# --- node ids --------------------------------------------------------------------------


def _aligned_range_nodes(begin: int, end: int) -> list[NodeId]:
    """Complete subtrees, left to right, that make up the tree range ``[begin, end)``.

    ``[begin, end)`` must be a subtree of the RFC tree of some size, i.e. ``begin`` is a
    multiple of a power of two at least ``end - begin``; then the range splits exactly
    like the binary expansion of its length, and folding these nodes from the right
    (:func:`fold_range`) gives MTH of the range.
    """
    nodes: list[NodeId] = []
    start = begin
    for level in range((end - begin).bit_length() - 1, -1, -1):
        if (end - begin) >> level & 1:
            nodes.append((level, start >> level))
            start += 1 << level
    return nodes


def subtree_ranges_for_size(n: int) -> list[NodeId]:
    """The maximal complete subtrees of ``[0, n)``, left to right (binary expansion of n).

    These are the tree's right edge: their hashes folded from the right give the root.
    """
    if n < 0:
        raise ValueError(f"tree size {n} is negative")
    return _aligned_range_nodes(0, n)


def inclusion_path_nodes(index: int, size: int) -> list[list[NodeId]]:
    """Node ids for each element of the inclusion proof of leaf ``index`` in ``size``.

    One list per proof element, in RFC 9162 order (bottom-up: the sibling nearest the
    leaf first); each list is the complete-subtree decomposition of that element's range,
    left to right, to be folded with :func:`fold_range`. Complete ranges are one node.
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")
    top_down: list[list[NodeId]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        mid = lo + _split(hi - lo)
        if index < mid:
            top_down.append(_aligned_range_nodes(mid, hi))
            hi = mid
        else:
            top_down.append(_aligned_range_nodes(lo, mid))
            lo = mid
    top_down.reverse()
    return top_down


def consistency_path_nodes(old_size: int, new_size: int) -> list[list[NodeId]]:
    """Node ids for each element of the consistency proof from ``old_size`` to ``new_size``.

    Follows SUBPROOF of RFC 9162 section 2.1.4.1; same shape of answer as
    :func:`inclusion_path_nodes`. Empty when ``old_size`` is 0 or equals ``new_size``.
    """
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size in (0, new_size):
        return []
    top_down: list[list[NodeId]] = []
    lo, hi = 0, new_size
    old_is_subtree = True  # the "b" flag of SUBPROOF: [lo, hi) is an ancestor of old
    while old_size != hi:
        mid = lo + _split(hi - lo)
        if old_size <= mid:
            top_down.append(_aligned_range_nodes(mid, hi))
            hi = mid
        else:
            top_down.append(_aligned_range_nodes(lo, mid))
            lo = mid
            old_is_subtree = False
    if not old_is_subtree:
        # [lo, old_size) is a complete subtree the verifier cannot derive on its own.
        top_down.append(_aligned_range_nodes(lo, hi))
    top_down.reverse()
    return top_down


def needed_nodes(paths: Iterable[Iterable[NodeId]]) -> set[NodeId]:
    """Every node id the given paths refer to: what to load from storage."""
    return {node for path in paths for node in path}


# --- from stored hashes to proofs and roots --------------------------------------------


def fold_range(hashes: Sequence[bytes]) -> bytes:
    """MTH of a range from its complete subtrees' hashes, left to right: fold from the right."""
    if not hashes:
        raise ValueError("cannot fold an empty range")
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def _lookup(lookup: Mapping[NodeId, bytes], node: NodeId) -> bytes:
    try:
        value = lookup[node]
    except KeyError:
        raise KeyError(f"hash of node (level={node[0]}, index={node[1]}) is missing") from None
    _check_hash(value, f"hash of node (level={node[0]}, index={node[1]})")
    return value


def materialize(paths: Sequence[Sequence[NodeId]], lookup: Mapping[NodeId, bytes]) -> list[bytes]:
    """Turn paths of node ids into proof hashes, one per path, from stored node hashes."""
    return [fold_range([_lookup(lookup, node) for node in path]) for path in paths]


def root_from_nodes(size: int, lookup: Mapping[NodeId, bytes]) -> bytes:
    """Root of the tree of ``size`` leaves from stored complete-subtree hashes."""
    nodes = subtree_ranges_for_size(size)
    if not nodes:
        return EMPTY_ROOT
    return fold_range([_lookup(lookup, node) for node in nodes])


def _node_table(leaf_hashes: Sequence[bytes]) -> dict[NodeId, bytes]:
    """Every complete subtree's hash of a tree, built the way the ledger builds it."""
    table: dict[NodeId, bytes] = {}
    frontier = CompactRange()
    for h in leaf_hashes:
        for level, index, value in frontier.append(h):
            table[(level, index)] = value
    return table


def inclusion_proof(index: int, size: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """Inclusion proof of leaf ``index`` in the first ``size`` leaves (tests, small trees)."""
    if size > len(leaf_hashes):
        raise ValueError(f"tree size {size} exceeds the {len(leaf_hashes)} leaves given")
    paths = inclusion_path_nodes(index, size)
    return materialize(paths, _node_table(leaf_hashes[:size]))


def consistency_proof(old_size: int, new_size: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """Consistency proof from ``old_size`` to ``new_size`` leaves (tests, small trees)."""
    if new_size > len(leaf_hashes):
        raise ValueError(f"tree size {new_size} exceeds the {len(leaf_hashes)} leaves given")
    paths = consistency_path_nodes(old_size, new_size)
    return materialize(paths, _node_table(leaf_hashes[:new_size]))


# --- incremental builder ---------------------------------------------------------------


class CompactRange:
    """The right edge ("frontier") of a growing tree: enough to append and to get the root.

    Holds the tree size and the hashes of its maximal complete subtrees, left to right
    (the nodes :func:`subtree_ranges_for_size` names), so one hash per set bit of size.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        if size < 0:
            raise ValueError(f"tree size {size} is negative")
        hash_list = list(hashes)
        if len(hash_list) != size.bit_count():
            raise ValueError(
                f"a tree of size {size} has {size.bit_count()} frontier hashes, "
                f"not {len(hash_list)}"
            )
        for i, h in enumerate(hash_list):
            _check_hash(h, f"frontier hash {i}")
        self._size = size
        self._hashes = hash_list

    @classmethod
    def from_lookup(cls, size: int, lookup: Mapping[NodeId, bytes]) -> CompactRange:
        """The frontier of the stored tree of ``size`` leaves, from stored node hashes."""
        return cls(size, [_lookup(lookup, node) for node in subtree_ranges_for_size(size)])

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """Hashes of the maximal complete subtrees, left to right (largest first)."""
        return tuple(self._hashes)

    def append(self, leaf_hash: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf; return ``(level, index, hash)`` of every newly complete subtree.

        These are exactly the nodes the ledger must store for this leaf: the leaf itself
        at level 0, then each ancestor it completes, bottom-up.
        """
        _check_hash(leaf_hash, "leaf hash")
        created = [(0, self._size, leaf_hash)]
        acc = leaf_hash
        level = 0
        # Each set low bit of size is a complete subtree of the same height to our left.
        while self._size >> level & 1:
            acc = node_hash(self._hashes.pop(), acc)
            level += 1
            created.append((level, self._size >> level, acc))
        self._hashes.append(acc)
        self._size += 1
        return created

    def append_nodes(self, leaf_hash: bytes) -> bytes:
        """:meth:`append`, returning only what the ledger stores beside the leaf.

        That is the hashes of the subtrees of level 1 and up that this leaf completes,
        bottom-up and concatenated (empty for a leaf at an even index). The hot path of
        every ledger append, so it builds no tuples.
        """
        if len(leaf_hash) != HASH_SIZE:
            _check_hash(leaf_hash, "leaf hash")
        hashes = self._hashes
        size = self._size
        acc = leaf_hash
        out = b""
        sha256 = hashlib.sha256
        while size & 1:
            acc = sha256(_NODE_PREFIX + hashes.pop() + acc).digest()
            out += acc
            size >>= 1
        hashes.append(acc)
        self._size += 1
        return out

    def root(self) -> bytes:
        """Root hash of the tree of :attr:`size` leaves."""
        if not self._hashes:
            return EMPTY_ROOT
        return fold_range(self._hashes)

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size})"


# --- verification ----------------------------------------------------------------------


def _check_proof_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, not {HASH_SIZE}")


def _inclusion_length(index: int, size: int) -> int:
    """Exact number of elements in the inclusion proof of ``index`` in ``size``.

    Below the level where the paths to ``index`` and to the last leaf part, every level
    contributes one sibling; above it, one left sibling per set bit of the shared prefix.
    """
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def _consistency_length(old_size: int, new_size: int) -> int:
    """Exact number of elements in the consistency proof, ``0 < old_size < new_size``.

    It is the inclusion proof of leaf ``old_size - 1`` in ``new_size`` less the levels
    inside the largest complete subtree ending at ``old_size`` (that subtree's hash is sent
    instead, unless it is the whole old tree, which the verifier already has).
    """
    shift = (old_size & -old_size).bit_length() - 1  # trailing zero bits of old_size
    length = _inclusion_length(old_size - 1, new_size) - shift
    return length if old_size == 1 << shift else length + 1


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` with ``root``.

    RFC 9162 section 2.1.3.2. Raises :class:`ProofError` on any failure; returns None.
    """
    if index < 0 or size < 0:
        raise ProofError(f"negative leaf index {index} or tree size {size}")
    if index >= size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    _check_proof_hash(leaf_hash, "leaf hash")
    _check_proof_hash(root, "root")
    expected = _inclusion_length(index, size)
    if len(proof) != expected:
        raise ProofError(
            f"inclusion proof for leaf {index} of {size} has {len(proof)} elements, "
            f"expected {expected}"
        )
    for i, p in enumerate(proof):
        _check_proof_hash(p, f"proof element {i}")

    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    if not hmac.compare_digest(r, root):
        raise ProofError(f"inclusion proof for leaf {index} of {size} does not match the root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``new_size`` with ``new_root`` extends the one of ``old_size``.

    RFC 9162 section 2.1.4.2, plus the trivial cases: equal sizes need an empty proof and
    equal roots; from size 0 the proof is empty and ``old_root`` must be ``EMPTY_ROOT``.
    Raises :class:`ProofError` on any failure; returns None.
    """
    if old_size < 0 or new_size < 0:
        raise ProofError(f"negative tree size {old_size} or {new_size}")
    if old_size > new_size:
        raise ProofError(f"tree size went back from {old_size} to {new_size}")
    _check_proof_hash(old_root, "old root")
    _check_proof_hash(new_root, "new root")
    for i, p in enumerate(proof):
        _check_proof_hash(p, f"proof element {i}")

    if old_size == new_size:
        if proof:
            raise ProofError(f"consistency proof between equal sizes {old_size} is not empty")
        if not hmac.compare_digest(old_root, new_root):
            raise ProofError(f"two different roots for the same tree size {old_size}")
        return
    if old_size == 0:
        if proof:
            raise ProofError("consistency proof from the empty tree is not empty")
        if not hmac.compare_digest(old_root, EMPTY_ROOT):
            raise ProofError("the root of the empty tree is not EMPTY_ROOT")
        return

    expected = _consistency_length(old_size, new_size)
    if len(proof) != expected:
        raise ProofError(
            f"consistency proof from {old_size} to {new_size} has {len(proof)} elements, "
            f"expected {expected}"
        )

    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    old_ok = hmac.compare_digest(fr, old_root)
    new_ok = hmac.compare_digest(sr, new_root)
    if not (old_ok and new_ok):
        raise ProofError(
            f"consistency proof from {old_size} to {new_size} does not match the "
            f"{'old' if not old_ok else 'new'} root"
        )

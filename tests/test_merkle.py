"""Tests of gateway.protocol.merkle: published vectors, exhaustive small trees, properties."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cache

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gateway.protocol import merkle
from gateway.protocol.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    CompactRange,
    NodeId,
    ProofError,
    consistency_path_nodes,
    consistency_proof,
    fold_range,
    inclusion_path_nodes,
    inclusion_proof,
    leaf_hash,
    materialize,
    needed_nodes,
    node_hash,
    root_from_leaves,
    root_from_nodes,
    subtree_ranges_for_size,
    verify_consistency,
    verify_inclusion,
)

# No example database on disk: the suite must leave the checkout untouched.
PROPERTY = settings(database=None, deadline=None, max_examples=25)

# --- published vectors -----------------------------------------------------------------
#
# The 8-entry test tree shared by Certificate Transparency (merkle_tree_test) and
# transparency-dev/merkle: entries, roots of the first 1..8 entries, and proofs are from
# https://github.com/transparency-dev/merkle/blob/main/proof/verify_test.go
# (read at commit 02194e9afb6c1d95b5381350007963aa70fff472). That file numbers leaves
# from 1; the indices below are 0-based.

CT_ENTRIES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
CT_LEAVES = [leaf_hash(e) for e in CT_ENTRIES]

# RFC 6962 / 9162: the root of the empty tree is SHA-256 of the empty string.
CT_EMPTY_ROOT = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

# CT_ROOTS[n - 1] is the root of the first n entries (source above).
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]

# (0-based leaf index, tree size, proof), source above (`inclusionProofs`).
CT_INCLUSION = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]

# (old size, new size, proof), source above (`consistencyProofs`).
CT_CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]

# Node addresses of proofs, from
# https://github.com/transparency-dev/merkle/blob/main/log_proofs_test.go
# (TestInclusion and TestCalcConsistencyProofNodeAddresses, read at commit
# 24040d9a1e5b581df09151f147154e8f40d1d9b4). There a "rehash" group lists the nodes of
# one incomplete range bottom-up; here each group is written left to right (reversed).
TD_INCLUSION_NODES: list[tuple[int, int, list[list[NodeId]]]] = [  # (size, index, paths)
    (1, 0, []),
    (2, 0, [[(0, 1)]]),
    (2, 1, [[(0, 0)]]),
    (3, 1, [[(0, 0)], [(0, 2)]]),
    (7, 0, [[(0, 1)], [(1, 1)], [(1, 2), (0, 6)]]),
    (7, 1, [[(0, 0)], [(1, 1)], [(1, 2), (0, 6)]]),
    (7, 2, [[(0, 3)], [(1, 0)], [(1, 2), (0, 6)]]),
    (7, 3, [[(0, 2)], [(1, 0)], [(1, 2), (0, 6)]]),
    (7, 4, [[(0, 5)], [(0, 6)], [(2, 0)]]),
    (7, 5, [[(0, 4)], [(0, 6)], [(2, 0)]]),
    (7, 6, [[(1, 2)], [(2, 0)]]),
    (4, 2, [[(0, 3)], [(1, 0)]]),
    (5, 3, [[(0, 2)], [(1, 0)], [(0, 4)]]),
    (6, 3, [[(0, 2)], [(1, 0)], [(1, 2)]]),
    (6, 4, [[(0, 5)], [(2, 0)]]),
    (15, 10, [[(0, 11)], [(1, 4)], [(1, 6), (0, 14)], [(3, 0)]]),
    (31, 24, [[(0, 25)], [(1, 13)], [(1, 14), (0, 30)], [(3, 2)], [(4, 0)]]),
    (
        95,
        81,
        [[(0, 80)], [(1, 41)], [(2, 21)], [(2, 22), (1, 46), (0, 94)], [(4, 4)], [(6, 0)]],
    ),
]
TD_CONSISTENCY_NODES: list[tuple[int, int, list[list[NodeId]]]] = [  # (old, new, paths)
    (1, 2, [[(0, 1)]]),
    (1, 4, [[(0, 1)], [(1, 1)]]),
    (1, 6, [[(0, 1)], [(1, 1)], [(1, 2)]]),
    (2, 3, [[(0, 2)]]),
    (2, 8, [[(1, 1)], [(2, 1)]]),
    (3, 7, [[(0, 2)], [(0, 3)], [(1, 0)], [(1, 2), (0, 6)]]),
    (4, 7, [[(1, 2), (0, 6)]]),
    (5, 7, [[(0, 4)], [(0, 5)], [(0, 6)], [(2, 0)]]),
    (6, 7, [[(1, 2)], [(0, 6)], [(2, 0)]]),
    (7, 8, [[(0, 6)], [(0, 7)], [(1, 2)], [(2, 0)]]),
    (1, 1, []),
    (2, 2, []),
    (3, 3, []),
    (4, 4, []),
    (5, 5, []),
    (7, 7, []),
    (8, 8, []),
    (2, 4, [[(1, 1)]]),
    (3, 5, [[(0, 2)], [(0, 3)], [(1, 0)], [(0, 4)]]),
    (3, 6, [[(0, 2)], [(0, 3)], [(1, 0)], [(1, 2)]]),
    (4, 6, [[(1, 2)]]),
    (1, 7, [[(0, 1)], [(1, 1)], [(1, 2), (0, 6)]]),
    (10, 15, [[(1, 4)], [(1, 5)], [(1, 6), (0, 14)], [(3, 0)]]),
    (24, 31, [[(3, 2)], [(2, 6), (1, 14), (0, 30)], [(4, 0)]]),
    (
        81,
        95,
        [
            [(0, 80)],
            [(0, 81)],
            [(1, 41)],
            [(2, 21)],
            [(2, 22), (1, 46), (0, 94)],
            [(4, 4)],
            [(6, 0)],
        ],
    ),
]


def _hx(values: Sequence[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


def test_empty_root_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT.hex() == CT_EMPTY_ROOT
    assert root_from_leaves([]) == EMPTY_ROOT
    assert CompactRange().root() == EMPTY_ROOT
    assert root_from_nodes(0, {}) == EMPTY_ROOT
    assert HASH_SIZE == 32


def test_domain_separated_hashes() -> None:
    import hashlib

    a, b = bytes(range(32)), bytes(range(32, 64))
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()
    # The 1-entry tree's root is the hash of the empty entry (first published root).
    assert leaf_hash(b"").hex() == CT_ROOTS[0]


@pytest.mark.parametrize("n", range(1, 9))
def test_published_roots(n: int) -> None:
    want = CT_ROOTS[n - 1]
    leaves = CT_LEAVES[:n]
    assert root_from_leaves(leaves).hex() == want
    frontier = CompactRange()
    table: dict[NodeId, bytes] = {}
    for h in leaves:
        table.update({(lvl, idx): v for lvl, idx, v in frontier.append(h)})
    assert frontier.root().hex() == want
    assert root_from_nodes(n, table).hex() == want


@pytest.mark.parametrize(("index", "size", "proof"), CT_INCLUSION)
def test_published_inclusion_proofs(index: int, size: int, proof: list[str]) -> None:
    want = _hx(proof)
    root = bytes.fromhex(CT_ROOTS[size - 1])
    assert inclusion_proof(index, size, CT_LEAVES) == want
    verify_inclusion(CT_LEAVES[index], index, size, want, root)
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(b"WrongLeaf"), index, size, want, root)


@pytest.mark.parametrize(("old", "new", "proof"), CT_CONSISTENCY)
def test_published_consistency_proofs(old: int, new: int, proof: list[str]) -> None:
    want = _hx(proof)
    old_root, new_root = bytes.fromhex(CT_ROOTS[old - 1]), bytes.fromhex(CT_ROOTS[new - 1])
    assert consistency_proof(old, new, CT_LEAVES) == want
    verify_consistency(old, new, old_root, new_root, want)
    if want:
        with pytest.raises(ProofError):
            verify_consistency(old, new, new_root, old_root, want)


@pytest.mark.parametrize(("size", "index", "paths"), TD_INCLUSION_NODES)
def test_published_inclusion_node_addresses(
    size: int, index: int, paths: list[list[NodeId]]
) -> None:
    assert inclusion_path_nodes(index, size) == paths


@pytest.mark.parametrize(("old", "new", "paths"), TD_CONSISTENCY_NODES)
def test_published_consistency_node_addresses(
    old: int, new: int, paths: list[list[NodeId]]
) -> None:
    assert consistency_path_nodes(old, new) == paths


# --- independent oracles ---------------------------------------------------------------
#
# RFC 9162 sections 2.1.3.1 and 2.1.4.1 written literally over lists of leaf hashes, and a
# brute-force table of every complete subtree: nothing here shares code with the module
# except root_from_leaves (checked against published roots above) and the two hashes.


def _rfc_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*_rfc_path(m, d[:k]), root_from_leaves(d[k:])]
    return [*_rfc_path(m - k, d[k:]), root_from_leaves(d[:k])]


def _rfc_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [root_from_leaves(d)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*_rfc_subproof(m, d[:k], b), root_from_leaves(d[k:])]
    return [*_rfc_subproof(m - k, d[k:], False), root_from_leaves(d[:k])]


def _brute_table(leaves: Sequence[bytes]) -> dict[NodeId, bytes]:
    table: dict[NodeId, bytes] = {}
    level = 0
    while 1 << level <= len(leaves):
        width = 1 << level
        for i in range(len(leaves) // width):
            table[(level, i)] = root_from_leaves(leaves[i * width : (i + 1) * width])
        level += 1
    return table


def _leaves(n: int) -> list[bytes]:
    return [leaf_hash(b"entry %d" % i) for i in range(n)]


SWEEP_MAX = 64
SWEEP_LEAVES = _leaves(SWEEP_MAX)


@cache
def _sweep_table() -> dict[NodeId, bytes]:
    return _brute_table(SWEEP_LEAVES)


@cache
def _root(n: int) -> bytes:
    return root_from_leaves(SWEEP_LEAVES[:n])


def _node_span(node: NodeId) -> tuple[int, int]:
    level, index = node
    return index << level, (index + 1) << level


def _path_span(path: Sequence[NodeId]) -> tuple[int, int]:
    return _node_span(path[0])[0], _node_span(path[-1])[1]


# Symbolic shape of a proof: the expression tree by which the verifier combines the proof
# elements into the root(s). Two (index, size) or (old, new) pairs with the same shape
# accept the same proofs, because a proof carries no size; the signed tree head binds the
# size. A wrong size must be refused exactly when the shape differs.
Expr = object


def _sym(lo: int, hi: int, marks: dict[tuple[int, int], Expr]) -> Expr:
    if (lo, hi) in marks:
        return marks[(lo, hi)]
    if hi - lo == 1:
        return ("unknown leaf", lo)
    mid = lo + (1 << ((hi - lo - 1).bit_length() - 1))
    return ("H", _sym(lo, mid, marks), _sym(mid, hi, marks))


def _inclusion_shape(index: int, size: int) -> Expr:
    marks: dict[tuple[int, int], Expr] = {(index, index + 1): "leaf"}
    for i, path in enumerate(inclusion_path_nodes(index, size)):
        marks[_path_span(path)] = ("p", i)
    return _sym(0, size, marks)


def _consistency_shape(old: int, new: int) -> Expr:
    marks: dict[tuple[int, int], Expr] = {}
    if old & (old - 1) == 0:
        marks[(0, old)] = "old root"
    for i, path in enumerate(consistency_path_nodes(old, new)):
        marks[_path_span(path)] = ("p", i)
    return (_sym(0, old, marks), _sym(0, new, marks))


# --- node addresses and storage ---------------------------------------------------------


@pytest.mark.parametrize("n", range(131))
def test_roots_from_nodes_and_frontier_agree_with_reference(n: int) -> None:
    leaves = _leaves(n)
    want = root_from_leaves(leaves)
    table = _brute_table(leaves)
    assert root_from_nodes(n, table) == want
    # The decomposition is the binary expansion of n, largest subtree first, covering [0, n).
    ranges = subtree_ranges_for_size(n)
    assert [1 << lvl for lvl, _ in ranges] == [1 << b for b in reversed(range(8)) if n >> b & 1]
    assert [_node_span(r) for r in ranges] == [
        (sum(1 << lvl for lvl, _ in ranges[:i]), sum(1 << lvl for lvl, _ in ranges[: i + 1]))
        for i in range(len(ranges))
    ]
    frontier = CompactRange()
    for h in leaves:
        frontier.append(h)
    assert frontier.size == n
    assert frontier.root() == want
    assert frontier.hashes == tuple(table[r] for r in ranges)
    resumed = CompactRange.from_lookup(n, table)
    assert resumed.root() == want
    assert CompactRange(n, frontier.hashes).root() == want


def test_append_returns_exactly_the_nodes_to_store() -> None:
    n = 130
    leaves = _leaves(n)
    table = _brute_table(leaves)
    frontier = CompactRange()
    stored: dict[NodeId, bytes] = {}
    for size, h in enumerate(leaves):
        created = frontier.append(h)
        # The new nodes are the complete subtrees whose last leaf is this one, bottom-up.
        want = [(lvl, idx) for lvl, idx in table if (idx + 1) << lvl == size + 1]
        assert [(lvl, idx) for lvl, idx, _ in created] == sorted(want)
        for lvl, idx, value in created:
            assert value == table[(lvl, idx)]
            assert (lvl, idx) not in stored
            stored[(lvl, idx)] = value
        # What is stored so far answers every query about every size reached so far.
        assert root_from_nodes(size + 1, stored) == root_from_leaves(leaves[: size + 1])
    assert stored == table


def test_append_example_from_the_design() -> None:
    frontier = CompactRange()
    for h in _leaves(3):
        frontier.append(h)
    created = frontier.append(_leaves(4)[3])
    assert [(lvl, idx) for lvl, idx, _ in created] == [(0, 3), (1, 1), (2, 0)]
    assert frontier.hashes == (created[-1][2],)


def test_compact_range_validation() -> None:
    h = leaf_hash(b"x")
    with pytest.raises(ValueError):
        CompactRange(3, [h])
    with pytest.raises(ValueError):
        CompactRange(1, [])
    with pytest.raises(ValueError):
        CompactRange(-1)
    with pytest.raises(ValueError):
        CompactRange(1, [h[:31]])
    with pytest.raises(ValueError):
        CompactRange().append(b"short")
    with pytest.raises(KeyError):
        CompactRange.from_lookup(3, {(1, 0): h})
    assert CompactRange(3, [h, h]).size == 3


def test_storage_helpers() -> None:
    a, b, c = _leaves(3)
    assert fold_range([a]) == a
    assert fold_range([a, b, c]) == node_hash(a, node_hash(b, c))
    with pytest.raises(ValueError):
        fold_range([])
    paths = [[(0, 1)], [(1, 2), (0, 6)], [(2, 0)]]
    assert needed_nodes(paths) == {(0, 1), (1, 2), (0, 6), (2, 0)}
    assert needed_nodes([]) == set()
    with pytest.raises(KeyError):
        materialize(paths, {(0, 1): a})
    with pytest.raises(ValueError):
        inclusion_path_nodes(3, 3)
    with pytest.raises(ValueError):
        inclusion_path_nodes(-1, 3)
    with pytest.raises(ValueError):
        consistency_path_nodes(4, 3)
    with pytest.raises(ValueError):
        inclusion_proof(0, 4, [a, b, c])
    assert consistency_path_nodes(0, 5) == []
    assert consistency_path_nodes(5, 5) == []


@pytest.mark.parametrize("n", range(1, SWEEP_MAX + 1))
def test_path_nodes_match_the_rfc_algorithms(n: int) -> None:
    leaves = SWEEP_LEAVES[:n]
    table = _sweep_table()
    for index in range(n):
        paths = inclusion_path_nodes(index, n)
        for path in paths:  # each element is one tree range, split as its binary expansion
            assert _path_span(path) == (_node_span(path[0])[0], _node_span(path[-1])[1])
            assert [_node_span(x)[1] for x in path[:-1]] == [_node_span(x)[0] for x in path[1:]]
        assert materialize(paths, table) == _rfc_path(index, leaves)
    assert inclusion_proof(n - 1, n, leaves) == _rfc_path(n - 1, leaves)
    for old in range(1, n + 1):
        paths = consistency_path_nodes(old, n)
        assert materialize(paths, table) == _rfc_subproof(old, leaves, True)
    assert consistency_proof(1, n, leaves) == _rfc_subproof(1, leaves, True)


# --- exhaustive verification sweep -----------------------------------------------------

ALL_BITS_MAX = 16  # every bit of every element up to this tree size, sampled bits above


def _bits_to_flip(n: int, rng: random.Random) -> Sequence[int]:
    if n <= ALL_BITS_MAX:
        return range(HASH_SIZE * 8)
    return [0, 7, 255, *rng.sample(range(1, 255), 3)]


def _flip(value: bytes, bit: int) -> bytes:
    out = bytearray(value)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def _mutations(proof: list[bytes], n: int, rng: random.Random) -> list[tuple[str, list[bytes]]]:
    """Every proof that must be refused: bit flips, wrong lengths, wrong element sizes."""
    out: list[tuple[str, list[bytes]]] = []
    for i, element in enumerate(proof):
        for bit in _bits_to_flip(n, rng):
            out.append(
                (f"flip bit {bit} of [{i}]", [*proof[:i], _flip(element, bit), *proof[i + 1 :]])
            )
        out.append((f"[{i}] truncated", [*proof[:i], element[:-1], *proof[i + 1 :]]))
        out.append((f"[{i}] extended", [*proof[:i], element + b"\x00", *proof[i + 1 :]]))
    extra = leaf_hash(b"extra")
    out.append(("extra element at end", [*proof, extra]))
    out.append(("extra element at start", [extra, *proof]))
    if proof:
        out.append(("last element repeated", [*proof, proof[-1]]))
        out.append(("first element dropped", proof[1:]))
        out.append(("last element dropped", proof[:-1]))
    if len(proof) > 1:
        out.append(("two elements swapped", [proof[1], proof[0], *proof[2:]]))
    return out


def _refused(verify: Callable[..., None], *args: object) -> bool:
    try:
        verify(*args)
    except ProofError:
        return True
    return False


@pytest.mark.parametrize("n", range(1, SWEEP_MAX + 1))
def test_inclusion_sweep(n: int) -> None:
    rng = random.Random(n)
    table = _sweep_table()
    root = _root(n)
    for index in range(n):
        leaf = SWEEP_LEAVES[index]
        proof = materialize(inclusion_path_nodes(index, n), table)
        verify_inclusion(leaf, index, n, proof, root)

        for why, bad in _mutations(proof, n, rng):
            assert _refused(verify_inclusion, leaf, index, n, bad, root), why
        for bit in _bits_to_flip(n, rng):
            assert _refused(verify_inclusion, _flip(leaf, bit), index, n, proof, root)
            assert _refused(verify_inclusion, leaf, index, n, proof, _flip(root, bit))
        assert _refused(verify_inclusion, leaf, index, n, proof, root[:-1])
        assert _refused(verify_inclusion, leaf[:-1], index, n, proof, root)
        if n > 1:
            other = SWEEP_LEAVES[(index + 1) % n]
            assert _refused(verify_inclusion, other, index, n, proof, root)
            assert _refused(verify_inclusion, leaf, index, n, proof, _root(n - 1))

        # A wrong index is always refused: distinct indices give distinct shapes.
        for wrong in {index - 1, index + 1, index ^ 1, index ^ 2, n, n + 5, -1}:
            if wrong != index:
                assert _refused(verify_inclusion, leaf, wrong, n, proof, root), wrong
        # A wrong size is refused unless it leaves the path's shape unchanged.
        for wrong in {n - 1, n + 1, n * 2, n // 2, n ^ 1, n ^ 2, 0, index}:
            if wrong == n:
                continue
            refused = _refused(verify_inclusion, leaf, index, wrong, proof, root)
            same_shape = index < wrong and _inclusion_shape(index, wrong) == _inclusion_shape(
                index, n
            )
            assert refused != same_shape, (index, n, wrong)


@pytest.mark.parametrize("n", range(1, SWEEP_MAX + 1))
def test_consistency_sweep(n: int) -> None:
    rng = random.Random(1000 + n)
    table = _sweep_table()
    new_root = _root(n)
    for old in range(1, n + 1):
        old_root = _root(old)
        proof = materialize(consistency_path_nodes(old, n), table)
        verify_consistency(old, n, old_root, new_root, proof)

        if old == n:
            assert proof == []
            assert _refused(verify_consistency, n, n, old_root, new_root, [old_root])
            if n > 1:
                assert _refused(verify_consistency, n, n, _root(n - 1), new_root, [])
            continue

        for why, bad in _mutations(proof, n, rng):
            assert _refused(verify_consistency, old, n, old_root, new_root, bad), (old, why)
        assert _refused(verify_consistency, old, n, old_root, new_root, [])
        assert _refused(verify_consistency, old, n, new_root, old_root, proof)
        assert _refused(verify_consistency, n, old, old_root, new_root, proof)
        assert _refused(verify_consistency, 0, n, old_root, new_root, proof)
        assert _refused(verify_consistency, old, old, old_root, new_root, proof)
        assert _refused(verify_consistency, old, n, old_root[:-1], new_root, proof)
        for bit in _bits_to_flip(n, rng):
            assert _refused(verify_consistency, old, n, _flip(old_root, bit), new_root, proof)
            assert _refused(verify_consistency, old, n, old_root, _flip(new_root, bit), proof)

        # Wrong sizes are refused unless they leave the proof's shape unchanged.
        candidates = {
            (old - 1, n),
            (old + 1, n),
            (old ^ 2, n),
            (old, n - 1),
            (old, n + 1),
            (old, n * 2),
            (old // 2, n // 2),
            (old * 2, n * 2),
        }
        for wo, wn in candidates:
            if (wo, wn) == (old, n) or not 0 < wo < wn:
                continue
            refused = _refused(verify_consistency, wo, wn, old_root, new_root, proof)
            same_shape = _consistency_shape(wo, wn) == _consistency_shape(old, n)
            assert refused != same_shape, (old, n, wo, wn)


def test_malformed_proofs_are_refused_before_any_hashing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = 0

    def counting_node_hash(left: bytes, right: bytes) -> bytes:
        nonlocal calls
        calls += 1
        return node_hash(left, right)

    monkeypatch.setattr(merkle, "node_hash", counting_node_hash)
    table = _sweep_table()
    extra = leaf_hash(b"extra")
    for n in range(1, 33):
        for index in range(n):
            proof = materialize(inclusion_path_nodes(index, n), table)
            leaf, root = SWEEP_LEAVES[index], _root(n)
            bad_proofs = [[*proof, extra], [extra, *proof], proof[1:], proof[:-1]]
            bad_proofs += [[*proof[:i], p[:-1], *proof[i + 1 :]] for i, p in enumerate(proof)]
            for bad in bad_proofs:
                if bad == proof:
                    continue
                calls = 0
                with pytest.raises(ProofError):
                    verify_inclusion(leaf, index, n, bad, root)
                assert calls == 0, (index, n, len(bad))
        for old in range(1, n):
            proof = materialize(consistency_path_nodes(old, n), table)
            bad_proofs = [[*proof, extra], [extra, *proof], proof[1:], proof[:-1]]
            bad_proofs += [[*proof[:i], p + b"!", *proof[i + 1 :]] for i, p in enumerate(proof)]
            for bad in bad_proofs:
                old_root, new_root = _root(old), _root(n)
                calls = 0
                with pytest.raises(ProofError):
                    verify_consistency(old, n, old_root, new_root, bad)
                assert calls == 0, (old, n, len(bad))
    # The counter does see the verifiers' hashing.
    calls = 0
    verify_consistency(3, 5, _root(3), _root(5), consistency_proof(3, 5, SWEEP_LEAVES))
    assert calls > 0


def test_trivial_and_malformed_consistency() -> None:
    r1, r2 = _root(1), _root(2)
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(0, 5, EMPTY_ROOT, _root(5), [])
    verify_consistency(3, 3, _root(3), _root(3), [])
    for bad in (
        lambda: verify_consistency(0, 5, EMPTY_ROOT, _root(5), [r1]),
        lambda: verify_consistency(0, 5, r1, _root(5), []),  # size 0 has one root
        lambda: verify_consistency(0, 0, EMPTY_ROOT, r1, []),
        lambda: verify_consistency(1, 1, r1, r2, []),
        lambda: verify_consistency(1, 1, r1, r1, [r1]),
        lambda: verify_consistency(2, 1, r2, r1, []),
        lambda: verify_consistency(1, 2, r1, r2, []),
        lambda: verify_consistency(-1, 2, r1, r2, []),
        lambda: verify_consistency(1, 2, r1, r2, [b"short"]),
    ):
        assert _refused(bad)


def test_trivial_and_malformed_inclusion() -> None:
    h = SWEEP_LEAVES[0]
    verify_inclusion(h, 0, 1, [], h)  # a 1-leaf tree's root is its leaf hash
    for bad in (
        lambda: verify_inclusion(h, 0, 0, [], EMPTY_ROOT),
        lambda: verify_inclusion(h, 1, 1, [], h),
        lambda: verify_inclusion(h, -1, 1, [], h),
        lambda: verify_inclusion(h, 0, 1, [h], h),
        lambda: verify_inclusion(h, 0, 1, [], b""),
        lambda: verify_inclusion(b"", 0, 1, [], h),
        lambda: verify_inclusion(h, 0, 2, [b"\x00" * 31], h),
    ):
        assert _refused(bad)


def test_proof_error_is_a_value_error() -> None:
    assert issubclass(ProofError, ValueError)
    with pytest.raises(ValueError, match="leaf index"):
        verify_inclusion(SWEEP_LEAVES[0], 3, 2, [], _root(2))


# --- properties over bigger trees ------------------------------------------------------

BIG = 3000


@cache
def _big() -> tuple[list[bytes], dict[NodeId, bytes]]:
    leaves = _leaves(BIG)
    table: dict[NodeId, bytes] = {}
    frontier = CompactRange()
    for h in leaves:
        table.update({(lvl, idx): v for lvl, idx, v in frontier.append(h)})
    return leaves, table


@PROPERTY
@given(st.integers(min_value=0, max_value=5000))
def test_frontier_root_matches_reference(n: int) -> None:
    leaves = _leaves(n)
    frontier = CompactRange()
    for h in leaves:
        frontier.append(h)
    assert frontier.root() == root_from_leaves(leaves)


@PROPERTY
@given(st.data())
def test_random_proofs_in_a_big_tree(data: st.DataObject) -> None:
    leaves, table = _big()
    n = data.draw(st.integers(min_value=1, max_value=BIG), label="n")
    m = data.draw(st.integers(min_value=1, max_value=n), label="m")
    index = data.draw(st.integers(min_value=0, max_value=n - 1), label="index")
    new_root = root_from_nodes(n, table)
    old_root = root_from_nodes(m, table)
    assert new_root == root_from_leaves(leaves[:n])

    proof = materialize(consistency_path_nodes(m, n), table)
    verify_consistency(m, n, old_root, new_root, proof)
    inclusion = materialize(inclusion_path_nodes(index, n), table)
    verify_inclusion(leaves[index], index, n, inclusion, new_root)

    # Resuming the frontier from storage at m and appending the rest reaches the same root.
    frontier = CompactRange.from_lookup(m, table)
    for h in leaves[m:n]:
        frontier.append(h)
    assert frontier.root() == new_root

    # Only the nodes the paths name are needed to serve the proof.
    paths = consistency_path_nodes(m, n)
    subset = {node: table[node] for node in needed_nodes(paths)}
    assert materialize(paths, subset) == proof


@PROPERTY
@given(
    st.integers(min_value=1, max_value=1 << 40),
    st.data(),
)
def test_random_garbage_never_verifies(size: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    length = len(inclusion_path_nodes(index, size))
    proof = data.draw(
        st.lists(st.binary(min_size=32, max_size=32), min_size=length, max_size=length)
    )
    leaf = data.draw(st.binary(min_size=32, max_size=32))
    root = data.draw(st.binary(min_size=32, max_size=32))
    assume(leaf != root)  # a 1-leaf tree's root is its leaf: not garbage
    assert _refused(verify_inclusion, leaf, index, size, proof, root)
    old = data.draw(st.integers(min_value=1, max_value=size))
    clen = len(consistency_path_nodes(old, size))
    cproof = data.draw(st.lists(st.binary(min_size=32, max_size=32), min_size=clen, max_size=clen))
    if old < size:
        assert _refused(verify_consistency, old, size, root, leaf, cproof)


class _UniformTree(Mapping[NodeId, bytes]):
    """Node store of a tree of any size whose leaves all share one hash (2**40 is fine)."""

    def __init__(self) -> None:
        self._levels = [leaf_hash(b"same")]

    def __getitem__(self, node: NodeId) -> bytes:
        while len(self._levels) <= node[0]:
            self._levels.append(node_hash(self._levels[-1], self._levels[-1]))
        return self._levels[node[0]]

    def __iter__(self) -> Iterator[NodeId]:
        return iter(())

    def __len__(self) -> int:
        return 0


def test_uniform_tree_store_matches_reference() -> None:
    store = _UniformTree()
    for n in range(40):
        assert root_from_nodes(n, store) == root_from_leaves([store[(0, 0)]] * n)


@PROPERTY
@given(st.integers(min_value=1, max_value=1 << 40), st.data())
def test_proofs_in_huge_trees(size: int, data: st.DataObject) -> None:
    store = _UniformTree()
    root = root_from_nodes(size, store)
    assert CompactRange.from_lookup(size, store).root() == root
    index = data.draw(st.integers(min_value=0, max_value=size - 1), label="index")
    proof = materialize(inclusion_path_nodes(index, size), store)
    verify_inclusion(store[(0, 0)], index, size, proof, root)
    assert _refused(verify_inclusion, store[(0, 0)], index, size, [*proof, root], root)
    old = data.draw(st.integers(min_value=1, max_value=size), label="old")
    cproof = materialize(consistency_path_nodes(old, size), store)
    verify_consistency(old, size, root_from_nodes(old, store), root, cproof)
    assert _refused(
        verify_consistency, old, size, root_from_nodes(old, store), root, [*cproof, root]
    )


def test_append_nodes_matches_append() -> None:
    a, b = CompactRange(), CompactRange()
    for i in range(300):
        leaf = leaf_hash(i.to_bytes(4, "big"))
        expected = b"".join(h for _, _, h in a.append(leaf)[1:])
        assert b.append_nodes(leaf) == expected
        assert b.size == a.size and b.hashes == a.hashes

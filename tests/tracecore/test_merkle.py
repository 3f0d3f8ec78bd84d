"""Tests of tracecore.merkle: RFC 9162 §2.1 hashing, proofs, verification and integration.

The verification functions are checked against every file of the transparency-dev/merkle test
vectors in ``$AGRITRACE_SHARED_DIR/vectors/merkle`` (read in place, never copied). The
stored-node implementation (integration into complete subtrees, proofs folded from them) is
checked against a naive transcription of the RFC's recursive definitions, exhaustively on small
trees and with hypothesis on random trees up to 10,000 leaves.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracecore.errors import ProofError
from tracecore.merkle import (
    EMPTY_ROOT,
    Node,
    consistency_proof,
    consistency_ranges,
    frontier_nodes,
    hash_range,
    inclusion_proof,
    inclusion_ranges,
    integration_nodes,
    leaf_hash,
    node_hash,
    proof_nodes,
    range_nodes,
    root_from_inclusion_proof,
    root_of,
    verify_consistency,
    verify_inclusion,
)

SHARED = Path(os.environ.get("AGRITRACE_SHARED_DIR", Path(__file__).parents[3] / "shared"))
VECTORS = SHARED / "vectors" / "merkle"
INCLUSION_FILES = sorted((VECTORS / "inclusion").rglob("*.json"))
CONSISTENCY_FILES = sorted((VECTORS / "consistency").rglob("*.json"))
# The RFC 6962 test leaves the vectors were generated from (SOURCE.md).
RFC6962_LEAVES = [
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


def _b64(value: str) -> bytes:
    return base64.b64decode(value)


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _vector_id(path: Path) -> str:
    return str(path.relative_to(VECTORS))


# --- the naive reference: RFC 9162 §2.1 transcribed literally ------------------------------


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]), RFC 9162 §2.1.1."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = _k(len(leaves))
    return node_hash(ref_mth(leaves[:k]), ref_mth(leaves[k:]))


def ref_path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]), RFC 9162 §2.1.3.1."""
    if len(leaves) == 1:
        return []
    k = _k(len(leaves))
    if m < k:
        return [*ref_path(m, leaves[:k]), ref_mth(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), ref_mth(leaves[:k])]


def ref_subproof(m: int, leaves: Sequence[bytes], whole: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b), RFC 9162 §2.1.4.1."""
    if m == len(leaves):
        return [] if whole else [ref_mth(leaves)]
    k = _k(len(leaves))
    if m <= k:
        return [*ref_subproof(m, leaves[:k], whole), ref_mth(leaves[k:])]
    return [*ref_subproof(m - k, leaves[k:], False), ref_mth(leaves[:k])]


# --- an in-memory node store, filled exactly as the database is ----------------------------


class MemoryTree:
    """Leaf hashes plus the complete subtrees of levels >= 1, integrated chunk by chunk."""

    def __init__(self) -> None:
        self.leaves: list[bytes] = []
        self.nodes: dict[Node, bytes] = {}
        self.integrated = 0

    def append(self, leaves: Sequence[bytes]) -> None:
        self.leaves.extend(leaves)

    def integrate(self, up_to: int) -> None:
        frontier = {node: self.subtree_hash(*node) for node in frontier_nodes(self.integrated)}
        new = integration_nodes(
            self.integrated, up_to, self.leaves[self.integrated : up_to], frontier
        )
        for node, value in new:
            assert node not in self.nodes, f"{node} integrated twice"
            self.nodes[node] = value
        self.integrated = up_to

    def subtree_hash(self, level: int, idx: int) -> bytes:
        return self.leaves[idx] if level == 0 else self.nodes[Node(level, idx)]


def _leaves(n: int, seed: int = 0) -> list[bytes]:
    return [leaf_hash(hashlib.sha256(f"{seed}/{i}".encode()).digest()) for i in range(n)]


def _tree(leaves: Sequence[bytes], cuts: Sequence[int] = ()) -> MemoryTree:
    tree = MemoryTree()
    tree.append(leaves)
    for cut in sorted({c for c in cuts if 0 < c < len(leaves)}):
        tree.integrate(cut)
    tree.integrate(len(leaves))
    return tree


# --- the shared test vectors ----------------------------------------------------------------


def test_vectors_are_present() -> None:
    """The vector folders exist and hold the expected number of files (nothing silently skipped)."""
    assert len(INCLUSION_FILES) >= 90
    assert len(CONSISTENCY_FILES) >= 90


def test_reference_tree_root() -> None:
    """The root of the eight RFC 6962 test leaves is the published one."""
    leaves = [leaf_hash(leaf) for leaf in RFC6962_LEAVES]
    expected = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    assert root_of(leaves).hex() == expected
    assert ref_mth(leaves).hex() == expected


@pytest.mark.parametrize("path", INCLUSION_FILES, ids=_vector_id)
def test_inclusion_vector(path: Path) -> None:
    """Each inclusion vector verifies exactly when it is not marked wantErr."""
    v = _load(path)
    args = (
        v["leafIdx"],
        v["treeSize"],
        _b64(v["leafHash"]),
        [_b64(p) for p in v["proof"] or []],
        _b64(v["root"]),
    )
    if v["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", CONSISTENCY_FILES, ids=_vector_id)
def test_consistency_vector(path: Path) -> None:
    """Each consistency vector verifies exactly when it is not marked wantErr."""
    v = _load(path)
    args = (
        v["size1"],
        v["size2"],
        _b64(v["root1"]),
        _b64(v["root2"]),
        [_b64(p) for p in v["proof"] or []],
    )
    if v["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


# Every happy-path vector is over the eight RFC 6962 test leaves (vectors' SOURCE.md).
HAPPY_PATHS = [p for p in INCLUSION_FILES if p.name == "happy-path.json"]


@pytest.mark.parametrize("path", HAPPY_PATHS, ids=_vector_id)
def test_generated_inclusion_proofs_match_vectors(path: Path) -> None:
    """Our generator gives exactly the proof of each happy-path vector over the RFC 6962 leaves."""
    v = _load(path)
    assert v["treeSize"] <= len(RFC6962_LEAVES), "vector over more than the RFC 6962 leaves"
    tree = _tree([leaf_hash(leaf) for leaf in RFC6962_LEAVES[: v["treeSize"]]])
    proof = inclusion_proof(v["leafIdx"], v["treeSize"], tree.subtree_hash)
    assert [base64.b64encode(p).decode() for p in proof] == (v["proof"] or [])


@pytest.mark.parametrize(
    "path", [p for p in CONSISTENCY_FILES if p.name == "happy-path.json"], ids=_vector_id
)
def test_generated_consistency_proofs_match_vectors(path: Path) -> None:
    """Our generator gives exactly the proof of each happy-path consistency vector."""
    v = _load(path)
    tree = _tree([leaf_hash(leaf) for leaf in RFC6962_LEAVES[: v["size2"]]])
    proof = consistency_proof(v["size1"], v["size2"], tree.subtree_hash)
    assert [base64.b64encode(p).decode() for p in proof] == (v["proof"] or [])


# --- exhaustive small trees -----------------------------------------------------------------


@pytest.mark.parametrize("size", range(1, 40))
def test_small_trees_match_the_reference(size: int) -> None:
    """Every inclusion and consistency proof of every tree up to 39 leaves equals the RFC's."""
    leaves = _leaves(size, seed=size)
    tree = _tree(leaves, cuts=range(1, size, 3))
    assert root_of(leaves) == ref_mth(leaves) == hash_range(0, size, tree.subtree_hash)
    for index in range(size):
        proof = inclusion_proof(index, size, tree.subtree_hash)
        assert proof == ref_path(index, leaves)
        verify_inclusion(index, size, leaves[index], proof, ref_mth(leaves))
    for old in range(1, size + 1):
        proof = consistency_proof(old, size, tree.subtree_hash)
        assert proof == ([] if old == size else ref_subproof(old, leaves, True))
        verify_consistency(old, size, ref_mth(leaves[:old]), ref_mth(leaves), proof)


def test_every_complete_subtree_is_stored_once() -> None:
    """Integration in uneven chunks stores each complete subtree of level >= 1 exactly once."""
    size = 1000
    tree = _tree(_leaves(size), cuts=[1, 2, 3, 7, 64, 65, 300, 511, 512, 999])
    expected = {
        Node(level, idx) for level in range(1, size.bit_length()) for idx in range(size >> level)
    }
    assert set(tree.nodes) == expected
    for node in expected:
        assert tree.nodes[node] == ref_mth(tree.leaves[node.start : node.end])


# --- property tests on random trees up to 10,000 leaves -------------------------------------


@settings(max_examples=40, deadline=None)
@given(data=st.data(), size=st.integers(min_value=1, max_value=10_000))
def test_random_trees_match_the_reference(data: st.DataObject, size: int) -> None:
    """Roots and proofs folded from stored subtrees equal the naive recursive reference."""
    cuts = data.draw(st.lists(st.integers(1, size), max_size=6), label="integration cuts")
    seed = data.draw(st.integers(0, 2**32), label="seed")
    leaves = _leaves(size, seed)
    tree = _tree(leaves, cuts)
    root = ref_mth(leaves)
    assert hash_range(0, size, tree.subtree_hash) == root_of(leaves) == root
    for index in data.draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=3)):
        proof = inclusion_proof(index, size, tree.subtree_hash)
        assert proof == ref_path(index, leaves)
        verify_inclusion(index, size, leaves[index], proof, root)
    for old in data.draw(st.lists(st.integers(1, size), min_size=1, max_size=3)):
        proof = consistency_proof(old, size, tree.subtree_hash)
        assert proof == ([] if old == size else ref_subproof(old, leaves, True))
        verify_consistency(old, size, ref_mth(leaves[:old]), root, proof)


def test_ten_thousand_leaves_match_the_reference() -> None:
    """At the top of the range, integrated in uneven chunks, proofs still equal the RFC's."""
    size = 10_000
    leaves = _leaves(size, seed=7)
    tree = _tree(leaves, cuts=[1, 255, 256, 4095, 4097, 9999])
    root = ref_mth(leaves)
    assert hash_range(0, size, tree.subtree_hash) == root
    for index in (0, 1, 4096, 8191, 8192, 9998, 9999):
        assert inclusion_proof(index, size, tree.subtree_hash) == ref_path(index, leaves)
    for old in (1, 2, 3, 4096, 5000, 8192, 9999):
        assert consistency_proof(old, size, tree.subtree_hash) == ref_subproof(old, leaves, True)


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 2**40), data=st.data())
def test_proofs_need_logarithmically_many_subtrees(size: int, data: st.DataObject) -> None:
    """An inclusion or consistency proof needs at most 2·log2(n) stored subtrees."""
    index = data.draw(st.integers(0, size - 1))
    old = data.draw(st.integers(0, size))
    bound = 2 * max(1, size.bit_length())
    assert len(proof_nodes(inclusion_ranges(index, size))) <= bound
    assert len(proof_nodes(consistency_ranges(old, size))) <= bound


@settings(max_examples=100, deadline=None)
@given(size=st.integers(2, 300), data=st.data())
def test_tampered_proofs_are_rejected(size: int, data: st.DataObject) -> None:
    """Flipping a bit of any proof hash, or dropping one, makes verification fail."""
    leaves = _leaves(size)
    tree = _tree(leaves)
    root = root_of(leaves)
    index = data.draw(st.integers(0, size - 1))
    proof = inclusion_proof(index, size, tree.subtree_hash)
    position = data.draw(st.integers(0, len(proof) - 1))
    flipped = [*proof]
    flipped[position] = bytes([proof[position][0] ^ 1]) + proof[position][1:]
    with pytest.raises(ProofError):
        verify_inclusion(index, size, leaves[index], flipped, root)
    with pytest.raises(ProofError):
        verify_inclusion(index, size, leaves[index], proof[:-1], root)
    old = data.draw(st.integers(1, size - 1))
    cproof = consistency_proof(old, size, tree.subtree_hash)
    old_root = root_of(leaves[:old])
    position = data.draw(st.integers(0, len(cproof) - 1))
    cflipped = [*cproof]
    cflipped[position] = bytes([cproof[position][0] ^ 1]) + cproof[position][1:]
    with pytest.raises(ProofError):
        verify_consistency(old, size, old_root, root, cflipped)
    with pytest.raises(ProofError):
        verify_consistency(old, size, old_root, root, [*cproof, root])


# --- edges and errors -------------------------------------------------------------------------


def test_empty_tree_root() -> None:
    """The root of the empty tree is SHA-256 of the empty string."""
    assert root_of([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()


@pytest.mark.parametrize(("index", "size"), [(0, 0), (5, 5), (-1, 3)])
def test_inclusion_of_a_leaf_outside_the_tree_is_refused(index: int, size: int) -> None:
    """Asking for the proof of a leaf that is not in the tree raises ProofError."""
    with pytest.raises(ProofError, match="not in a tree"):
        inclusion_proof(index, size, MemoryTree().subtree_hash)


def test_consistency_from_a_larger_tree_is_refused() -> None:
    """A consistency proof needs old <= new; from 0 or to itself it is empty."""
    with pytest.raises(ProofError, match="no consistency proof"):
        consistency_ranges(5, 4)
    assert consistency_ranges(0, 7) == []
    assert consistency_ranges(7, 7) == []


def test_verification_names_the_problem() -> None:
    """Verification errors say what is wrong."""
    leaves = _leaves(5)
    tree = _tree(leaves)
    root = root_of(leaves)
    proof = inclusion_proof(2, 5, tree.subtree_hash)
    with pytest.raises(ProofError, match="32-byte"):
        verify_inclusion(2, 5, leaves[2], [*proof[:-1], b"short"], root)
    with pytest.raises(ProofError, match="too many"):
        verify_inclusion(2, 5, leaves[2], [*proof, root], root)
    with pytest.raises(ProofError, match="too few"):
        root_from_inclusion_proof(2, 5, leaves[2], proof[:-1])
    with pytest.raises(ProofError, match="does not lead"):
        verify_inclusion(2, 5, leaves[3], proof, root)
    with pytest.raises(ProofError, match="empty tree"):
        verify_consistency(0, 5, EMPTY_ROOT, root, [])


def test_range_nodes_refuses_unaligned_ranges() -> None:
    """Only ranges whose pieces are complete subtrees of the log decompose."""
    assert range_nodes(8, 13) == [Node(2, 2), Node(0, 12)]
    with pytest.raises(ValueError, match="not a subtree"):
        range_nodes(3, 7)
    with pytest.raises(ValueError, match="empty"):
        range_nodes(4, 4)


def test_frontier_is_one_node_per_set_bit() -> None:
    """The frontier of size 13 (0b1101) is the subtrees [0, 8), [8, 12) and the leaf 12."""
    assert frontier_nodes(13) == [Node(0, 12), Node(2, 2), Node(3, 0)]
    assert frontier_nodes(0) == []


def test_integration_needs_the_frontier() -> None:
    """Integrating without the frontier node the new nodes hang from is refused."""
    leaves = _leaves(4)
    with pytest.raises(ValueError, match="missing frontier"):
        integration_nodes(3, 4, leaves[3:], {})
    with pytest.raises(ValueError, match="expected 1"):
        integration_nodes(3, 4, [], {})

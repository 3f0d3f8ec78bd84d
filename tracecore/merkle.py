"""Merkle tree maths of the log (RFC 9162 §2.1): hashes, proofs, verification, integration.

The tree over leaves ``D[0:n]`` is the one of RFC 9162 §2.1.1: a leaf hash is
``SHA-256(0x00 || entry)`` and an interior node ``SHA-256(0x01 || left || right)``; the split of
``n`` leaves is at the largest power of two smaller than ``n``.

Everything here is pure (no I/O), and written against *complete subtrees*: the subtree
``Node(level, idx)`` covers the ``2**level`` leaves ``[idx * 2**level, (idx + 1) * 2**level)``;
level 0 is the leaf hashes themselves. Complete subtrees never change once the log has grown past
them, so the storage layer keeps each one's hash (``merkle_nodes``) and serves any of them with
one indexed read. Every hash a proof needs is the hash of a range ``D[a:b]`` that RFC 9162 builds
in its recursion; such a range is a left-to-right sequence of at most ``log2(n)`` complete
subtrees (its binary decomposition), so:

* :func:`inclusion_ranges` / :func:`consistency_ranges` say *which* ranges a proof consists of
  (RFC 9162 §2.1.3.1 and §2.1.4.1, unrolled into loops);
* :func:`range_nodes` / :func:`proof_nodes` say which complete subtrees those ranges need, so
  that the caller can fetch them all in one batch;
* :func:`hash_range`, :func:`inclusion_proof` and :func:`consistency_proof` assemble the proof
  from a :data:`SubtreeHash` accessor ``(level, idx) -> hash``.

Verification follows RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency) to the letter and
raises :class:`~tracecore.errors.ProofError` naming what is wrong; it returns nothing on success.

:func:`integration_nodes` computes the new complete subtrees when the log grows from one size to
a larger one, given only the new leaf hashes and the O(log n) *frontier* (:func:`frontier_nodes`)
of the old tree: nothing ever rehashes all leaves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final, NamedTuple

from tracecore.errors import ProofError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Node",
    "SubtreeHash",
    "consistency_proof",
    "consistency_ranges",
    "frontier_nodes",
    "hash_range",
    "inclusion_proof",
    "inclusion_ranges",
    "integration_nodes",
    "leaf_hash",
    "node_hash",
    "proof_nodes",
    "range_nodes",
    "root_from_inclusion_proof",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE: Final = 32
# RFC 9162 §2.1.1: the hash of an empty list is the hash of an empty string.
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()


class Node(NamedTuple):
    """A complete subtree: the ``2**level`` leaves starting at ``idx * 2**level``."""

    level: int
    idx: int

    @property
    def start(self) -> int:
        """Index of the first leaf of the subtree."""
        return self.idx << self.level

    @property
    def end(self) -> int:
        """Index one past the last leaf of the subtree."""
        return (self.idx + 1) << self.level


#: Returns the hash of the complete subtree ``(level, idx)``; level 0 is a leaf hash.
SubtreeHash = Callable[[int, int], bytes]


def leaf_hash(entry: bytes) -> bytes:
    """Return the leaf hash of a log entry: SHA-256(0x00 || entry). RFC 9162 §2.1.1."""
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the hash of an interior node: SHA-256(0x01 || left || right). RFC 9162 §2.1.1."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Return the largest power of two strictly smaller than ``n`` (``n >= 2``). RFC 9162 §2.1.1."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return the Merkle Tree Hash MTH(D[0:n]) of a list of leaf hashes (RFC 9162 §2.1.1).

    Computed bottom-up in O(n) hashes and O(log n) memory: the complete subtrees of the
    binary decomposition of ``n`` are built with a stack, then folded right to left, which is
    exactly the recursive definition's split at the largest power of two below ``n``.
    """
    if not leaf_hashes:
        return EMPTY_ROOT
    # stack of (level, hash) of complete subtrees, levels strictly decreasing
    stack: list[tuple[int, bytes]] = []
    for leaf in leaf_hashes:
        level, value = 0, leaf
        while stack and stack[-1][0] == level:
            value = node_hash(stack.pop()[1], value)
            level += 1
        stack.append((level, value))
    value = stack[-1][1]
    for _, left in reversed(stack[:-1]):
        value = node_hash(left, value)
    return value


def range_nodes(start: int, end: int) -> list[Node]:
    """Return the complete subtrees whose fold is MTH(D[start:end]), left to right.

    RFC 9162 §2.1.1 splits a list of ``n`` leaves at the largest power of two below ``n``: the
    left part is complete, the right part is split again. So MTH(D[start:end]) is the right fold
    (:func:`hash_range`) of the subtrees given by the binary digits of ``end - start``, largest
    first. This holds for the ranges RFC 9162 proofs use, whose ``start`` is aligned to a power
    of two at least ``end - start``; any other range is refused with :class:`ValueError` because
    its pieces would not be complete subtrees of the log.
    """
    if not 0 <= start < end:
        raise ValueError(f"empty or negative range [{start}, {end})")
    nodes: list[Node] = []
    position = start
    for level in range((end - start).bit_length() - 1, -1, -1):
        if (end - start) >> level & 1:
            if position % (1 << level):
                raise ValueError(f"range [{start}, {end}) is not a subtree of the log")
            nodes.append(Node(level, position >> level))
            position += 1 << level
    return nodes


def hash_range(start: int, end: int, subtree_hash: SubtreeHash) -> bytes:
    """Return MTH(D[start:end]) from the hashes of its complete subtrees (:func:`range_nodes`)."""
    nodes = range_nodes(start, end)
    value = subtree_hash(*nodes[-1])
    for node in reversed(nodes[:-1]):
        value = node_hash(subtree_hash(*node), value)
    return value


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Return the leaf ranges ``[a, b)`` whose MTHs form the inclusion proof of leaf ``index``.

    RFC 9162 §2.1.3.1, PATH(m, D[n]): for ``n > 1`` and ``k`` the largest power of two below
    ``n``, PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n]) if ``m < k``, else
    PATH(m - k, D[k:n]) : MTH(D[0:k]). The recursion is unrolled from the root down, so the
    ranges are collected top-down and returned bottom-up (the proof's order).

    Raises :class:`ProofError` unless ``0 <= index < size``.
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
    ranges.reverse()
    return ranges


def consistency_ranges(old: int, new: int) -> list[tuple[int, int]]:
    """Return the leaf ranges ``[a, b)`` whose MTHs form the consistency proof ``old`` -> ``new``.

    RFC 9162 §2.1.4.1: PROOF(m, D[n]) = SUBPROOF(m, D[n], true), where SUBPROOF(m, D[m], true)
    is empty, SUBPROOF(m, D[m], false) = {MTH(D[m])}, and for ``m < n`` with ``k`` the largest
    power of two below ``n``: SUBPROOF(m, D[0:k], b) : MTH(D[k:n]) if ``m <= k``, else
    SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k]). Unrolled: the outer hashes are collected
    top-down, the innermost one is placed first.

    The proof from the empty tree, and from a tree to itself, is empty (every tree extends the
    empty tree; RFC 9162 defines proofs for ``0 < m < n``). Raises :class:`ProofError` unless
    ``0 <= old <= new``.
    """
    if not 0 <= old <= new:
        raise ProofError(f"no consistency proof from size {old} to size {new}")
    if old in (0, new):
        return []
    outer: list[tuple[int, int]] = []
    lo, hi, m, whole = 0, new, old, True
    while hi - lo != m:
        k = _split(hi - lo)
        if m <= k:
            outer.append((lo + k, hi))
            hi = lo + k
        else:
            outer.append((lo, lo + k))
            lo += k
            m -= k
            whole = False
    inner = [] if whole else [(lo, hi)]
    return inner + outer[::-1]


def proof_nodes(ranges: Iterable[tuple[int, int]]) -> set[Node]:
    """Return every complete subtree that the MTHs of ``ranges`` need (for one batched read).

    For an RFC 9162 proof these are O(log n): at most one range of a proof is not itself a
    complete subtree, and it decomposes into at most ``log2(n)`` of them.
    """
    return {node for start, end in ranges for node in range_nodes(start, end)}


def inclusion_proof(index: int, size: int, subtree_hash: SubtreeHash) -> list[bytes]:
    """Return the RFC 9162 §2.1.3.1 inclusion proof of leaf ``index`` in the tree of ``size``."""
    return [hash_range(a, b, subtree_hash) for a, b in inclusion_ranges(index, size)]


def consistency_proof(old: int, new: int, subtree_hash: SubtreeHash) -> list[bytes]:
    """Return the RFC 9162 §2.1.4.1 consistency proof from tree size ``old`` to ``new``."""
    return [hash_range(a, b, subtree_hash) for a, b in consistency_ranges(old, new)]


def frontier_nodes(size: int) -> list[Node]:
    """Return the complete subtrees that end exactly at ``size``, one per set bit of ``size``.

    When the log grows, every new interior node either lies wholly among the new leaves or has
    one of these as its left child, so they are all that must be read of the old tree (see
    :func:`integration_nodes`). The level-0 one (the last leaf, when ``size`` is odd) is a leaf
    hash; the others are stored interior nodes.
    """
    return [
        Node(level, (size >> level) - 1) for level in range(size.bit_length()) if size >> level & 1
    ]


def integration_nodes(
    old: int, new: int, new_leaves: Sequence[bytes], frontier: Mapping[Node, bytes]
) -> list[tuple[Node, bytes]]:
    """Return the complete subtrees of levels >= 1 that exist at size ``new`` but not at ``old``.

    ``new_leaves`` are the leaf hashes ``D[old:new]``; ``frontier`` holds the hashes of
    :func:`frontier_nodes` ``(old)`` (a missing one that is needed raises :class:`ValueError`).
    Level by level, the new nodes at level ``l + 1`` are the pairs of level-``l`` hashes ending
    after ``old``; when the first pair straddles ``old``, its left half is the frontier node.
    Work is O(new - old + log new) hashes.
    """
    if not 0 <= old <= new:
        raise ValueError(f"cannot integrate from size {old} to size {new}")
    if len(new_leaves) != new - old:
        raise ValueError(f"expected {new - old} new leaf hashes, got {len(new_leaves)}")
    out: list[tuple[Node, bytes]] = []
    level = 0
    current = list(new_leaves)  # hashes of level `level`, indices [old >> level, new >> level)
    while current:
        first = old >> level
        if first & 1:
            # The first new node of the next level pairs a node completed before `old` (a
            # frontier node, or for level 0 the last old leaf) with the first new one.
            left = Node(level, first - 1)
            if left not in frontier:
                raise ValueError(f"missing frontier node {left} for size {old}")
            current.insert(0, frontier[left])
            first -= 1
        parents = [node_hash(current[i], current[i + 1]) for i in range(0, len(current) - 1, 2)]
        base = first >> 1
        out.extend((Node(level + 1, base + j), value) for j, value in enumerate(parents))
        # No new node at this level means none above it either: a new node's right child is new.
        current = parents
        level += 1
    return out


def _check_hash(what: str, value: bytes) -> None:
    """Raise :class:`ProofError` unless ``value`` is a 32-byte hash."""
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        size = len(value) if isinstance(value, bytes) else type(value).__name__
        raise ProofError(f"{what} must be a {HASH_SIZE}-byte hash, got {size}")


def _check_proof(proof: Sequence[bytes]) -> None:
    for position, value in enumerate(proof):
        _check_hash(f"proof hash {position}", value)


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """Return the root that an inclusion proof leads to, RFC 9162 §2.1.3.2 steps 1-4.

    Raises :class:`ProofError` when ``index`` is not below ``size``, a hash is not 32 bytes, or
    the proof has too many or too few hashes for the position of the leaf.
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    _check_hash("leaf hash", leaf)
    _check_proof(proof)
    fn, sn = index, size - 1  # step 2
    r = leaf  # step 3
    for p in proof:  # step 4
        if sn == 0:  # 4a: the proof is longer than the path to the root
            raise ProofError(f"inclusion proof has too many hashes ({len(proof)})")
        if fn & 1 or fn == sn:  # 4b: p is a left sibling (or r is the last node of its level)
            r = node_hash(p, r)
            # A right-border node with no right sibling: climb until it is a right child.
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1  # 4c
        sn >>= 1
    if sn != 0:  # step 5, first half: the proof must reach the root
        raise ProofError(f"inclusion proof has too few hashes ({len(proof)})")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that leaf hash ``leaf`` is at ``index`` in the tree of ``size`` with root ``root``.

    RFC 9162 §2.1.3.2. Returns nothing on success; raises :class:`ProofError` saying why
    otherwise (malformed input, wrong number of hashes, or a root mismatch).
    """
    _check_hash("root", root)
    if root_from_inclusion_proof(index, size, leaf, proof) != root:
        raise ProofError(
            f"inclusion proof of leaf {index} does not lead to the root of size {size}"
        )


def verify_consistency(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree ``old``/``old_root`` is a prefix of the tree ``new``/``new_root``.

    RFC 9162 §2.1.4.2 for ``0 < old < new``. The cases the RFC leaves out are decided as
    transparency-dev/merkle does (and its test vectors expect): ``old == new`` needs an empty
    proof and equal roots (nothing else is checked: a tree is consistent with itself);
    ``old == 0`` is refused, because a proof from the empty tree proves nothing (C2SP
    tlog-witness handles that case without a proof). Returns nothing on success; raises
    :class:`ProofError` saying why otherwise.
    """
    if not 0 <= old <= new:
        raise ProofError(f"old size {old} is not between 0 and the new size {new}")
    if old == 0:
        raise ProofError("a consistency proof from the empty tree proves nothing")
    if old == new:
        if proof:
            raise ProofError(f"a consistency proof from size {old} to itself must be empty")
        if old_root != new_root:
            raise ProofError(f"two different roots for the same size {old}")
        return
    _check_hash("old root", old_root)
    _check_hash("new root", new_root)
    _check_proof(proof)
    fr, sr = _roots_from_consistency_proof(old, new, old_root, proof)
    if fr != old_root:
        raise ProofError(f"consistency proof does not lead to the root of size {old}")
    if sr != new_root:
        raise ProofError(f"consistency proof does not lead to the root of size {new}")


def _roots_from_consistency_proof(
    old: int, new: int, old_root: bytes, proof: Sequence[bytes]
) -> tuple[bytes, bytes]:
    """Return the old and new roots a proof leads to, RFC 9162 §2.1.4.2 steps 1-7, ``0<old<new``."""
    if not proof:  # step 1
        raise ProofError("consistency proof is empty")
    path = list(proof)
    if old & (old - 1) == 0:  # step 2: old is a power of 2, its root is a node of the new tree
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1  # step 3
    while fn & 1:  # step 4: climb to the highest node of which D[old - 1] is a right child
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]  # step 5
    for c in path[1:]:  # step 6
        if sn == 0:  # 6a
            raise ProofError(f"consistency proof has too many hashes ({len(proof)})")
        if fn & 1 or fn == sn:  # 6b: c is a left sibling, in both trees
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:  # c is a right sibling that only the new tree has
            sr = node_hash(sr, c)
        fn >>= 1  # 6c
        sn >>= 1
    if sn != 0:  # step 7
        raise ProofError(f"consistency proof has too few hashes ({len(proof)})")
    return fr, sr

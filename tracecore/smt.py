"""Sparse Merkle tree maths of the product index (docs/log.md, "The product index").

The index is an authenticated map from 256-bit keys to values: a binary Merkle tree of depth 256
in which key ``k`` sits on the path its bits spell, most significant bit first (0 = left).
Almost all of that tree is empty, so it is stored and hashed in its *compact* form, the one of
Diem's Jellyfish Merkle tree and of AKD: a subtree that holds no key is empty, a subtree that
holds exactly one key is that key's leaf (whatever its depth), and only a subtree holding two or
more keys is an interior node. So the tree of ``n`` random keys has ``n`` leaves, fewer than
``n`` interior nodes, and a depth near ``log2(n)``.

* ``leaf(k, v)  = SHA-256(0x00 || k || SHA-256(v))``  (the key is inside the leaf: a leaf found
  on a path proves which key it is, wherever it sits)
* ``node(l, r)  = SHA-256(0x01 || l || r)``
* ``empty       = 32 zero bytes``; the root of the empty map is ``empty``.

A :class:`MapProof` for key ``k`` is the list of sibling hashes along ``k``'s path from the root
down to depth ``d``, and what the path ends in at depth ``d``: ``k``'s own leaf (presence; the
verifier hashes the value it is given), nothing (absence: an empty subtree), or another key's
leaf whose first ``d`` bits are ``k``'s (absence: a different key holds the only place ``k``
could be). :func:`verify_proof` folds the path back to the root and compares. A prover cannot
end a path early or late without a SHA-256 collision between a leaf, an interior node and the
empty hash, so a proof that folds to a committed root decides presence or absence.

That other leaf travels as its key and its value's hash, never as a bare leaf hash: the verifier
computes the leaf from the key, so the key is bound by the hash. With a bare leaf hash a prover
could take the key's *own* leaf, name any other key sharing its first ``d`` bits, and so "prove"
the absence of a key that is present (docs/product-index.md, "Verifying a proof").

Everything here is pure. :func:`update` applies a batch of changes to a stored tree through a
:data:`NodeReader` (a bulk read of stored nodes by :func:`node_path`) and returns the node writes
and the new root; :class:`MemoryTree` is the same tree in a dict, for monitors and tests;
:func:`root_of` computes a root from scratch (the reference the others are tested against).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

from tracecore.errors import ProofError

__all__ = [
    "EMPTY",
    "KEY_BITS",
    "Interior",
    "Leaf",
    "MapProof",
    "MemoryTree",
    "Node",
    "NodeReader",
    "Update",
    "bit",
    "leaf_hash",
    "node_hash",
    "node_path",
    "prove",
    "root_of",
    "update",
    "value_hash",
    "verify_proof",
]

HASH_SIZE: Final = 32
KEY_BITS: Final = 256
EMPTY: Final = bytes(HASH_SIZE)


def value_hash(value: bytes) -> bytes:
    """SHA-256 of a value's bytes (what a leaf commits to)."""
    return hashlib.sha256(value).digest()


def leaf_hash(key: bytes, hashed_value: bytes) -> bytes:
    """``SHA-256(0x00 || key || SHA-256(value))``; ``hashed_value`` is :func:`value_hash`."""
    return hashlib.sha256(b"\x00" + key + hashed_value).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def bit(key: bytes, depth: int) -> int:
    """The bit of ``key`` at ``depth`` (0 is the most significant bit of the first byte)."""
    return (key[depth >> 3] >> (7 - (depth & 7))) & 1


def node_path(depth: int, key: bytes) -> bytes:
    """The storage name of the subtree at ``depth`` on ``key``'s path.

    Two bytes of depth (0-256), then the first ``depth`` bits of ``key``, padded with zero bits
    to whole bytes: every subtree has exactly one name, whichever key under it names it.
    """
    whole, rest = divmod(depth, 8)
    prefix = key[:whole]
    if rest:
        prefix += bytes([key[whole] & (0xFF << (8 - rest)) & 0xFF])
    return depth.to_bytes(2, "big") + prefix


@dataclass(frozen=True, slots=True)
class Interior:
    """A stored subtree with two or more keys: its children's hashes."""

    left: bytes
    right: bytes

    @property
    def hash(self) -> bytes:
        """The subtree's hash."""
        return node_hash(self.left, self.right)


@dataclass(frozen=True, slots=True)
class Leaf:
    """A stored subtree with exactly one key: the key and its value's hash."""

    key: bytes
    value_hash: bytes

    @property
    def hash(self) -> bytes:
        """The subtree's hash (the leaf hash, wherever the leaf sits)."""
        return leaf_hash(self.key, self.value_hash)


Node: TypeAlias = Interior | Leaf
#: Reads stored nodes by :func:`node_path`; a path that is not stored is absent from the answer
#: (an empty subtree).
NodeReader: TypeAlias = Callable[[Sequence[bytes]], Mapping[bytes, Node]]


@dataclass(frozen=True, slots=True)
class Update:
    """The result of :func:`update`: the new root and the nodes to store (by path)."""

    root: bytes
    writes: Mapping[bytes, Node]


def update(read: NodeReader, changes: Mapping[bytes, bytes]) -> Update:
    """Apply ``changes`` (key -> new value hash; a key not yet in the tree is inserted).

    Reads the stored nodes on the changed keys' paths level by level, one ``read`` call per
    level for all keys (so a batch costs about ``log2(n)`` calls, not one per node), and never
    reads below an empty subtree or a leaf. Keys are never removed: the index only grows, so no
    stored node is ever deleted; the writes hold every subtree whose hash changed (a leaf that
    an insertion pushed down leaves an interior node in its old place).
    """
    for key, hashed in changes.items():
        if len(key) != HASH_SIZE or len(hashed) != HASH_SIZE:
            raise ProofError("index keys and value hashes are 32 bytes")
    batch = sorted(changes.items())
    known = _descend(read, [(0, batch)])
    writes: dict[bytes, Node] = {}
    if not batch:
        return Update(_stored_hash(known.get(node_path(0, b""))), writes)
    return Update(_update(known, writes, 0, batch, fresh=False), writes)


def _descend(
    read: NodeReader, frontier: list[tuple[int, list[tuple[bytes, bytes]]]]
) -> dict[bytes, Node]:
    """Read the stored interior nodes along the paths of every key of each batch, level by
    level, and the node that ends each path (a leaf; an absent path is an empty subtree)."""
    known: dict[bytes, Node] = {}
    if frontier and not frontier[0][1]:
        known.update(read([node_path(0, b"")]))
        return known
    while frontier:
        paths = [node_path(depth, batch[0][0]) for depth, batch in frontier]
        found = read(paths)
        known.update(found)
        below: list[tuple[int, list[tuple[bytes, bytes]]]] = []
        for path, (depth, batch) in zip(paths, frontier, strict=True):
            if isinstance(found.get(path), Interior):
                cut = _split(batch, depth)
                below += [(depth + 1, part) for part in (batch[:cut], batch[cut:]) if part]
        frontier = below
    return known


def _stored_hash(node: Node | None) -> bytes:
    return EMPTY if node is None else node.hash


def _split(batch: list[tuple[bytes, bytes]], depth: int) -> int:
    """The number of batch keys (sorted) whose bit at ``depth`` is 0."""
    lo, hi = 0, len(batch)
    while lo < hi:
        mid = (lo + hi) // 2
        if bit(batch[mid][0], depth):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _update(
    known: Mapping[bytes, Node],
    writes: dict[bytes, Node],
    depth: int,
    batch: list[tuple[bytes, bytes]],
    *,
    fresh: bool,
) -> bytes:
    """Apply the sorted ``batch`` (all sharing ``depth`` bits) to that subtree; its new hash.

    ``fresh``: the subtree was empty before this update (nothing stored under it).
    """
    path = node_path(depth, batch[0][0])
    node = None if fresh else known.get(path)
    new: Node
    if isinstance(node, Interior):
        cut = _split(batch, depth)
        left = _update(known, writes, depth + 1, batch[:cut], fresh=False) if cut else node.left
        right = (
            _update(known, writes, depth + 1, batch[cut:], fresh=False)
            if cut < len(batch)
            else node.right
        )
        new = Interior(left, right)
    else:
        if isinstance(node, Leaf) and all(key != node.key for key, _ in batch):
            batch = sorted([*batch, (node.key, node.value_hash)])
        if len(batch) == 1:
            new = Leaf(*batch[0])
        else:
            if depth >= KEY_BITS:  # two equal keys: impossible for the sorted, distinct batch
                raise ProofError("two index changes for the same key")
            cut = _split(batch, depth)
            # The subtree was empty or one leaf (now in the batch): its children are empty.
            left = _update(known, writes, depth + 1, batch[:cut], fresh=True) if cut else EMPTY
            right = (
                _update(known, writes, depth + 1, batch[cut:], fresh=True)
                if cut < len(batch)
                else EMPTY
            )
            new = Interior(left, right)
    writes[path] = new
    return new.hash


@dataclass(frozen=True, slots=True)
class MapProof:
    """A proof of presence or absence of one key (see the module docstring).

    ``siblings[i]`` is the hash of the sibling subtree at depth ``i + 1`` on the key's path, so
    the path ends at depth ``len(siblings)``. ``other`` is the leaf that ends it when that is
    another key's (absence); None when it ends in the key's own leaf (presence) or in an empty
    subtree (absence), which the value given to :func:`verify_proof` tells apart.
    """

    siblings: tuple[bytes, ...]
    other: Leaf | None = None

    def __post_init__(self) -> None:
        if len(self.siblings) > KEY_BITS:
            raise ProofError(f"an index proof has at most {KEY_BITS} sibling hashes")
        if any(len(h) != HASH_SIZE for h in self.siblings):
            raise ProofError("index proof hashes are 32 bytes")
        if self.other is not None and (
            len(self.other.key) != HASH_SIZE or len(self.other.value_hash) != HASH_SIZE
        ):
            raise ProofError("an index proof's other leaf has a 32-byte key and value hash")


def prove(read: NodeReader, keys: Sequence[bytes]) -> dict[bytes, MapProof]:
    """Return the proof of each of ``keys`` in the stored tree (presence or absence, as it is).

    Reads level by level, one ``read`` call per level for all keys.
    """
    if any(len(key) != HASH_SIZE for key in keys):
        raise ProofError("index keys are 32 bytes")
    known = _descend(read, [(0, [(key, EMPTY) for key in sorted(set(keys))])])
    proofs: dict[bytes, MapProof] = {}
    for key in keys:
        siblings: list[bytes] = []
        depth = 0
        while True:
            node = known.get(node_path(depth, key))
            if node is None:
                proofs[key] = MapProof(tuple(siblings))
                break
            if isinstance(node, Leaf):
                proofs[key] = MapProof(tuple(siblings), None if node.key == key else node)
                break
            siblings.append(node.left if bit(key, depth) else node.right)
            depth += 1
    return proofs


def verify_proof(root: bytes, key: bytes, value: bytes | None, proof: MapProof) -> None:
    """Check that ``key`` maps to ``value`` (or, with None, to nothing) in the map of ``root``.

    Returns nothing, or raises :class:`ProofError` saying what does not hold.
    """
    if len(root) != HASH_SIZE or len(key) != HASH_SIZE:
        raise ProofError("index roots and keys are 32 bytes")
    depth = len(proof.siblings)
    if value is not None:
        if proof.other is not None:
            raise ProofError("a proof of presence ends in the key's own leaf, not another's")
        node = leaf_hash(key, value_hash(value))
    elif proof.other is None:
        node = EMPTY
    else:
        other = proof.other.key
        if other == key:
            raise ProofError("a proof of absence ends in the key's own leaf")
        if any(bit(other, d) != bit(key, d) for d in range(depth)):
            raise ProofError("a proof of absence ends in a leaf that is not on the key's path")
        node = proof.other.hash  # computed from the other key: it cannot name a false key
    for d in range(depth - 1, -1, -1):
        sibling = proof.siblings[d]
        node = node_hash(sibling, node) if bit(key, d) else node_hash(node, sibling)
    if node != root:
        what = "presence" if value is not None else "absence"
        raise ProofError(f"the index proof of {what} does not lead to the index root")


def root_of(value_hashes: Mapping[bytes, bytes]) -> bytes:
    """The root of the map whose keys have these value hashes, computed from scratch."""
    return _root_of(sorted(value_hashes.items()), 0)


def _root_of(items: list[tuple[bytes, bytes]], depth: int) -> bytes:
    if not items:
        return EMPTY
    if len(items) == 1:
        return leaf_hash(*items[0])
    cut = _split(items, depth)
    return node_hash(_root_of(items[:cut], depth + 1), _root_of(items[cut:], depth + 1))


class MemoryTree:
    """The index tree kept in a dict: for monitors that replay a log, and for tests."""

    def __init__(self) -> None:
        self.nodes: dict[bytes, Node] = {}
        self.root: bytes = EMPTY

    def read(self, paths: Sequence[bytes]) -> dict[bytes, Node]:
        """The :data:`NodeReader` of this tree."""
        return {p: self.nodes[p] for p in paths if p in self.nodes}

    def apply(self, changes: Mapping[bytes, bytes]) -> bytes:
        """Apply ``changes`` (key -> value hash) and return the new root."""
        result = update(self.read, changes)
        self.nodes.update(result.writes)
        self.root = result.root
        return self.root

    def prove(self, key: bytes) -> MapProof:
        """The proof of ``key`` (presence or absence)."""
        return prove(self.read, [key])[key]

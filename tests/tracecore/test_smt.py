"""The sparse Merkle map of the product index (tracecore.smt), pure.

Batched updates must give the root computed from scratch, proofs of presence and of both kinds
of absence must verify, and every way a prover could bend a proof must be refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Mapping, Sequence

import pytest

from tracecore import smt
from tracecore.errors import ProofError
from tracecore.smt import EMPTY, Leaf, MapProof, MemoryTree, leaf_hash, root_of, value_hash


def _key(n: int) -> bytes:
    return hashlib.sha256(n.to_bytes(8, "big")).digest()


def _leaf(key: bytes, value: bytes) -> bytes:
    """What the tree takes for ``key``: its value's hash (the leaf hash binds the key)."""
    del key
    return value_hash(value)


def _prefixed(first: int) -> bytes:
    """A key whose first byte is ``first`` and whose other bytes are zero."""
    return bytes([first]) + bytes(31)


def _flip(data: bytes) -> bytes:
    return bytes([data[0] ^ 1]) + data[1:]


def test_batched_updates_equal_the_root_from_scratch() -> None:
    """Several batches of inserts and value changes give, after each, the from-scratch root."""
    rng = random.Random(2026)  # noqa: S311 (seeded test keys, not cryptography)
    tree = MemoryTree()
    values: dict[bytes, bytes] = {}
    assert tree.root == EMPTY == root_of({})
    for batch_size in (1, 2, 7, 40, 1, 120, 3):
        changes: dict[bytes, bytes] = {}
        for _ in range(batch_size):
            # Change the value of a key already in the map, or insert a new key.
            key = rng.choice(sorted(values)) if values and rng.random() < 0.4 else rng.randbytes(32)
            values[key] = rng.randbytes(rng.randint(0, 40))
            changes[key] = _leaf(key, values[key])
        root = tree.apply(changes)
        assert root == root_of({k: _leaf(k, v) for k, v in values.items()})
    for key, value in values.items():
        smt.verify_proof(tree.root, key, value, tree.prove(key))


def test_a_batch_equals_one_change_at_a_time() -> None:
    """The same changes applied as one batch or one by one end in the same root and nodes."""
    rng = random.Random(7)  # noqa: S311 (seeded test keys, not cryptography)
    changes = {rng.randbytes(32): rng.randbytes(32) for _ in range(60)}
    whole, single = MemoryTree(), MemoryTree()
    whole.apply(changes)
    for key, leaf in changes.items():
        single.apply({key: leaf})
    assert whole.root == single.root == root_of(changes)
    assert whole.nodes == single.nodes


def test_the_compact_tree_shape() -> None:
    """One key is its leaf at the root; keys that differ in the last bit hang 255 levels down."""
    key = _key(1)
    tree = MemoryTree()
    assert tree.apply({key: _leaf(key, b"a")}) == leaf_hash(key, value_hash(b"a"))
    assert tree.prove(key) == MapProof(())
    twin = key[:31] + bytes([key[31] ^ 1])
    tree.apply({twin: _leaf(twin, b"b")})
    assert tree.root == root_of({key: _leaf(key, b"a"), twin: _leaf(twin, b"b")})
    proof = tree.prove(key)
    assert len(proof.siblings) == 256
    assert proof.siblings[:255] == (EMPTY,) * 255
    assert proof.siblings[255] == leaf_hash(twin, value_hash(b"b"))
    smt.verify_proof(tree.root, key, b"a", proof)
    smt.verify_proof(tree.root, twin, b"b", tree.prove(twin))


def test_an_empty_batch_changes_nothing() -> None:
    """No change: the stored root, and no write."""
    tree = MemoryTree()
    assert smt.update(tree.read, {}) == smt.Update(EMPTY, {})
    tree.apply({_key(1): _leaf(_key(1), b"x"), _key(2): _leaf(_key(2), b"y")})
    assert smt.update(tree.read, {}) == smt.Update(tree.root, {})


def test_updates_and_proofs_read_one_level_at_a_time() -> None:
    """A batch reads the stored nodes in one call per level, not one call per key."""
    rng = random.Random(11)  # noqa: S311 (seeded test keys, not cryptography)
    tree = MemoryTree()
    tree.apply({k: _leaf(k, b"v") for k in (rng.randbytes(32) for _ in range(500))})
    calls: list[int] = []

    def counting(paths: Sequence[bytes]) -> Mapping[bytes, smt.Node]:
        calls.append(len(paths))
        return tree.read(paths)

    batch = {k: _leaf(k, b"w") for k in (rng.randbytes(32) for _ in range(200))}
    depth = max(len(tree.prove(k).siblings) for k in batch)
    smt.update(counting, batch)
    assert len(calls) <= depth + 1
    assert sum(calls) > len(calls)  # paths of many keys in each call
    calls.clear()
    smt.prove(counting, list(batch))
    assert len(calls) <= depth + 1


def test_node_paths_name_each_subtree_once() -> None:
    """Keys under the same subtree give it the same storage name; depth 0 is the root."""
    a, b = _prefixed(0b1010_0000), _prefixed(0b1011_1111)
    assert smt.node_path(0, a) == smt.node_path(0, b) == b"\x00\x00"
    assert smt.node_path(3, a) == smt.node_path(3, b) == b"\x00\x03\xa0"
    assert smt.node_path(4, a) != smt.node_path(4, b)
    assert smt.node_path(256, a) == b"\x01\x00" + a


# --- proofs ------------------------------------------------------------------------------------

#: Keys 0x00.. and 0x40..: the root's right subtree is empty, its left holds both at depth 2.
LEFT, SECOND = _prefixed(0x00), _prefixed(0x40)
#: Absent keys: 0x80.. ends in the empty right subtree, 0x20.. in LEFT's leaf at depth 2.
IN_EMPTY, UNDER_LEFT = _prefixed(0x80), _prefixed(0x20)


@pytest.fixture
def small() -> MemoryTree:
    """A tree of two keys with an empty subtree and a leaf that absent keys end in."""
    tree = MemoryTree()
    tree.apply({LEFT: _leaf(LEFT, b"left"), SECOND: _leaf(SECOND, b"second")})
    return tree


def test_presence_and_both_kinds_of_absence_verify(small: MemoryTree) -> None:
    """A present key's value, an absent key ending in an empty subtree or in another's leaf."""
    smt.verify_proof(small.root, LEFT, b"left", small.prove(LEFT))
    smt.verify_proof(small.root, SECOND, b"second", small.prove(SECOND))
    empty = small.prove(IN_EMPTY)
    assert (len(empty.siblings), empty.other) == (1, None)
    smt.verify_proof(small.root, IN_EMPTY, None, empty)
    other = small.prove(UNDER_LEFT)
    assert (len(other.siblings), other.other) == (2, Leaf(LEFT, _leaf(LEFT, b"left")))
    smt.verify_proof(small.root, UNDER_LEFT, None, other)


def test_random_absent_keys_verify() -> None:
    """In a random tree, proofs of random absent keys verify, and both kinds occur."""
    rng = random.Random(5)  # noqa: S311 (seeded test keys, not cryptography)
    tree = MemoryTree()
    tree.apply({k: _leaf(k, b"v") for k in (rng.randbytes(32) for _ in range(300))})
    kinds = set()
    for _ in range(200):
        key = rng.randbytes(32)
        proof = tree.prove(key)
        smt.verify_proof(tree.root, key, None, proof)
        kinds.add(proof.other is None)
        with pytest.raises(ProofError):
            smt.verify_proof(tree.root, key, b"v", proof)
    assert kinds == {True, False}


def _refused(root: bytes, key: bytes, value: bytes | None, proof: MapProof, match: str) -> None:
    with pytest.raises(ProofError, match=match):
        smt.verify_proof(root, key, value, proof)


def test_changed_dropped_and_extra_siblings_are_refused(small: MemoryTree) -> None:
    """Every change to the sibling list breaks the fold to the root."""
    for key, value in ((LEFT, b"left"), (IN_EMPTY, None), (UNDER_LEFT, None)):
        proof = small.prove(key)
        what = "presence" if value is not None else "absence"
        for n in range(len(proof.siblings)):
            siblings = list(proof.siblings)
            siblings[n] = _flip(siblings[n])
            changed = dataclasses.replace(proof, siblings=tuple(siblings))
            _refused(small.root, key, value, changed, what)
        for dropped in (proof.siblings[1:], proof.siblings[:-1]):
            _refused(small.root, key, value, dataclasses.replace(proof, siblings=dropped), what)
        for extra in ((*proof.siblings, EMPTY), (EMPTY, *proof.siblings)):
            _refused(small.root, key, value, dataclasses.replace(proof, siblings=extra), what)


def test_wrong_claims_are_refused(small: MemoryTree) -> None:
    """Absence of a present key, presence with another value or of an absent key: refused."""
    _refused(small.root, LEFT, None, small.prove(LEFT), "absence")
    _refused(small.root, LEFT, b"LEFT", small.prove(LEFT), "presence")
    _refused(small.root, LEFT, b"left", small.prove(SECOND), "presence")  # another key's proof
    _refused(small.root, IN_EMPTY, b"", small.prove(IN_EMPTY), "presence")
    other_root = MemoryTree().apply({LEFT: _leaf(LEFT, b"left")})
    _refused(other_root, SECOND, b"second", small.prove(SECOND), "presence")  # another root


def test_bent_absence_proofs_are_refused(small: MemoryTree) -> None:
    """An 'other' leaf off the key's path, the key's own leaf as 'other', or 'other' given for
    a claim of presence: refused."""
    under_left = small.prove(UNDER_LEFT)
    off_path = dataclasses.replace(under_left, other=Leaf(SECOND, _leaf(SECOND, b"second")))
    _refused(small.root, UNDER_LEFT, None, off_path, "not on the key's path")
    # LEFT is present: its own leaf where the path ends is no proof of its absence.
    own = MapProof(small.prove(LEFT).siblings, Leaf(LEFT, _leaf(LEFT, b"left")))
    _refused(small.root, LEFT, None, own, "the key's own leaf")
    # A present key's proof cannot end in another key's leaf.
    _refused(small.root, UNDER_LEFT, b"x", under_left, "not another's")
    # A leaf that is on the path but not the one stored there does not fold to the root.
    fake = dataclasses.replace(under_left, other=Leaf(LEFT, _leaf(LEFT, b"forged")))
    _refused(small.root, UNDER_LEFT, None, fake, "absence")


def test_malformed_proofs_and_inputs_are_refused() -> None:
    """Hash sizes, proof depth and key sizes are checked before anything is hashed."""
    with pytest.raises(ProofError, match="at most 256"):
        MapProof((EMPTY,) * 257)
    with pytest.raises(ProofError, match="32 bytes"):
        MapProof((b"\x00" * 31,))
    with pytest.raises(ProofError, match="32-byte"):
        MapProof((), Leaf(b"\x00" * 31, EMPTY))
    with pytest.raises(ProofError, match="32 bytes"):
        smt.verify_proof(EMPTY, b"short", None, MapProof(()))
    with pytest.raises(ProofError, match="32 bytes"):
        smt.verify_proof(b"short", _key(1), None, MapProof(()))
    with pytest.raises(ProofError, match="32 bytes"):
        smt.update(MemoryTree().read, {b"short": EMPTY})
    with pytest.raises(ProofError, match="32 bytes"):
        smt.update(MemoryTree().read, {_key(1): b"short"})
    with pytest.raises(ProofError, match="32 bytes"):
        smt.prove(MemoryTree().read, [b"short"])


def test_the_empty_map_proves_every_absence() -> None:
    """The empty map's root is 32 zero bytes; any key's absence is the empty proof."""
    tree = MemoryTree()
    proof = tree.prove(_key(9))
    assert proof == MapProof(())
    smt.verify_proof(EMPTY, _key(9), None, proof)
    _refused(EMPTY, _key(9), b"", proof, "presence")

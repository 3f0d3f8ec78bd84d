"""Merkle tree hashing of the log (RFC 9162 §2.1).

The tree over leaves ``d[0:n]`` is the one of RFC 9162 §2.1.1: a leaf hash is
``SHA-256(0x00 || entry)`` and an interior node ``SHA-256(0x01 || left || right)``; the split of
``n`` leaves is at the largest power of two smaller than ``n``.
"""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = ["EMPTY_ROOT", "HASH_SIZE", "leaf_hash", "node_hash"]

HASH_SIZE: Final = 32
# RFC 9162 §2.1.1: the hash of an empty list is the hash of an empty string.
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()


def leaf_hash(entry: bytes) -> bytes:
    """Return the leaf hash of a log entry: SHA-256(0x00 || entry). RFC 9162 §2.1.1."""
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the hash of an interior node: SHA-256(0x01 || left || right). RFC 9162 §2.1.1."""
    return hashlib.sha256(b"\x01" + left + right).digest()

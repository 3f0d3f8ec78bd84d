"""A tiny in-memory RFC 9162 log that signs C2SP checkpoints, for the witness tests."""

from __future__ import annotations

import hashlib

from tracecore.keys import SignerKey
from tracecore.merkle import consistency_proof, leaf_hash, root_of
from tracecore.note import CheckpointBody, sign_note

__all__ = ["ORIGIN", "ToyLog"]

ORIGIN = "agritrace.test/log"


class ToyLog:
    """Leaves ``entry-0``, ``entry-1``, …, the log key, checkpoints and consistency proofs."""

    def __init__(self, key: SignerKey, origin: str = ORIGIN, size: int = 0, salt: str = "") -> None:
        """A log of ``size`` leaves; another ``salt`` gives a fork with other leaves."""
        self.key = key
        self.origin = origin
        self.salt = salt
        self.leaves: list[bytes] = []
        self.grow(size)

    def grow(self, count: int) -> None:
        """Append ``count`` leaves."""
        start = len(self.leaves)
        self.leaves += [
            leaf_hash(f"{self.salt}entry-{i}".encode()) for i in range(start, start + count)
        ]

    def root(self, size: int) -> bytes:
        """The root hash of the first ``size`` leaves."""
        return root_of(self.leaves[:size]) if size else hashlib.sha256(b"").digest()

    def body(self, size: int) -> CheckpointBody:
        """The checkpoint text of the first ``size`` leaves."""
        return CheckpointBody(self.origin, size, self.root(size))

    def checkpoint(self, size: int | None = None, signer: SignerKey | None = None) -> str:
        """The signed checkpoint note of ``size`` leaves (default: all)."""
        size = len(self.leaves) if size is None else size
        return sign_note(self.body(size).format(), [signer or self.key])

    def proof(self, old: int, new: int) -> list[bytes]:
        """The RFC 9162 consistency proof from ``old`` to ``new``."""

        def subtree(level: int, idx: int) -> bytes:
            return root_of(self.leaves[idx << level : (idx + 1) << level])

        return consistency_proof(old, new, subtree)

"""The stored Merkle tree of the log: integration of new leaves, roots and proofs from the DB.

The ingest sequencer only appends ``log_entries`` rows (each with its RFC 9162 §2.1.1 leaf
hash). *Integration* (:func:`integrate`, run by the checkpointer: a Trillian-like split between a
sequencer and an integrator) then stores in ``merkle_nodes`` the hash of every complete subtree of
level >= 1 that the new leaves completed, reading only the new leaf hashes and the O(log n)
frontier of the old tree (:func:`tracecore.merkle.frontier_nodes`). The integrated size is not
stored separately: it is twice the number of level-1 nodes (an odd last leaf needs no node), read
from the primary-key index in O(log n).

With every complete subtree stored, the root of any size and any RFC 9162 inclusion or
consistency proof is the fold of O(log n) stored hashes (:mod:`tracecore.merkle`), fetched in a
single query (:func:`subtree_hashes`). Proofs are only meaningful for integrated sizes; a
missing node raises :class:`~tracecore.errors.NotFound` naming it.

The single-writer rule of the log applies: one integrator at a time (two would insert the same
nodes and one of them fails with :class:`~tracecore.errors.Conflict`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Final

from sqlalchemy import Table, and_, func, insert, literal, or_, select, union_all
from sqlalchemy.orm import Session

from tracecore import merkle
from tracecore.errors import NotFound, ProofError, StorageError
from tracecore.merkle import Node
from tracecore.storage.models import LogEntry, MerkleNode

__all__ = [
    "INTEGRATION_CHUNK",
    "consistency_proof",
    "entries",
    "inclusion_proof",
    "integrate",
    "integrated_size",
    "log_size",
    "root_at",
    "subtree_hash",
    "subtree_hashes",
    "subtree_range",
]

#: Leaves integrated per round trip: bounds memory (about 100 bytes per leaf and node) while
#: keeping the number of statements small. Even, so that chunk boundaries stay pair-aligned.
INTEGRATION_CHUNK: Final = 1 << 16

_ENTRIES: Final[Table] = LogEntry.__table__  # type: ignore[attr-defined]
_NODES: Final[Table] = MerkleNode.__table__  # type: ignore[attr-defined]


def log_size(session: Session) -> int:
    """Return the number of log entries (indices are dense and 0-based)."""
    last = session.connection().execute(select(func.max(_ENTRIES.c.index))).scalar()
    return 0 if last is None else int(last) + 1


def integrated_size(session: Session) -> int:
    """Return the even size up to which complete subtrees are stored (0 for none).

    Every size ``s`` with ``s <= integrated_size + 1`` (and ``s <= log_size``) can be proved.
    """
    last = (
        session.connection()
        .execute(select(func.max(_NODES.c.idx)).where(_NODES.c.level == 1))
        .scalar()
    )
    return 0 if last is None else 2 * (int(last) + 1)


def integrate(session: Session, up_to_size: int | None = None) -> int:
    """Store the complete subtrees of the leaves appended since the last integration.

    Integrates up to ``up_to_size`` (default: the whole log) and returns that size. Reads only
    the new leaf hashes (in chunks of :data:`INTEGRATION_CHUNK`) and the frontier of the
    integrated tree; never rehashes old leaves. Integrating to a size already integrated does
    nothing. Raises :class:`NotFound` when ``up_to_size`` exceeds the log and
    :class:`StorageError` when the log has a gap.
    """
    size = log_size(session)
    target = size if up_to_size is None else up_to_size
    if not 0 <= target <= size:
        raise NotFound(f"cannot integrate to size {target}: the log has {size} entries")
    connection = session.connection()
    old = integrated_size(session)
    while old < target:
        new = min(target, old + INTEGRATION_CHUNK)
        rows = connection.execute(
            select(_ENTRIES.c.leaf_hash)
            .where(_ENTRIES.c.index >= old, _ENTRIES.c.index < new)
            .order_by(_ENTRIES.c.index)
        ).all()
        if len(rows) != new - old:
            raise StorageError(f"log entries [{old}, {new}) have a gap: found {len(rows)}")
        frontier = subtree_hashes(session, merkle.frontier_nodes(old))
        nodes = merkle.integration_nodes(old, new, [bytes(row[0]) for row in rows], frontier)
        if nodes:
            connection.execute(
                insert(_NODES),
                [{"level": node.level, "idx": node.idx, "hash": value} for node, value in nodes],
            )
        old = new
    return target


def subtree_hashes(session: Session, nodes: Iterable[Node]) -> dict[Node, bytes]:
    """Return the stored hashes of complete subtrees, in one query.

    Level 0 comes from ``log_entries.leaf_hash``, levels >= 1 from ``merkle_nodes``; the two
    are read with one ``UNION ALL`` statement whose every branch is a primary-key lookup.
    Raises :class:`NotFound` naming the first subtree that is not stored (not yet integrated).
    """
    wanted = set(nodes)
    if not wanted:
        return {}
    by_level: dict[int, list[int]] = defaultdict(list)
    for node in wanted:
        by_level[node.level].append(node.idx)
    branches = []
    if 0 in by_level:
        branches.append(
            select(
                literal(0).label("level"),
                _ENTRIES.c.index.label("idx"),
                _ENTRIES.c.leaf_hash.label("hash"),
            ).where(_ENTRIES.c.index.in_(by_level.pop(0)))
        )
    if by_level:
        branches.append(
            select(_NODES.c.level, _NODES.c.idx, _NODES.c.hash).where(
                or_(
                    *(
                        and_(_NODES.c.level == level, _NODES.c.idx.in_(idxs))
                        for level, idxs in sorted(by_level.items())
                    )
                )
            )
        )
    statement = branches[0] if len(branches) == 1 else union_all(*branches)
    rows = session.connection().execute(statement).all()
    found = {Node(int(level), int(idx)): bytes(value) for level, idx, value in rows}
    for node in sorted(wanted):
        if node not in found:
            raise NotFound(
                f"subtree (level {node.level}, index {node.idx}) is not stored: "
                "the log is not integrated that far"
            )
    return found


def subtree_hash(session: Session, level: int, idx: int) -> bytes:
    """Return the hash of the complete subtree ``(level, idx)``; :class:`NotFound` if absent."""
    return subtree_hashes(session, [Node(level, idx)])[Node(level, idx)]


def subtree_range(session: Session, level: int, start: int, end: int) -> list[bytes]:
    """Return the hashes of the complete subtrees ``(level, start) .. (level, end - 1)``.

    One range scan (leaf hashes for level 0); used to serve C2SP tlog-tiles. Raises
    :class:`NotFound` when one of them is not stored.
    """
    if level == 0:
        statement = (
            select(_ENTRIES.c.leaf_hash)
            .where(_ENTRIES.c.index >= start, _ENTRIES.c.index < end)
            .order_by(_ENTRIES.c.index)
        )
    else:
        statement = (
            select(_NODES.c.hash)
            .where(_NODES.c.level == level, _NODES.c.idx >= start, _NODES.c.idx < end)
            .order_by(_NODES.c.idx)
        )
    hashes = [bytes(row[0]) for row in session.connection().execute(statement)]
    if len(hashes) != max(0, end - start):
        raise NotFound(f"subtrees of level {level} in [{start}, {end}) are not all stored")
    return hashes


def entries(session: Session, start: int, end: int) -> list[bytes]:
    """Return the entry bytes of log indices ``[start, end)``; NotFound if one is missing."""
    statement = (
        select(_ENTRIES.c.entry)
        .where(_ENTRIES.c.index >= start, _ENTRIES.c.index < end)
        .order_by(_ENTRIES.c.index)
    )
    found = [bytes(row[0]) for row in session.connection().execute(statement)]
    if len(found) != max(0, end - start):
        raise NotFound(f"log entries [{start}, {end}) are not all present")
    return found


def _fold(session: Session, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    """Return the MTH of each range, from one batched read of the subtrees they need."""
    known = subtree_hashes(session, merkle.proof_nodes(ranges))

    def lookup(level: int, idx: int) -> bytes:
        return known[Node(level, idx)]

    return [merkle.hash_range(start, end, lookup) for start, end in ranges]


def root_at(session: Session, size: int) -> bytes:
    """Return the root hash MTH(D[0:size]) of the log at ``size`` (RFC 9162 §2.1.1)."""
    if size < 0:
        raise ProofError(f"a tree size is not negative, got {size}")
    if size == 0:
        return merkle.EMPTY_ROOT
    return _fold(session, [(0, size)])[0]


def inclusion_proof(session: Session, index: int, size: int) -> list[bytes]:
    """Return the RFC 9162 §2.1.3.1 inclusion proof of leaf ``index`` in the tree of ``size``.

    O(log n) hashes from one query. Raises :class:`ProofError` unless ``0 <= index < size``.
    """
    return _fold(session, merkle.inclusion_ranges(index, size))


def consistency_proof(session: Session, old: int, new: int) -> list[bytes]:
    """Return the RFC 9162 §2.1.4.1 consistency proof from tree size ``old`` to ``new``.

    O(log n) hashes from one query; empty when ``old`` is 0 or equals ``new``. Raises
    :class:`ProofError` unless ``0 <= old <= new``.
    """
    return _fold(session, merkle.consistency_ranges(old, new))

"""The stored Merkle tree and checkpoints (tracecore.storage.tree, tracecore.checkpoint).

On SQLite and PostgreSQL: integration stores every complete subtree once, never rereads old
leaves, and roots and proofs read from the database equal the pure computation over all leaves.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from log_kit import NOW, append_entries, entry_bytes, index_roots, log_leaves
from sqlalchemy import Engine, event, func, select, update

from tracecore import merkle, smt
from tracecore.checkpoint import latest_checkpoint, make_checkpoint, served_note
from tracecore.errors import NotFound, ProofError
from tracecore.keys import SignerKey
from tracecore.note import CheckpointBody, cosign, parse_note, verify_cosignature, verify_note
from tracecore.storage import tree
from tracecore.storage.engine import session_scope
from tracecore.storage.models import Cosignature, LogEntry, MerkleNode

LOG_KEY = SignerKey("agritrace.test/log", bytes(range(32)))
WITNESS_KEY = SignerKey("witness.test/w1", bytes(range(1, 33)))
ORIGIN = "agritrace.test/log"
ENTRIES: Any = LogEntry.__table__  # type: ignore[attr-defined]
NODES: Any = MerkleNode.__table__  # type: ignore[attr-defined]


def pure_subtree(leaves: list[bytes]) -> merkle.SubtreeHash:
    """The accessor of the pure computation: each subtree hashed from its leaves."""

    def subtree(level: int, idx: int) -> bytes:
        return merkle.root_of(leaves[idx << level : (idx + 1) << level])

    return subtree


@contextmanager
def count_statements(engine: Engine) -> Iterator[list[str]]:
    """Collect the SQL statements executed on ``engine`` inside the block."""
    statements: list[str] = []

    def before(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", before)


def test_integration_and_proofs_match_the_pure_tree(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Integrating in uneven steps (and chunks) gives the roots and proofs of the pure tree."""
    monkeypatch.setattr(tree, "INTEGRATION_CHUNK", 64)
    leaves: list[bytes] = []
    for step in (1, 2, 5, 120, 129, 256, 3):
        leaves += append_entries(engine, step)
        with session_scope(engine) as session:
            assert tree.integrate(session) == len(leaves)
            assert tree.integrated_size(session) == len(leaves) // 2 * 2
    size = len(leaves)
    accessor = pure_subtree(leaves)
    with session_scope(engine) as session:
        count = session.connection().execute(select(func.count()).select_from(NODES)).scalar()
        assert count == sum(size >> level for level in range(1, size.bit_length()))
        for n in (1, 2, 3, 8, 9, 255, 256, 257, size):
            assert tree.root_at(session, n) == merkle.root_of(leaves[:n])
        for index, n in ((0, 1), (0, size), (7, 9), (255, 257), (size - 1, size), (300, 400)):
            assert tree.inclusion_proof(session, index, n) == merkle.inclusion_proof(
                index, n, accessor
            )
        for old, new in ((1, 2), (3, 7), (8, 256), (255, size), (size, size), (0, 9)):
            assert tree.consistency_proof(session, old, new) == merkle.consistency_proof(
                old, new, accessor
            )
        assert tree.subtree_hash(session, 8, 1) == merkle.root_of(leaves[256:512])
        assert tree.root_at(session, 0) == merkle.EMPTY_ROOT


def test_proofs_read_the_database_once(engine: Engine) -> None:
    """A root, an inclusion or a consistency proof is one SQL statement."""
    append_entries(engine, 1000)
    with session_scope(engine) as session:
        tree.integrate(session)
    with session_scope(engine) as session:
        session.connection()  # open the transaction outside the counted block
        with count_statements(engine) as statements:
            tree.inclusion_proof(session, 517, 999)
        assert len(statements) == 1
        with count_statements(engine) as statements:
            tree.consistency_proof(session, 333, 999)
        assert len(statements) == 1
        with count_statements(engine) as statements:
            tree.root_at(session, 999)
        assert len(statements) == 1


def test_integration_never_rereads_old_leaves(engine: Engine) -> None:
    """After integration, changing an old leaf hash does not change the next roots.

    The new nodes are built from the stored frontier, not by rehashing the old leaves.
    """
    leaves = append_entries(engine, 100)
    with session_scope(engine) as session:
        tree.integrate(session)
        session.connection().execute(
            update(ENTRIES).where(ENTRIES.c.index == 10).values(leaf_hash=bytes(32))
        )
    leaves += append_entries(engine, 50)
    with session_scope(engine) as session:
        tree.integrate(session)
        assert tree.root_at(session, 128) == merkle.root_of(leaves[:128])


def test_proofs_beyond_the_integrated_size_are_refused(engine: Engine) -> None:
    """Proofs need the stored subtrees: beyond the integrated size they fail with NotFound."""
    append_entries(engine, 20)
    with session_scope(engine) as session:
        tree.integrate(session, up_to_size=8)
        tree.root_at(session, 9)  # an odd last leaf needs no stored node
        with pytest.raises(NotFound, match="not integrated"):
            tree.root_at(session, 20)
        with pytest.raises(NotFound, match="the log has 20 entries"):
            tree.integrate(session, up_to_size=21)
        with pytest.raises(ProofError, match="not in a tree"):
            tree.inclusion_proof(session, 8, 8)
        with pytest.raises(ProofError, match="no consistency proof"):
            tree.consistency_proof(session, 9, 8)
        assert tree.integrate(session, up_to_size=4) == 4  # already integrated: nothing to do
        assert tree.integrated_size(session) == 8


def test_subtree_ranges_and_entries(engine: Engine) -> None:
    """Tile reads: a range of subtrees of one level, and a range of entries, in order."""
    leaves = append_entries(engine, 600)
    with session_scope(engine) as session:
        tree.integrate(session)
        assert tree.subtree_range(session, 0, 10, 13) == leaves[10:13]
        assert tree.subtree_range(session, 8, 0, 2) == [
            merkle.root_of(leaves[:256]),
            merkle.root_of(leaves[256:512]),
        ]
        assert tree.entries(session, 598, 600) == [entry_bytes(598), entry_bytes(599)]
        with pytest.raises(NotFound):
            tree.subtree_range(session, 8, 0, 3)
        with pytest.raises(NotFound):
            tree.entries(session, 599, 601)


def test_make_checkpoint_signs_the_root(engine: Engine) -> None:
    """A checkpoint is made when the log grew: signed note of origin, size and root, covering
    the index root entry the round appended after the new entries."""
    with session_scope(engine) as session:
        assert make_checkpoint(session, ORIGIN, LOG_KEY, NOW) is None  # empty log
    assert log_leaves(engine) == []  # and no index root for an empty log
    leaves = append_entries(engine, 37)
    with session_scope(engine) as session:
        checkpoint = make_checkpoint(session, ORIGIN, LOG_KEY, NOW)
    assert checkpoint is not None
    assert checkpoint.size == 37 + 1  # the entries, then the index root over them
    all_leaves = log_leaves(engine)
    assert all_leaves[:37] == leaves
    assert len(all_leaves) == 38
    roots = index_roots(engine)
    assert list(roots) == [37]
    assert (roots[37].size, roots[37].time) == (37, NOW)
    assert roots[37].root == smt.EMPTY  # synthetic entries do not parse: they change no key
    assert checkpoint.root == merkle.root_of(all_leaves)
    note = parse_note(checkpoint.note)
    assert verify_note(note, [LOG_KEY.verifier]) == (LOG_KEY.name,)
    assert CheckpointBody.parse(note.text) == CheckpointBody(ORIGIN, 38, merkle.root_of(all_leaves))
    with session_scope(engine) as session:
        assert make_checkpoint(session, ORIGIN, LOG_KEY, NOW + 1) is None  # no growth
        latest = latest_checkpoint(session)
        assert latest is not None
        assert latest.size == 38
    assert len(log_leaves(engine)) == 38  # an idle log gets no new index root
    append_entries(engine, 1)
    with session_scope(engine) as session:
        grown = make_checkpoint(session, ORIGIN, LOG_KEY, NOW + 2)
    assert grown is not None
    assert grown.size == 38 + 1 + 1
    assert list(index_roots(engine)) == [37, 39]
    assert index_roots(engine)[39].size == 39
    assert grown.root == merkle.root_of(log_leaves(engine))


def test_served_note_carries_the_cosignatures(engine: Engine) -> None:
    """The served checkpoint is the log's note plus each witness's cosignature line."""
    append_entries(engine, 5)
    with session_scope(engine) as session:
        checkpoint = make_checkpoint(session, ORIGIN, LOG_KEY, NOW)
        assert checkpoint is not None
        assert checkpoint.size == 5 + 1  # the entries and the index root over them
        assert served_note(session, checkpoint) == checkpoint.note
        text = parse_note(checkpoint.note).text
        line = cosign(text, WITNESS_KEY, NOW // 1000)
        session.add(
            Cosignature(checkpoint_size=6, witness=WITNESS_KEY.name, line=line, received_ms=NOW)
        )
        session.flush()
        served = served_note(session, checkpoint)
    assert served.startswith(checkpoint.note)
    assert served.endswith(line + "\n")
    verify_cosignature(text, parse_note(served).signatures[1].line, WITNESS_KEY.verifier)

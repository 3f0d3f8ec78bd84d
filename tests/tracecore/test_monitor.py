"""tracecore.monitor: replaying entries re-derives each index root, and names a wrong one."""

from __future__ import annotations

import contextlib
import hashlib

import pytest

from tracecore import smt
from tracecore.errors import MalformedMessage
from tracecore.identifiers import ProductKey
from tracecore.indexstate import fold
from tracecore.logentry import (
    GENESIS_PREV,
    ChainPosition,
    DeviceMessageEntry,
    IndexRoot,
    Recall,
    parse_any_entry,
)
from tracecore.merkle import leaf_hash
from tracecore.monitor import IndexReplay

T0 = 1_795_000_000_000
LOT = ProductKey.parse("01/06901234567892/10/L261127")


def _log() -> list[bytes]:
    """Three readings of a lot, a recall of it."""
    entries: list[bytes] = []
    prev = GENESIS_PREV
    for seq in (1, 2, 3):
        entry = DeviceMessageEntry(
            msg=hashlib.sha256(b"m%d" % seq).digest(),
            device="hens01-climate",
            seq=seq,
            received=T0 + seq,
            chains=(ChainPosition(LOT, seq, prev),),
        ).to_bytes()
        prev = leaf_hash(entry)
        entries.append(entry)
    entries.append(Recall((LOT,), "Salmonella", "admin", T0 + 10).to_bytes())
    return entries


def _root(entries: list[bytes], size: int) -> bytes:
    """The index root of the first ``size`` entries (those that parse), from scratch."""
    parsed = []
    for index, entry in enumerate(entries[:size]):
        with contextlib.suppress(MalformedMessage):
            parsed.append((index, parse_any_entry(entry), entry))
    values = fold(parsed)
    return smt.root_of({k: smt.value_hash(v.to_bytes()) for k, v in values.items()})


def _replay(entries: list[bytes]) -> IndexReplay:
    replay = IndexReplay()
    for index, entry in enumerate(entries):
        replay.feed(index, entry)
    return replay


def test_matching_roots_pass_even_when_written_late() -> None:
    """A root over the first 2 entries logged after 3 more: it is checked at its own size."""
    entries = _log()
    entries.append(IndexRoot(2, _root(entries, 2), T0).to_bytes())  # index 4, covers [0, 2)
    entries.append(IndexRoot(5, _root(entries, 5), T0).to_bytes())  # index 5, covers [0, 5)
    replay = _replay(entries)
    assert [(c.index, c.size, c.ok) for c in replay.roots] == [(4, 2, True), (5, 5, True)]
    assert replay.problems == []


def test_a_root_without_the_recall_is_named() -> None:
    """The root of the log minus its recall entry: the replay says which entry is wrong."""
    entries = _log()
    hidden = [*entries[:3], entries[0]]  # the recall replaced by a harmless repeat
    entries.append(IndexRoot(4, _root(hidden[:3], 3), T0).to_bytes())
    (check,) = _replay(entries).roots
    assert not check.ok
    assert check.index == 4
    assert "the log's first 4 entries give the index root" in check.detail


@pytest.mark.parametrize(("size", "reason"), [(9, "beyond itself"), (1, "below an earlier")])
def test_impossible_sizes_are_named(size: int, reason: str) -> None:
    """A root claiming entries after itself, or fewer than an earlier root: refused."""
    entries = _log()
    entries.append(IndexRoot(3, _root(entries, 3), T0).to_bytes())
    entries.append(IndexRoot(size, _root(entries, min(size, 5)), T0).to_bytes())
    replay = _replay(entries)
    assert [c.ok for c in replay.roots] == [True, False]
    assert reason in replay.roots[1].detail


def test_an_entry_that_does_not_parse_is_reported_and_changes_nothing() -> None:
    """Garbage in the log is a problem of its own; the roots over the rest still match."""
    entries = _log()
    entries.insert(1, b"not an entry")
    entries.append(IndexRoot(len(entries), _root(entries, len(entries)), T0).to_bytes())
    replay = _replay(entries)
    assert [c.ok for c in replay.roots] == [True]
    (problem,) = replay.problems
    assert problem.startswith("entry 1 does not parse: ")


def test_entries_must_come_in_order() -> None:
    """Feeding out of order is a caller's mistake, said at once."""
    with pytest.raises(ValueError, match="expected 0, got 1"):
        IndexReplay().feed(1, b"")

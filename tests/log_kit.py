"""Helpers for tests of the log: synthetic log entries appended straight into the database.

Importable as ``log_kit`` (tests/ is on ``sys.path`` because of tests/conftest.py). The entries
are not device messages: they exercise the Merkle tree, checkpoints, proofs and tiles only, and
change no key of the product index. A checkpoint round appends an ``index_root`` entry after
them (docs/log.md, "The product index"), so :func:`append_entries` appends at the log's next
index and :func:`log_leaves` gives the leaf hashes of the whole log, roots included.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from sqlalchemy import Engine, insert, select

from tracecore import merkle
from tracecore.logentry import IndexRoot, parse_any_entry
from tracecore.storage.engine import session_scope
from tracecore.storage.logwriter import log_session, next_log_index
from tracecore.storage.models import LogEntry

__all__ = ["NOW", "append_entries", "entry_bytes", "index_roots", "log_leaves"]

NOW: Final = 1_700_000_000_000
_ENTRIES: Any = LogEntry.__table__  # type: ignore[attr-defined]


def entry_bytes(index: int) -> bytes:
    """Synthetic entry bytes for leaf ``index``."""
    return f"synthetic entry {index}".encode()


def append_entries(engine: Engine, count: int) -> list[bytes]:
    """Append ``count`` synthetic entries at the log's next indexes; return their leaf hashes."""
    rows: list[dict[str, Any]] = []
    # The log's write lock: a checkpoint round may append an index root concurrently.
    with log_session(engine) as session:
        start = next_log_index(session)
        for index in range(start, start + count):
            entry = entry_bytes(index)
            rows.append(
                {
                    "index": index,
                    "kind": "statement",
                    "raw": None,
                    "raw_sha256": hashlib.sha256(entry).digest(),
                    "entry": entry,
                    "leaf_hash": merkle.leaf_hash(entry),
                    "received_ms": NOW + index,
                }
            )
        if rows:
            session.connection().execute(insert(_ENTRIES), rows)
    return [row["leaf_hash"] for row in rows]


def log_leaves(engine: Engine) -> list[bytes]:
    """The leaf hash of every log entry, in index order (index roots included)."""
    with session_scope(engine) as session:
        rows = session.connection().execute(
            select(_ENTRIES.c.index, _ENTRIES.c.leaf_hash).order_by(_ENTRIES.c.index)
        )
        pairs = [(int(index), bytes(leaf)) for index, leaf in rows]
    assert [index for index, _ in pairs] == list(range(len(pairs))), "the log has a gap"
    return [leaf for _, leaf in pairs]


def index_roots(engine: Engine) -> dict[int, IndexRoot]:
    """Every ``index_root`` entry of the log, by log index."""
    with session_scope(engine) as session:
        rows = session.connection().execute(
            select(_ENTRIES.c.index, _ENTRIES.c.entry).where(_ENTRIES.c.kind == "index_root")
        )
        found = {int(index): parse_any_entry(bytes(entry)) for index, entry in rows}
    roots = {index: entry for index, entry in found.items() if isinstance(entry, IndexRoot)}
    assert roots.keys() == found.keys(), "an entry of kind index_root is not an index root"
    return roots

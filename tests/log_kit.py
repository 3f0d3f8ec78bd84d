"""Helpers for tests of the log: synthetic log entries appended straight into the database.

Importable as ``log_kit`` (tests/ is on ``sys.path`` because of tests/conftest.py). The entries
are not device messages: they exercise the Merkle tree, checkpoints, proofs and tiles only.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from sqlalchemy import Engine, insert

from tracecore import merkle
from tracecore.storage.engine import session_scope
from tracecore.storage.models import LogEntry

__all__ = ["NOW", "append_entries", "entry_bytes"]

NOW: Final = 1_700_000_000_000
_ENTRIES: Any = LogEntry.__table__  # type: ignore[attr-defined]


def entry_bytes(index: int) -> bytes:
    """Synthetic entry bytes for leaf ``index``."""
    return f"synthetic entry {index}".encode()


def append_entries(engine: Engine, start: int, count: int) -> list[bytes]:
    """Append synthetic log entries ``[start, start + count)``; return their leaf hashes."""
    rows = []
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
        with session_scope(engine) as session:
            session.connection().execute(insert(_ENTRIES), rows)
    return [row["leaf_hash"] for row in rows]

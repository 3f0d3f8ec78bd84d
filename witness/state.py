"""The witness's persistent state: the latest cosigned checkpoint per log origin.

One SQLite file (stdlib :mod:`sqlite3`, WAL mode), separate from the log's database: a witness is
an independent party and shares nothing with the log it watches. Two tables:

* ``latest(origin, size, root, note, cosigned_at)``: the latest checkpoint cosigned for each
  origin. It only moves through :meth:`WitnessState.advance`, an atomic compare-and-set: inside
  one ``BEGIN IMMEDIATE`` transaction (SQLite's writer lock) it checks that the stored size and
  root are still the ones the caller verified the consistency proof against, and only then writes
  the new ones. Two requests that both start from size N cannot both win, and a slow request can
  never roll back what a faster one stored (C2SP tlog-witness, the race described under
  "add-checkpoint").
* ``evidence(id, origin, reason, request, received_at)``: requests with a valid log signature that
  were refused because they contradict the stored state (fork, bad proof). The spec allows a
  witness to keep them "as it might be proof of log misbehavior".
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tracecore.errors import StorageError
from tracecore.merkle import EMPTY_ROOT

__all__ = ["LogState", "WitnessState"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS latest (
    origin      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL CHECK (size >= 0),
    root        BLOB NOT NULL CHECK (length(root) = 32),
    note        TEXT NOT NULL,
    cosigned_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS evidence (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    origin      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    request     BLOB NOT NULL,
    received_at INTEGER NOT NULL
);
"""
_BUSY_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class LogState:
    """What the witness knows of one log: the size and root hash it last cosigned."""

    size: int
    root: bytes

    @classmethod
    def empty(cls) -> LogState:
        """The state of a log never cosigned: size 0 and the empty tree's root (RFC 9162)."""
        return cls(0, EMPTY_ROOT)


class WitnessState:
    """The SQLite state file of one witness. Safe to use from several threads and processes."""

    def __init__(self, path: Path) -> None:
        """Open (creating if needed) the state file at ``path``."""
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as connection:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open the witness state {path}: {exc}") from exc

    def latest(self, origin: str) -> LogState:
        """Return the latest cosigned state of ``origin`` (:meth:`LogState.empty` if none)."""
        with self._connect() as connection:
            row = connection.execute(
                "SELECT size, root FROM latest WHERE origin = ?", (origin,)
            ).fetchone()
        return LogState.empty() if row is None else LogState(int(row[0]), bytes(row[1]))

    def advance(
        self, origin: str, expected: LogState, new: LogState, note: str, now: int
    ) -> LogState | None:
        """Atomically replace ``expected`` by ``new`` as the latest state of ``origin``.

        Returns ``None`` on success, or the state actually stored when it is no longer
        ``expected`` (another request won the race): nothing is written then.
        """
        with self._connect() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                row = connection.execute(
                    "SELECT size, root FROM latest WHERE origin = ?", (origin,)
                ).fetchone()
                current = LogState.empty() if row is None else LogState(row[0], bytes(row[1]))
                if current != expected:
                    connection.execute("ROLLBACK")
                    return current
                connection.execute(
                    "INSERT INTO latest (origin, size, root, note, cosigned_at)"
                    " VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (origin) DO UPDATE SET size = excluded.size,"
                    " root = excluded.root, note = excluded.note,"
                    " cosigned_at = excluded.cosigned_at",
                    (origin, new.size, new.root, note, now),
                )
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        return None

    def record_evidence(self, origin: str, reason: str, request: bytes, now: int) -> None:
        """Keep a refused but log-signed request (fork, bad proof) as possible evidence."""
        with self._connect() as connection:
            connection.execute(
                "INSERT INTO evidence (origin, reason, request, received_at) VALUES (?, ?, ?, ?)",
                (origin, reason, request, now),
            )

    def evidence(self, origin: str) -> list[tuple[str, bytes]]:
        """Return the ``(reason, request)`` pairs kept for ``origin``, oldest first."""
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT reason, request FROM evidence WHERE origin = ? ORDER BY id", (origin,)
            ).fetchall()
        return [(str(reason), bytes(request)) for reason, request in rows]

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """Yield a fresh autocommit connection (explicit BEGIN where needed), then close it.

        sqlite3 errors become :class:`StorageError` here, at the storage boundary.
        """
        try:
            connection = sqlite3.connect(
                self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=True
            )
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the witness state {self.path}: {exc}") from exc
        try:
            connection.execute("PRAGMA synchronous=FULL")
            yield connection
        except sqlite3.Error as exc:
            raise StorageError(f"witness state {self.path}: {exc}") from exc
        finally:
            connection.close()

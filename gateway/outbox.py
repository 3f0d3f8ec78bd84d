"""The persistent outbox of a device fleet: sequence counters, unreceipted messages, receipts.

docs/protocol.md §8: a device writes each signed message (its exact bytes) to non-volatile
storage before the first publish, resends the same bytes until it holds a valid receipt, and
never reuses a sequence number, across reboots too. One SQLite file (WAL mode) holds this for a
whole fleet of simulated devices, so that one process can run thousands of them.

Tables:

``counters``  the last sequence number handed out per device;
``outbox``    every message not yet receipted: exact bytes, attempts, when to send it next;
``receipts``  the receipts that settled a message (the device's proof of inclusion);
``cursors``   how far each input of a gateway has been read (a file offset, a batch row),
              committed with the message made from it, so a restart neither skips nor repeats.
``outbox_size`` one row: how many messages the outbox holds and their bytes, kept by triggers.

The outbox is bounded (:class:`OutboxBound`, docs/gateway.md "When the broker is down"): a new
message that would take it past its bound is refused with :class:`~tracecore.errors.OutboxFull`
*before* a sequence number is given out, and nothing already in it is ever evicted; the caller
decides what to do with the reading it could not store (wait, or drop and count it).

A new sequence number and its message are committed in the *same* transaction, before the
caller can publish the message: after a crash either both exist (the message is resent) or
neither does (the number was never used). Either way a number is never used for two different
messages, which the service would reject as ``equivocation``.

The class is synchronous and not thread-safe: one event loop thread owns it. Each call is one
short SQLite transaction (``synchronous=FULL`` by default, so a power cut cannot lose a message
the broker may already have seen).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from tracecore.errors import OutboxFull

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_MESSAGES",
    "Outbox",
    "OutboxBound",
    "OutboxItem",
    "StoredReceipt",
]

#: The default bound on unreceipted messages: 69 hours of 4 sensors (or 23 hours of 12) at one
#: reading a second; about 315 MB on disk when full (docs/gateway.md, "When the broker is
#: down"; measured by ``python -m bench.outage``).
DEFAULT_MAX_MESSAGES: Final = 1_000_000
#: The default bound on their stored bytes (the signed bytes only; the file is about a quarter
#: larger). A reading of one or two sensors is 230 to 265 bytes, so the message bound is
#: normally reached first; this one keeps large events (many parents, data) from filling the
#: disk first.
DEFAULT_MAX_BYTES: Final = 512 * 1024 * 1024

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS counters (
        device_id TEXT PRIMARY KEY,
        last_seq INTEGER NOT NULL CHECK (last_seq >= 0)
    )""",
    """CREATE TABLE IF NOT EXISTS outbox (
        device_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        raw BLOB NOT NULL,
        created_ms INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_send_ms INTEGER NOT NULL,
        PRIMARY KEY (device_id, seq)
    )""",
    "CREATE INDEX IF NOT EXISTS outbox_next_send ON outbox (next_send_ms)",
    # The bound is checked on every new message: one row kept by triggers answers it at once,
    # where count(*) would read the whole outbox (large after a long outage).
    """CREATE TABLE IF NOT EXISTS outbox_size (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        messages INTEGER NOT NULL,
        bytes INTEGER NOT NULL
    )""",
    # An outbox file from before the table existed starts from what it holds.
    """INSERT OR IGNORE INTO outbox_size (id, messages, bytes)
        SELECT 0, count(*), coalesce(sum(length(raw)), 0) FROM outbox""",
    """CREATE TRIGGER IF NOT EXISTS outbox_size_insert AFTER INSERT ON outbox BEGIN
        UPDATE outbox_size SET messages = messages + 1, bytes = bytes + length(NEW.raw)
        WHERE id = 0;
    END""",
    """CREATE TRIGGER IF NOT EXISTS outbox_size_delete AFTER DELETE ON outbox BEGIN
        UPDATE outbox_size SET messages = messages - 1, bytes = bytes - length(OLD.raw)
        WHERE id = 0;
    END""",
    """CREATE TABLE IF NOT EXISTS receipts (
        device_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        log_index INTEGER NOT NULL,
        entry BLOB NOT NULL,
        msg BLOB NOT NULL,
        raw BLOB NOT NULL,
        received_ms INTEGER NOT NULL,
        PRIMARY KEY (device_id, seq)
    )""",
    """CREATE TABLE IF NOT EXISTS cursors (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
)


@dataclass(frozen=True, slots=True)
class OutboxBound:
    """The most an outbox may hold: unreceipted messages and their stored bytes.

    ``None`` lifts a limit. docs/gateway.md ("When the broker is down") gives the defaults in
    hours of readings and megabytes on disk.
    """

    max_messages: int | None = DEFAULT_MAX_MESSAGES
    max_bytes: int | None = DEFAULT_MAX_BYTES

    def __post_init__(self) -> None:
        """Check that the limits, when set, are positive."""
        if (self.max_messages is not None and self.max_messages < 1) or (
            self.max_bytes is not None and self.max_bytes < 1
        ):
            raise ValueError("an outbox bound must be at least 1 message and 1 byte")


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One unreceipted message: the exact bytes to (re)send and its send history."""

    device_id: str
    seq: int
    raw: bytes
    created_ms: int
    attempts: int
    next_send_ms: int


@dataclass(frozen=True, slots=True)
class StoredReceipt:
    """A verified receipt kept after its message left the outbox."""

    device_id: str
    seq: int
    log_index: int
    entry: bytes
    msg: bytes
    raw: bytes
    received_ms: int


class Outbox:
    """A fleet's outbox in one SQLite file; see the module docstring for the guarantees."""

    def __init__(
        self, path: Path, *, durable: bool = True, bound: OutboxBound | None = None
    ) -> None:
        """Open (creating if needed) the outbox file at ``path``.

        ``durable`` (the default) commits with ``synchronous=FULL``: every committed message
        survives a power cut. ``False`` uses ``synchronous=NORMAL``, which survives a process
        crash but may lose the last commits on power loss (for large simulations only).
        ``bound`` is the most it accepts (default :class:`OutboxBound`'s defaults); a file
        that already holds more keeps all of it and refuses new messages until it drains.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.bound = bound or OutboxBound()
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a sequence number and its
        # message are one transaction and nothing is left implicitly open.
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.execute("PRAGMA busy_timeout=10000")
        with self._transaction():
            for statement in _SCHEMA:
                self._db.execute(statement)

    def close(self) -> None:
        """Close the file (the outbox stays on disk)."""
        self._db.close()

    def __enter__(self) -> Outbox:
        """Use as a context manager that closes the file at the end."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the file."""
        self.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    # -- sequence numbers and new messages ---------------------------------------------------

    def last_seq(self, device_id: str) -> int:
        """Return the last sequence number handed out to ``device_id`` (0 if none)."""
        row = self._db.execute(
            "SELECT last_seq FROM counters WHERE device_id = ?", (device_id,)
        ).fetchone()
        return int(row[0]) if row else 0

    def ensure_seq_at_least(self, device_id: str, last_seq: int) -> None:
        """Raise the device's counter to ``last_seq`` if it is lower (never lowers it).

        For a device that already used numbers elsewhere (e.g. an earlier outbox file).
        """
        with self._transaction():
            self._db.execute(
                "INSERT INTO counters (device_id, last_seq) VALUES (?, ?) "
                "ON CONFLICT (device_id) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
                (device_id, last_seq),
            )

    def append(
        self,
        device_id: str,
        build: Callable[[int], bytes],
        *,
        now_ms: int,
        next_send_ms: int,
        cursor: tuple[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """Give ``device_id`` its next sequence number, sign and store the message; return both.

        ``build(seq)`` returns the signed bytes for that sequence number. The counter and the
        message are committed together before this returns, i.e. before any publish. If
        ``build`` raises, nothing is stored and the number is not used. ``cursor``
        (name, value) is set in the same transaction: the position of the input the message
        was made from (:meth:`cursor`).
        """
        return self.append_many(
            [(device_id, build)], now_ms=now_ms, next_send_ms=next_send_ms, cursor=cursor
        )[0]

    def cursor(self, name: str) -> str | None:
        """Return the input position last committed under ``name``, or None."""
        row = self._db.execute("SELECT value FROM cursors WHERE name = ?", (name,)).fetchone()
        return str(row[0]) if row else None

    def set_cursor(self, name: str, value: str) -> None:
        """Commit an input position without a message (an input line that made none)."""
        with self._transaction():
            self._set_cursor(name, value)

    def _set_cursor(self, name: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO cursors (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    def append_many(
        self,
        items: Sequence[tuple[str, Callable[[int], bytes]]],
        *,
        now_ms: int,
        next_send_ms: int,
        cursor: tuple[str, str] | None = None,
    ) -> list[tuple[int, bytes]]:
        """Like :meth:`append` for several messages, in one transaction (one disk sync).

        Raises :class:`~tracecore.errors.OutboxFull` when the messages would take the outbox
        past its bound: then none of them is stored and no sequence number is used (all or
        nothing), and nothing already stored is touched.
        """
        stored: list[tuple[int, bytes]] = []
        with self._transaction():
            messages, size = self._size()
            self._check_bound(messages + len(items), size)
            if cursor is not None:
                self._set_cursor(*cursor)
            for device_id, build in items:
                row = self._db.execute(
                    "SELECT last_seq FROM counters WHERE device_id = ?", (device_id,)
                ).fetchone()
                seq = (int(row[0]) if row else 0) + 1
                raw = build(seq)
                size += len(raw)
                self._check_bound(messages + len(items), size)
                self._db.execute(
                    "INSERT INTO counters (device_id, last_seq) VALUES (?, ?) "
                    "ON CONFLICT (device_id) DO UPDATE SET last_seq = excluded.last_seq",
                    (device_id, seq),
                )
                self._db.execute(
                    "INSERT INTO outbox (device_id, seq, raw, created_ms, attempts, next_send_ms)"
                    " VALUES (?, ?, ?, ?, 1, ?)",
                    (device_id, seq, raw, now_ms, next_send_ms),
                )
                stored.append((seq, raw))
        return stored

    def _size(self) -> tuple[int, int]:
        row = self._db.execute("SELECT messages, bytes FROM outbox_size WHERE id = 0").fetchone()
        return int(row[0]), int(row[1])

    def _check_bound(self, messages: int, size: int) -> None:
        """Raise :class:`OutboxFull` (rolling back the transaction) if the outbox would overflow."""
        bound = self.bound
        if bound.max_messages is not None and messages > bound.max_messages:
            raise OutboxFull(
                f"the outbox {self.path} holds {bound.max_messages:,} unreceipted messages, its "
                "bound: this one is refused until receipts come back",
                limit="messages",
            )
        if bound.max_bytes is not None and size > bound.max_bytes:
            raise OutboxFull(
                f"the outbox {self.path} would hold {size:,} bytes of unreceipted messages, over "
                f"its bound of {bound.max_bytes:,}: this one is refused until receipts come back",
                limit="bytes",
            )

    def size(self) -> tuple[int, int]:
        """Return how many unreceipted messages the outbox holds and their stored bytes."""
        return self._size()

    # -- what to (re)send ---------------------------------------------------------------------

    def get(self, device_id: str, seq: int) -> OutboxItem | None:
        """Return the unreceipted message ``device_id``/``seq``, or None."""
        row = self._db.execute(
            "SELECT device_id, seq, raw, created_ms, attempts, next_send_ms FROM outbox "
            "WHERE device_id = ? AND seq = ?",
            (device_id, seq),
        ).fetchone()
        return OutboxItem(*row) if row else None

    def due(self, now_ms: int, limit: int) -> list[OutboxItem]:
        """Return up to ``limit`` messages whose resend time has come, oldest due first."""
        rows = self._db.execute(
            "SELECT device_id, seq, raw, created_ms, attempts, next_send_ms FROM outbox "
            "WHERE next_send_ms <= ? ORDER BY next_send_ms, device_id, seq LIMIT ?",
            (now_ms, limit),
        ).fetchall()
        return [OutboxItem(*row) for row in rows]

    def next_due_ms(self) -> int | None:
        """Return the earliest resend time in the outbox, or None when it is empty."""
        row = self._db.execute("SELECT min(next_send_ms) FROM outbox").fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def mark_sent(self, sent: Iterable[tuple[str, int, int]]) -> None:
        """Record sends: ``(device_id, seq, next_send_ms)`` each, counting one more attempt."""
        with self._transaction():
            self._db.executemany(
                "UPDATE outbox SET attempts = attempts + 1, next_send_ms = ? "
                "WHERE device_id = ? AND seq = ?",
                [(next_ms, device_id, seq) for device_id, seq, next_ms in sent],
            )

    def make_all_due(self, now_ms: int) -> int:
        """Make every unreceipted message due now (after a reconnect); return how many."""
        with self._transaction():
            cursor = self._db.execute(
                "UPDATE outbox SET next_send_ms = ? WHERE next_send_ms > ?", (now_ms, now_ms)
            )
        return cursor.rowcount

    def pending_count(self, device_id: str | None = None) -> int:
        """Return how many messages wait for a receipt (of one device, or of the fleet)."""
        if device_id is None:
            return self._size()[0]  # kept by triggers: no scan of a large outbox
        row = self._db.execute(
            "SELECT count(*) FROM outbox WHERE device_id = ?", (device_id,)
        ).fetchone()
        return int(row[0])

    def pending(self, device_id: str | None = None) -> list[OutboxItem]:
        """Return the unreceipted messages (of one device, or of the fleet), by device and seq."""
        query = "SELECT device_id, seq, raw, created_ms, attempts, next_send_ms FROM outbox"
        return [OutboxItem(*row) for row in self._by_device(query, device_id)]

    # -- receipts -----------------------------------------------------------------------------

    def settle(self, receipts: Iterable[StoredReceipt]) -> int:
        """Delete receipted messages and keep their receipts; return how many were settled.

        The caller has verified each receipt against the pinned log key and checked that it
        matches the stored message (:meth:`tracecore.receipt.SignedReceipt.matches`). As a last
        guard the deletion also requires ``SHA-256(stored bytes) == receipt msg``.
        """
        settled = 0
        with self._transaction():
            for receipt in receipts:
                row = self._db.execute(
                    "SELECT raw FROM outbox WHERE device_id = ? AND seq = ?",
                    (receipt.device_id, receipt.seq),
                ).fetchone()
                if row is None or hashlib.sha256(row[0]).digest() != receipt.msg:
                    continue
                self._db.execute(
                    "DELETE FROM outbox WHERE device_id = ? AND seq = ?",
                    (receipt.device_id, receipt.seq),
                )
                self._db.execute(
                    "INSERT OR REPLACE INTO receipts "
                    "(device_id, seq, log_index, entry, msg, raw, received_ms) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        receipt.device_id,
                        receipt.seq,
                        receipt.log_index,
                        receipt.entry,
                        receipt.msg,
                        receipt.raw,
                        receipt.received_ms,
                    ),
                )
                settled += 1
        return settled

    def receipts(self, device_id: str | None = None) -> list[StoredReceipt]:
        """Return the kept receipts (of one device, or of the fleet), by device and seq."""
        query = "SELECT device_id, seq, log_index, entry, msg, raw, received_ms FROM receipts"
        return [StoredReceipt(*row) for row in self._by_device(query, device_id)]

    def _by_device(self, query: str, device_id: str | None) -> list[Any]:
        """Run ``query`` for one device (by seq) or for the fleet (by device, then seq)."""
        if device_id is None:
            return self._db.execute(query + " ORDER BY device_id, seq").fetchall()
        return self._db.execute(
            query + " WHERE device_id = ? ORDER BY seq", (device_id,)
        ).fetchall()

    def receipt_count(self) -> int:
        """Return how many receipts the fleet holds."""
        return int(self._db.execute("SELECT count(*) FROM receipts").fetchone()[0])


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, or ``ROLLBACK`` when the block raises."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        # IMMEDIATE takes the write lock at once: a second process on the same file waits
        # (busy_timeout) instead of failing half-way through.
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")

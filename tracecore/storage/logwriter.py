"""The log's single writer: one lock for everyone who appends to ``log_entries``.

The log must have no gaps and no index used twice, even with several ingest workers and the API
(which logs registry facts) writing to one database. Every appender therefore holds the same
lock for its whole transaction, and reads the next index under it:

* PostgreSQL: ``pg_advisory_xact_lock(WRITE_LOCK_KEY)``, released by the commit or rollback;
* SQLite: ``BEGIN IMMEDIATE``, the database's own write lock.

The integrator (the checkpointer, which stores Merkle subtrees and signs checkpoints) has a
lock of its own, so that of several ingest workers exactly one integrates at a time and the
others skip their round instead of writing the same subtree rows (docs/log.md):
:func:`checkpoint_transaction`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy.orm import Session as BaseSession
from sqlmodel import Session, col

from tracecore.logentry import RegistryEntry
from tracecore.merkle import leaf_hash
from tracecore.storage.engine import storage_errors
from tracecore.storage.models import LogEntry

__all__ = [
    "CHECKPOINT_LOCK_KEY",
    "WRITE_LOCK_KEY",
    "append_registry_entry",
    "checkpoint_transaction",
    "hold_write_lock",
    "log_session",
    "next_log_index",
    "write_transaction",
]

#: The PostgreSQL advisory lock key of the log's single writer ("agrtrace" in ASCII).
WRITE_LOCK_KEY: Final = 0x6167727472616365
#: The PostgreSQL advisory lock key of the log's single integrator ("agrtckpt" in ASCII).
CHECKPOINT_LOCK_KEY: Final = 0x61677274636B7074

_KINDS: Final = {
    "DeviceRegistered": "device_registered",
    "KeyRotated": "key_rotated",
    "KeyRevoked": "key_revoked",
    "Recall": "recall",
    "Access": "access",
    "IndexRoot": "index_root",
}


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """Open a connection in a transaction that holds the log's single-writer lock.

    SQLite: the connection is put in driver autocommit mode so that neither pysqlite nor
    SQLAlchemy begins a deferred transaction, then ``BEGIN IMMEDIATE`` takes the database's
    write lock at once (waiting up to the busy timeout). Commits when the block ends normally,
    rolls back on any exception; SQLAlchemy errors leave as :class:`~tracecore.errors.StorageError`.
    """
    with storage_errors(), engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")
        else:
            with conn.begin():
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK_KEY})
                yield conn


@contextmanager
def checkpoint_transaction(engine: Engine) -> Iterator[Session | None]:
    """A session for one integration round, or None when another process is integrating now.

    PostgreSQL: ``pg_try_advisory_xact_lock(CHECKPOINT_LOCK_KEY)``; a worker that does not get
    it skips the round (the holder checkpoints the same log). Log appends do not wait for it.
    SQLite: ``BEGIN IMMEDIATE`` as in :func:`write_transaction` (one writer at a time anyway),
    so the round reads the tree it extends under the lock. Commits when the block ends
    normally, rolls back on any exception; SQLAlchemy errors leave as ``StorageError``.
    """
    if engine.dialect.name == "sqlite":
        with log_session(engine) as session:
            yield session
        return
    with storage_errors(), engine.connect() as conn, conn.begin():
        taken = conn.execute(
            text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": CHECKPOINT_LOCK_KEY}
        ).scalar()
        if not taken:
            yield None
            return
        with _session_on(conn) as session:
            yield session


@contextmanager
def log_session(engine: Engine) -> Iterator[Session]:
    """A session inside :func:`write_transaction`: for registry changes that append to the log.

    Everything the block does commits together with the log entries it appends, or not at all.
    """
    with write_transaction(engine) as conn, storage_errors(), _session_on(conn) as session:
        yield session


@contextmanager
def _session_on(conn: Connection) -> Iterator[Session]:
    """A session on ``conn``'s transaction, flushed when the block ends (the caller commits)."""
    session = Session(bind=conn, expire_on_commit=False)
    try:
        yield session
        session.flush()
    finally:
        session.close()


def hold_write_lock(session: BaseSession) -> None:
    """Take the log's single-writer lock in ``session``'s transaction, until it ends.

    For the checkpointer, whose round runs under its own lock and appends one entry (the index
    root) at its end. PostgreSQL: ``pg_advisory_xact_lock(WRITE_LOCK_KEY)``. SQLite: nothing to
    do, the round's ``BEGIN IMMEDIATE`` holds the database's write lock already.
    """
    if session.connection().dialect.name != "sqlite":
        session.connection().execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK_KEY}
        )


def next_log_index(session: BaseSession) -> int:
    """Return the index the next log entry gets (call under :func:`write_transaction`)."""
    top = session.scalar(select(func.max(col(LogEntry.index))))
    return 0 if top is None else int(top) + 1


def append_registry_entry(session: BaseSession, entry: RegistryEntry, received_ms: int) -> int:
    """Append a registry fact to the log and return its index.

    Call inside a session bound to a :func:`write_transaction` connection, in the same
    transaction as the registry change it records, so the two commit or fail together.
    """
    data = entry.to_bytes()
    index = next_log_index(session)
    session.add(
        LogEntry(
            index=index,
            kind=_KINDS[type(entry).__name__],
            raw=None,
            # No device bytes: the column keeps the SHA-256 of the entry itself.
            raw_sha256=hashlib.sha256(data).digest(),
            entry=data,
            leaf_hash=leaf_hash(data),
            device_id=getattr(entry, "device", None),
            seq=None,
            received_ms=received_ms,
        )
    )
    session.flush()
    return index

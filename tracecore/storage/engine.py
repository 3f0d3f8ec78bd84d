"""Database engines and sessions, and the boundary where SQLAlchemy errors become ours.

SQLite (the default, a file under ``AGRITRACE_DATA_DIR``) runs in WAL mode with foreign keys on;
PostgreSQL is reached through psycopg 3. Every SQLAlchemy error that leaves
:func:`session_scope` or :func:`storage_errors` is re-raised as a :class:`StorageError`:
:class:`Conflict` for integrity errors (unique, foreign key, check), :class:`NotFound` for a
missing row, :class:`DatabaseUnavailable` when the database cannot be reached or is busy.

Durability: a receipt tells a device it may forget a message, so a commit must survive a power
loss before its receipt leaves (docs/operations.md, "Durability"). SQLite therefore runs with
``synchronous=FULL`` (WAL mode with NORMAL may roll back the last commits after a power loss),
and :func:`durability_problems` finds PostgreSQL servers that do not flush commits.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    IntegrityError,
    InterfaceError,
    NoResultFound,
    OperationalError,
    SQLAlchemyError,
)
from sqlmodel import Session

from tracecore.errors import ConfigError, Conflict, DatabaseUnavailable, NotFound, StorageError

__all__ = [
    "SQLITE_BUSY_TIMEOUT_MS",
    "durability_problems",
    "make_engine",
    "session_scope",
    "statistics_scope",
    "storage_errors",
]

#: How long a SQLite connection waits for a writer lock before failing.
SQLITE_BUSY_TIMEOUT_MS = 10_000


def _normalize_url(url: str | URL) -> URL:
    """Parse ``url``, choosing the psycopg 3 driver for a bare ``postgresql://`` URL."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"invalid database URL: {exc}") from exc
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    """Set the per-connection SQLite pragmas: WAL, foreign keys, busy timeout, synchronous=FULL."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _set_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        # FULL: in WAL mode, NORMAL may lose the last commits on power loss, and their receipts
        # are already out (SQLite docs, "PRAGMA synchronous"; docs/operations.md).
        cursor.execute("PRAGMA synchronous=FULL")
    finally:
        cursor.close()


#: Tries, and the pause between them, to switch a new database file to WAL (below).
_WAL_TRIES = 100
_WAL_PAUSE_S = 0.05


def _set_wal(cursor: Any) -> None:
    """Switch the database to WAL, retrying while another process holds it.

    Switching a new file to WAL needs it alone for a moment. When several processes open the
    same new file at once (API workers starting side by side), SQLite can answer "database is
    locked" at once instead of waiting the busy timeout, where waiting could deadlock (SQLite
    docs, "sqlite3_busy_handler"). The switch is retried for up to about 5 s; once one process
    has switched, the others find the file in WAL mode.
    """
    for attempt in range(_WAL_TRIES):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == _WAL_TRIES - 1:
                raise
            time.sleep(_WAL_PAUSE_S)
        else:
            return


def _postgresql_on_connect(dbapi_connection: Any, _record: Any) -> None:
    """Make every commit of this connection wait for its WAL flush (``synchronous_commit``).

    A server (or role, or database) configured with ``synchronous_commit=off`` acknowledges
    commits before they are on disk; the setting is the client's to raise for its own session
    (PostgreSQL docs, 20.5.1). Stronger values (``remote_write``, ``remote_apply``) are kept.
    """
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SHOW synchronous_commit")
        (value,) = cursor.fetchone()
        if value == "off":
            cursor.execute("SET synchronous_commit TO on")
    finally:
        cursor.close()
    # psycopg opened a transaction for the SHOW; end it so the pool hands out a clean one.
    dbapi_connection.commit()


def make_engine(url: str | URL) -> Engine:
    """Return an engine for ``url`` (SQLite file or PostgreSQL) with agritrace's settings.

    For SQLite the parent directory of the file is created and every connection is switched to
    WAL journal mode with foreign keys on, a busy timeout and ``synchronous=FULL``. A bare
    ``postgresql://`` URL uses psycopg 3. Raises :class:`ConfigError` for an unusable URL.
    """
    parsed = _normalize_url(url)
    backend = parsed.get_backend_name()
    try:
        if backend == "sqlite":
            database = parsed.database
            if database and database != ":memory:" and not database.startswith("file:"):
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(parsed, connect_args={"check_same_thread": False})
            event.listen(engine, "connect", _sqlite_on_connect)
            return engine
        if backend == "postgresql":
            engine = create_engine(parsed, pool_pre_ping=True)
            event.listen(engine, "connect", _postgresql_on_connect)
            return engine
    except (ArgumentError, ImportError) as exc:
        raise ConfigError(f"cannot use database URL {parsed!r}: {exc}") from exc
    raise ConfigError(f"unsupported database {backend!r}: use sqlite:/// or postgresql+psycopg://")


@contextmanager
def storage_errors() -> Iterator[None]:
    """Translate SQLAlchemy errors raised in the block into the agritrace error tree."""
    try:
        yield
    except IntegrityError as exc:
        raise Conflict(f"the database refused the change: {exc.orig}") from exc
    except NoResultFound as exc:
        raise NotFound(str(exc)) from exc
    except (OperationalError, InterfaceError) as exc:
        # The DB-API's classes for "not the statement's fault": connection refused or lost,
        # server shutting down, SQLite locked or out of disk (PEP 249, "Exceptions").
        raise DatabaseUnavailable(f"the database is unavailable: {exc.orig or exc}") from exc
    except SQLAlchemyError as exc:
        raise StorageError(f"database error: {exc}") from exc


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """Open a session, commit when the block ends normally, roll back on any error.

    SQLAlchemy errors, from the block or from the commit, leave as :class:`Conflict`,
    :class:`NotFound` or :class:`StorageError`; other exceptions pass through unchanged after
    the rollback.
    """
    with storage_errors(), Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def statistics_scope(engine: Engine) -> Iterator[Session]:
    """:func:`session_scope` for statistics: its commit does not wait for the disk.

    For scan records only (docs/operations.md, "Durability"): a power cut may lose the last
    moments of them, never a log entry, receipt, rejection, feedback or token, which commit
    through :func:`session_scope`. The commit stays atomic. Not waiting for the disk matters
    most on SQLite, where a commit holds the database's one write lock until its fsync ends
    and every other writer (ingest, other API processes) queues behind it.

    * PostgreSQL: ``SET LOCAL synchronous_commit TO off`` for this transaction only
      (PostgreSQL docs, 30.4 "Asynchronous Commit": safe to mix with synchronous commits).
    * SQLite: ``synchronous=NORMAL`` on this connection for this transaction, then FULL again
      (SQLite docs, "PRAGMA synchronous": in WAL mode NORMAL is safe from corruption, and a
      later FULL commit syncs the WAL with this transaction in it). A connection that cannot
      be set back is discarded, never returned to the pool.
    """
    with storage_errors(), engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            connection.exec_driver_sql("PRAGMA synchronous=NORMAL")
            connection.commit()
        try:
            with Session(bind=connection, expire_on_commit=False) as session:
                if not sqlite:
                    session.connection().exec_driver_sql("SET LOCAL synchronous_commit TO off")
                try:
                    yield session
                    session.commit()
                except BaseException:
                    session.rollback()
                    raise
        finally:
            if sqlite:
                try:
                    connection.exec_driver_sql("PRAGMA synchronous=FULL")
                    connection.commit()
                except BaseException:
                    connection.invalidate()
                    raise


def durability_problems(engine: Engine) -> list[str]:
    """What keeps a commit on ``engine`` from surviving a power loss, in words; empty if none.

    PostgreSQL with ``fsync=off`` acknowledges commits it may never have written (PostgreSQL
    docs, 20.5.1); every connection of :func:`make_engine` already raises a lowered
    ``synchronous_commit``. SQLite connections of :func:`make_engine` always run
    ``synchronous=FULL``; another value here means the engine was made elsewhere. Raises
    :class:`DatabaseUnavailable` when the database cannot be asked.
    """
    problems: list[str] = []
    with storage_errors(), engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            level = conn.exec_driver_sql("PRAGMA synchronous").scalar()
            if level is not None and int(level) < 2:  # 2 = FULL, 3 = EXTRA
                problems.append(f"SQLite runs with synchronous={level} (FULL=2 is needed)")
        else:
            if conn.exec_driver_sql("SHOW fsync").scalar() != "on":
                problems.append("PostgreSQL runs with fsync=off")
            if conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "off":
                problems.append("PostgreSQL runs with synchronous_commit=off")
    return problems

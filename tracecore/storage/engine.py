"""Database engines and sessions, and the boundary where SQLAlchemy errors become ours.

SQLite (the default, a file under ``AGRITRACE_DATA_DIR``) runs in WAL mode with foreign keys on;
PostgreSQL is reached through psycopg 3. Every SQLAlchemy error that leaves
:func:`session_scope` or :func:`storage_errors` is re-raised as a :class:`StorageError`:
:class:`Conflict` for integrity errors (unique, foreign key, check), :class:`NotFound` for a
missing row.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoResultFound, SQLAlchemyError
from sqlmodel import Session

from tracecore.errors import ConfigError, Conflict, NotFound, StorageError

__all__ = [
    "SQLITE_BUSY_TIMEOUT_MS",
    "make_engine",
    "session_scope",
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
    """Set the per-connection SQLite pragmas: WAL, foreign keys, busy timeout, synchronous."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def make_engine(url: str | URL) -> Engine:
    """Return an engine for ``url`` (SQLite file or PostgreSQL) with agritrace's settings.

    For SQLite the parent directory of the file is created and every connection is switched to
    WAL journal mode with foreign keys on, a busy timeout and ``synchronous=NORMAL``. A bare
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
            return create_engine(parsed, pool_pre_ping=True)
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

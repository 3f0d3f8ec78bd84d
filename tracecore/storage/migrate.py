"""Schema migrations (Alembic), run programmatically from the package's own scripts.

The Alembic environment and revisions ship inside the package (``tracecore/storage/migrations``),
so no alembic.ini is needed at run time::

    from tracecore.storage.migrate import upgrade
    upgrade("sqlite:////var/lib/agritrace/agritrace.sqlite3")

:func:`upgrade` is idempotent: on a database at the head revision it does nothing.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from tracecore.errors import DatabaseUnavailable, StorageError
from tracecore.storage.engine import make_engine
from tracecore.storage.logwriter import write_transaction

__all__ = ["MIGRATIONS_DIR", "alembic_config", "current_revision", "head_revision", "upgrade"]

#: The Alembic script directory inside the installed package.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config() -> Config:
    """Return an Alembic config pointing at the packaged migration scripts (no ini file)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    """Return the newest revision id of the packaged migrations."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships a revision
        raise StorageError("no migration revisions are packaged")
    return head


def _engine(engine_or_url: Engine | str | URL) -> tuple[Engine, bool]:
    """Return an engine for the argument, and whether this module created (and must dispose) it."""
    if isinstance(engine_or_url, Engine):
        return engine_or_url, False
    return make_engine(engine_or_url), True


def current_revision(engine_or_url: Engine | str | URL) -> str | None:
    """Return the revision the database is at, or None for a database never migrated."""
    engine, owned = _engine(engine_or_url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot read the schema revision: {exc}") from exc
    finally:
        if owned:
            engine.dispose()


def upgrade(engine_or_url: Engine | str | URL, revision: str = "head") -> None:
    """Bring the database schema up to ``revision`` (default: the newest).

    Accepts an engine or a database URL; running it again on an up-to-date database is a no-op.
    Raises :class:`DatabaseUnavailable` when the database cannot be reached, and
    :class:`StorageError` when it refuses a step.
    """
    engine, owned = _engine(engine_or_url)
    config = alembic_config()
    try:
        # Under the log's single-writer lock: several processes starting at once (the API's
        # workers, ingest next to it) each migrate, and without the lock two of them would
        # both create the tables of a fresh database, and one would fail.
        with write_transaction(engine) as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except DatabaseUnavailable:
        raise  # a condition of the moment: the caller may wait and try again
    except (SQLAlchemyError, StorageError) as exc:
        raise StorageError(f"schema migration failed: {exc}") from exc
    finally:
        if owned:
            engine.dispose()

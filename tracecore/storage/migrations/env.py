"""Alembic environment of agritrace, run through :func:`tracecore.storage.migrate.upgrade`.

The caller passes an open connection in ``config.attributes["connection"]``; there is no
alembic.ini and no URL in this file. Offline (SQL script) mode uses ``sqlalchemy.url``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection
from sqlmodel import SQLModel

import tracecore.storage.models  # noqa: F401  (registers the tables on SQLModel.metadata)

__all__: list[str] = []

target_metadata = SQLModel.metadata


def _run_offline() -> None:
    """Emit the migration as SQL text for the URL in the config."""
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online(connection: Connection) -> None:
    """Run the migration on the connection the caller opened."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _run_offline()
else:
    _connection = context.config.attributes.get("connection")
    if not isinstance(_connection, Connection):
        raise RuntimeError("run migrations through tracecore.storage.migrate.upgrade()")
    _run_online(_connection)

"""Constant SQL on the driver's own cursor, for the read paths a scan takes on every request.

A scan runs about a dozen small queries. Built as SQLAlchemy ORM statements each one costs
0.3-1 ms of Python before the database sees it (statement construction, cache-key generation,
ORM result processing: measured with py-spy under bench/scan.py); on the DB-API cursor it costs
tens of microseconds. The queries here are constant text written with ``?`` placeholders,
translated to the driver's mark; values only ever travel as parameters. The text is plain
SQL that SQLite and PostgreSQL both accept.

Everything else keeps using the ORM: this is for the measured hot path only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

__all__ = ["Row", "execute", "fetch_all", "fetch_one", "marks"]

#: A row as the driver returns it: a plain tuple.
Row = tuple[Any, ...]


def marks(count: int) -> str:
    """``count`` placeholders separated by commas, for an ``IN (...)`` list."""
    return ", ".join("?" * count)


def _cursor_sql(session: Session, sql: str) -> tuple[Any, str]:
    connection = session.connection()
    # sqlite3 takes qmark parameters, psycopg takes format ones ("%s").
    text = sql if connection.dialect.name == "sqlite" else sql.replace("?", "%s")
    return connection.connection.dbapi_connection, text


def fetch_all(session: Session, sql: str, params: Sequence[object] = ()) -> list[Row]:
    """Run the constant query ``sql`` in ``session``'s transaction; every row as a tuple."""
    dbapi, text = _cursor_sql(session, sql)
    cursor = dbapi.cursor()
    try:
        cursor.execute(text, tuple(params))
        return list(cursor.fetchall())
    finally:
        cursor.close()


def fetch_one(session: Session, sql: str, params: Sequence[object] = ()) -> Row | None:
    """The first row of the constant query ``sql``, or None."""
    dbapi, text = _cursor_sql(session, sql)
    cursor = dbapi.cursor()
    try:
        cursor.execute(text, tuple(params))
        row = cursor.fetchone()
        return None if row is None else tuple(row)
    finally:
        cursor.close()


def execute(session: Session, sql: str, params: Sequence[object] = ()) -> None:
    """Run the constant statement ``sql`` (a write) in ``session``'s transaction."""
    dbapi, text = _cursor_sql(session, sql)
    cursor = dbapi.cursor()
    try:
        cursor.execute(text, tuple(params))
    finally:
        cursor.close()

"""The access trail: ``access`` log entries and their index.

Revision ID: 0010
Revises: 0009

Every authenticated read or action on non-public data becomes an ``access`` log entry
(docs/inspection.md, "The access trail"), so the log's kind constraint admits the new kind.
``access_records`` and ``access_parties`` index those entries by who made them and by the
parties whose data they showed. Existing rows do not change.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None

_OLD_KINDS = (
    "device_message",
    "device_registered",
    "key_rotated",
    "key_revoked",
    "recall",
    "statement",
)
_NEW_KINDS = (*_OLD_KINDS, "access")


def _in(values: tuple[str, ...]) -> str:
    return f"kind IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("log_entries") as batch:
        batch.drop_constraint("ck_log_entries_kind", type_="check")
        batch.create_check_constraint("ck_log_entries_kind", _in(_NEW_KINDS))
    op.create_table(
        "access_records",
        sa.Column(
            "log_index",
            sa.BigInteger(),
            sa.ForeignKey("log_entries.index"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("time_ms", sa.BigInteger(), nullable=False),
        sa.Column("who", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("action", sa.String(200), nullable=False),
        sa.Column("target", sa.String(1000), nullable=False),
    )
    op.create_index("ix_access_records_who_log_index", "access_records", ["who", "log_index"])
    op.create_table(
        "access_parties",
        sa.Column(
            "log_index",
            sa.BigInteger(),
            sa.ForeignKey("access_records.log_index"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("party_id", sa.String(64), primary_key=True),
    )
    op.create_index(
        "ix_access_parties_party_id_log_index", "access_parties", ["party_id", "log_index"]
    )


def downgrade() -> None:
    """Revert this revision (refused while the log holds access entries: they cannot go)."""
    bind = op.get_bind()
    held = bind.execute(sa.text("SELECT count(*) FROM log_entries WHERE kind = 'access'")).scalar()
    if held:
        raise RuntimeError(
            f"cannot downgrade below 0010: the log holds {held} access entries, which revision "
            "0009 cannot store (log entries are never removed)"
        )
    op.drop_index("ix_access_parties_party_id_log_index", table_name="access_parties")
    op.drop_table("access_parties")
    op.drop_index("ix_access_records_who_log_index", table_name="access_records")
    op.drop_table("access_records")
    with op.batch_alter_table("log_entries") as batch:
        batch.drop_constraint("ck_log_entries_kind", type_="check")
        batch.create_check_constraint("ck_log_entries_kind", _in(_OLD_KINDS))

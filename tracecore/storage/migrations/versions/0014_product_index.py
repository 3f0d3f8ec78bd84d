"""The product index: ``index_root`` log entries, ``index_nodes`` and ``index_values``.

Revision ID: 0014
Revises: 0013

The log commits a sparse Merkle map from each product to its chain head and recalls, and from
each device to its registry entries (docs/log.md, "The product index"). The checkpointer writes
its root as an ``index_root`` log entry, so the log's kind constraint admits the new kind;
``index_nodes`` holds the map's stored subtrees and ``index_values`` each key's value. The
tables start empty: the first checkpoint round after the upgrade builds the index from the
whole log. Existing rows do not change.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | None = None
depends_on: str | None = None

# Written out (not read from tracecore): a revision must not change when the code does.
_OLD_KINDS = (
    "device_message",
    "device_registered",
    "key_rotated",
    "key_revoked",
    "recall",
    "statement",
    "access",
)
_NEW_KINDS = (*_OLD_KINDS, "index_root")


def _in(values: tuple[str, ...]) -> str:
    return f"kind IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("log_entries") as batch:
        batch.drop_constraint("ck_log_entries_kind", type_="check")
        batch.create_check_constraint("ck_log_entries_kind", _in(_NEW_KINDS))
    op.create_table(
        "index_nodes",
        sa.Column("path", sa.LargeBinary(), primary_key=True),
        sa.Column("leaf", sa.Boolean(), nullable=False),
        sa.Column("a", sa.LargeBinary(), nullable=False),
        sa.Column("b", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("length(a) = 32 AND length(b) = 32", name="ck_index_nodes_hashes"),
    )
    op.create_table(
        "index_values",
        sa.Column("key", sa.LargeBinary(), primary_key=True),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("length(key) = 32", name="ck_index_values_key"),
    )


def downgrade() -> None:
    """Revert this revision, if the log holds no index root (else raise, changing nothing)."""
    roots = (
        op.get_bind()
        .execute(sa.text("SELECT count(*) FROM log_entries WHERE kind = 'index_root'"))
        .scalar_one()
    )
    if roots:
        raise RuntimeError(
            f"cannot downgrade below 0014: the log holds {roots} index_root entries, which "
            "revision 0013 cannot store (a log never loses entries)"
        )
    op.drop_table("index_values")
    op.drop_table("index_nodes")
    with op.batch_alter_table("log_entries") as batch:
        batch.drop_constraint("ck_log_entries_kind", type_="check")
        batch.create_check_constraint("ck_log_entries_kind", _in(_OLD_KINDS))

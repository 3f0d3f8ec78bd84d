"""Scans (copy detection), buyer feedback, and search columns of log entries.

Revision ID: 0002
Revises: 0001

Creates the ``scans``, ``scan_clients`` and ``feedback`` tables of tracecore/storage/models.py and adds the
``step`` and ``time_ms`` search columns to ``log_entries`` (docs/storage.md). Entries logged
before this revision keep NULL there: search by step finds only newer entries.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.add_column("log_entries", sa.Column("step", sa.String(length=32), nullable=True))
    op.add_column("log_entries", sa.Column("time_ms", sa.BigInteger(), nullable=True))
    op.create_index("ix_log_entries_step_time_ms", "log_entries", ["step", "time_ms"])
    op.create_table(
        "scans",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("product_key", sa.String(length=255), nullable=False),
        sa.Column("client", sa.LargeBinary(), nullable=False),
        sa.Column("place", sa.String(length=64), nullable=True),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("length(client) = 16", name="ck_scans_client_length"),
        sa.ForeignKeyConstraint(["product_key"], ["products.key"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_scans_product_key_at_ms", "scans", ["product_key", "at_ms"])
    op.create_table(
        "scan_clients",
        sa.Column("product_key", sa.String(length=255), nullable=False),
        sa.Column("client", sa.LargeBinary(), nullable=False),
        sa.Column("first_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_ms", sa.BigInteger(), nullable=False),
        sa.Column("scans", sa.Integer(), nullable=False),
        sa.Column("first_place", sa.String(length=64), nullable=True),
        sa.CheckConstraint("length(client) = 16", name="ck_scan_clients_client_length"),
        sa.CheckConstraint("scans >= 1", name="ck_scan_clients_scans"),
        sa.ForeignKeyConstraint(["product_key"], ["products.key"]),
        sa.PrimaryKeyConstraint("product_key", "client"),
    )
    op.create_index(
        "ix_scan_clients_product_key_last_ms", "scan_clients", ["product_key", "last_ms"]
    )
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("product_key", sa.String(length=255), nullable=False),
        sa.Column("rating", sa.Integer(), nullable=False),
        sa.Column("complaint", sa.Text(), nullable=True),
        sa.Column("client", sa.LargeBinary(), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("rating >= 1 AND rating <= 5", name="ck_feedback_rating"),
        sa.CheckConstraint("length(client) = 16", name="ck_feedback_client_length"),
        sa.ForeignKeyConstraint(["product_key"], ["products.key"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_feedback_product_key_at_ms", "feedback", ["product_key", "at_ms"])
    op.create_index("ix_feedback_client_at_ms", "feedback", ["client", "at_ms"])


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("ix_feedback_client_at_ms", table_name="feedback")
    op.drop_index("ix_feedback_product_key_at_ms", table_name="feedback")
    op.drop_table("feedback")
    op.drop_index("ix_scan_clients_product_key_last_ms", table_name="scan_clients")
    op.drop_table("scan_clients")
    op.drop_index("ix_scans_product_key_at_ms", table_name="scans")
    op.drop_table("scans")
    op.drop_index("ix_log_entries_step_time_ms", table_name="log_entries")
    with op.batch_alter_table("log_entries") as batch_op:
        batch_op.drop_column("time_ms")
        batch_op.drop_column("step")

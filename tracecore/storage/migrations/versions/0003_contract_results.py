"""Contract results and the queue of products to evaluate.

Revision ID: 0003
Revises: 0002

Creates the ``contract_queue`` and ``contract_results`` tables of tracecore/storage/models.py
(docs/storage.md, docs/contracts.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "contract_queue",
        sa.Column("product_key", sa.String(length=255), nullable=False),
        sa.Column("queued_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["product_key"], ["products.key"]),
        sa.PrimaryKeyConstraint("product_key"),
    )
    op.create_table(
        "contract_results",
        sa.Column("product_key", sa.String(length=255), nullable=False),
        sa.Column("contract", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("source_sha256", sa.String(length=64), nullable=False),
        sa.Column("log_size", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("result", sa.LargeBinary(), nullable=False),
        sa.Column("evaluated_ms", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "status IN ('pass', 'fail', 'not_applicable')", name="ck_contract_results_status"
        ),
        sa.CheckConstraint("length(source_sha256) = 64", name="ck_contract_results_source_length"),
        sa.ForeignKeyConstraint(["product_key"], ["products.key"]),
        sa.PrimaryKeyConstraint("product_key", "contract"),
    )
    op.create_index(
        "ix_contract_results_contract_status", "contract_results", ["contract", "status"]
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("ix_contract_results_contract_status", table_name="contract_results")
    op.drop_table("contract_results")
    op.drop_table("contract_queue")

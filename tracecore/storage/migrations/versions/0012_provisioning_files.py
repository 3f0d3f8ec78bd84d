"""One-time downloads of provisioning files.

Revision ID: 0012
Revises: 0011

A farm that registers a device in the console may download the device's provisioning file once
(docs/gateway.md). ``provisioning_files`` keeps the SHA-256 of each download token, the device
and key it names, who may download it and when it was downloaded. Existing rows do not change.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "provisioning_files",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("device_id", sa.String(64), sa.ForeignKey("devices.id"), nullable=False),
        sa.Column("kid", sa.LargeBinary(), nullable=False),
        sa.Column("issued_to", sa.String(64), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("used_ms", sa.BigInteger(), nullable=True),
        sa.UniqueConstraint("token_hash", name="uq_provisioning_files_token_hash"),
        sa.CheckConstraint(
            "length(token_hash) = 32", name="ck_provisioning_files_token_hash_length"
        ),
        sa.CheckConstraint("length(kid) = 8", name="ck_provisioning_files_kid_length"),
    )
    op.create_index("ix_provisioning_files_device_id", "provisioning_files", ["device_id"])


def downgrade() -> None:
    """Revert this revision (the tokens go; a device registered stays registered)."""
    op.drop_index("ix_provisioning_files_device_id", table_name="provisioning_files")
    op.drop_table("provisioning_files")

"""Console sign-in: server-side sessions and the record of sign-in attempts.

Revision ID: 0009
Revises: 0008

The console (docs/inspection.md, "The console") keeps its sessions in the database, so that
every API process knows them and a revoked token ends its sessions at once: ``console_sessions``
holds the SHA-256 of each session's cookie secret and the token (or, for the admin, the hash of
the admin token) it stands for; ``sign_ins`` records every attempt, by client hash, for the
limit on failed attempts. Both tables are new; nothing existing changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("secret_hash", sa.LargeBinary(), nullable=False),
        sa.Column("token_id", sa.Integer(), sa.ForeignKey("tokens.id"), nullable=True),
        sa.Column("admin_hash", sa.LargeBinary(), nullable=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_seen_ms", sa.BigInteger(), nullable=False),
        sa.Column("ended_ms", sa.BigInteger(), nullable=True),
        sa.UniqueConstraint("secret_hash", name="uq_console_sessions_secret_hash"),
        sa.CheckConstraint(
            "length(secret_hash) = 32", name="ck_console_sessions_secret_hash_length"
        ),
        sa.CheckConstraint(
            "(token_id IS NULL) <> (admin_hash IS NULL)", name="ck_console_sessions_one_credential"
        ),
    )
    op.create_index("ix_console_sessions_token_id", "console_sessions", ["token_id"])
    op.create_table(
        "sign_ins",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("client", sa.LargeBinary(), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("token_id", sa.Integer(), sa.ForeignKey("tokens.id"), nullable=True),
        sa.CheckConstraint("length(client) = 16", name="ck_sign_ins_client_length"),
    )
    op.create_index("ix_sign_ins_client_at_ms", "sign_ins", ["client", "at_ms"])


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("ix_sign_ins_client_at_ms", table_name="sign_ins")
    op.drop_table("sign_ins")
    op.drop_index("ix_console_sessions_token_id", table_name="console_sessions")
    op.drop_table("console_sessions")

"""Answers to buyers' complaints (the producer console).

Revision ID: 0011
Revises: 0010

``complaint_answers`` holds the owning party's answer to a complaint (a ``feedback`` row with a
complaint): one per complaint, keyed by it, so a second answer is refused rather than written
over the first. Existing rows do not change.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "complaint_answers",
        sa.Column(
            "feedback_id",
            sa.Integer(),
            sa.ForeignKey("feedback.id"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("party_id", sa.String(64), sa.ForeignKey("parties.id"), nullable=False),
        sa.Column("token_id", sa.Integer(), sa.ForeignKey("tokens.id"), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "length(text) >= 1 AND length(text) <= 2000", name="ck_complaint_answers_text"
        ),
    )


def downgrade() -> None:
    """Revert this revision (the answers go with the table)."""
    op.drop_table("complaint_answers")

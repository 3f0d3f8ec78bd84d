"""Indexes that keep a scan's cost independent of the log's and the party's size.

Revision ID: 0004
Revises: 0003

Every evidence bundle reads the registry entries of its devices and every recall
(tracecore/storage/evidence.py). Without an index both were a walk over every log entry, which
grows with each reading; the partial index holds only the entries that are not device
messages, so ingesting a reading does not touch it (docs/storage.md). A page also shows the producer's
credit score, read from the party's failed contract results and complaints of the last 90 days:
indexed by status and time, and a partial index of complaints, it reads those rows and not
every product of the party.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

_WHERE = "kind <> 'device_message'"
_COMPLAINT = "complaint IS NOT NULL"


def upgrade() -> None:
    """Apply this revision."""
    op.create_index(
        "ix_log_entries_registry",
        "log_entries",
        ["kind", "device_id", "index"],
        sqlite_where=sa.text(_WHERE),
        postgresql_where=sa.text(_WHERE),
    )
    op.create_index(
        "ix_contract_results_status_evaluated_ms",
        "contract_results",
        ["status", "evaluated_ms"],
    )
    op.create_index(
        "ix_feedback_complaints_at_ms",
        "feedback",
        ["at_ms"],
        sqlite_where=sa.text(_COMPLAINT),
        postgresql_where=sa.text(_COMPLAINT),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("ix_feedback_complaints_at_ms", table_name="feedback")
    op.drop_index("ix_contract_results_status_evaluated_ms", table_name="contract_results")
    op.drop_index("ix_log_entries_registry", table_name="log_entries")

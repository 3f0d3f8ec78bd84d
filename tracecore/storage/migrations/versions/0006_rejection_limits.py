"""Rejection limits: the length and SHA-256 of every refused payload, repeats counted, too_large.

Revision ID: 0006
Revises: 0005

A refused payload larger than the ingest limit (``AGRITRACE_MAX_MESSAGE_BYTES``) is refused as
``too_large`` and only its first bytes are kept; ``raw_length`` and ``raw_sha256`` always describe
the whole payload as received. The same bytes refused again on the same topic for the same
reason add one to ``received_count`` and move ``last_received_ms`` instead of adding a row
(docs/storage.md, "rejections").

Existing rows are kept as they are (their ``raw`` is whole, so ``raw_length`` is its length and
``raw_sha256`` its hash); each counts as received once. Downgrading refuses to run while a row
holds something the old schema cannot say (a ``too_large`` reason, a prefix, a count above 1).
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

_OLD_REASONS = (
    "malformed",
    "unknown_device",
    "topic_mismatch",
    "unknown_key",
    "revoked_key",
    "bad_signature",
    "clock_skew",
    "equivocation",
    "unauthorized_product",
    "unknown_product",
)
# Written out (not read from tracecore.errors): a revision must not change when the code does.
_NEW_REASONS = (*_OLD_REASONS, "too_large")


def _in(values: tuple[str, ...]) -> str:
    return f"reason IN ({', '.join(repr(v) for v in values)})"


def _backfill() -> None:
    """Fill the new columns of existing rows (whole payloads, each received once)."""
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # PostgreSQL 11+ has sha256(bytea); one statement, no rows through Python.
        op.execute(
            "UPDATE rejections SET raw_length = length(raw), raw_sha256 = sha256(raw), "
            "received_count = 1, last_received_ms = received_ms"
        )
        return
    table = sa.table(
        "rejections",
        sa.column("id", sa.Integer()),
        sa.column("raw", sa.LargeBinary()),
        sa.column("received_ms", sa.BigInteger()),
        sa.column("raw_length", sa.BigInteger()),
        sa.column("raw_sha256", sa.LargeBinary()),
        sa.column("received_count", sa.BigInteger()),
        sa.column("last_received_ms", sa.BigInteger()),
    )
    last = -1
    while True:  # in pages, so a large table is never read into memory at once
        rows = bind.execute(
            sa.select(table.c.id, table.c.raw, table.c.received_ms)
            .where(table.c.id > last)
            .order_by(table.c.id)
            .limit(500)
        ).all()
        if not rows:
            return
        for row in rows:
            raw = bytes(row.raw)
            bind.execute(
                table.update()
                .where(table.c.id == row.id)
                .values(
                    raw_length=len(raw),
                    raw_sha256=hashlib.sha256(raw).digest(),
                    received_count=1,
                    last_received_ms=row.received_ms,
                )
            )
        last = rows[-1].id


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("rejections") as batch:
        batch.add_column(sa.Column("raw_length", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("raw_sha256", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("received_count", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("last_received_ms", sa.BigInteger(), nullable=True))
    _backfill()
    with op.batch_alter_table("rejections") as batch:
        batch.alter_column("raw_length", existing_type=sa.BigInteger(), nullable=False)
        batch.alter_column("raw_sha256", existing_type=sa.LargeBinary(), nullable=False)
        batch.alter_column("received_count", existing_type=sa.BigInteger(), nullable=False)
        batch.alter_column("last_received_ms", existing_type=sa.BigInteger(), nullable=False)
        batch.drop_constraint("ck_rejections_reason", type_="check")
        batch.create_check_constraint("ck_rejections_reason", _in(_NEW_REASONS))
        batch.create_check_constraint("ck_rejections_raw_sha256_length", "length(raw_sha256) = 32")
        batch.create_check_constraint("ck_rejections_raw_length", "length(raw) <= raw_length")
        batch.create_check_constraint("ck_rejections_received_count", "received_count >= 1")
        batch.create_check_constraint(
            "ck_rejections_last_received_ms", "last_received_ms >= received_ms"
        )
        batch.create_index("ix_rejections_raw_sha256", ["raw_sha256"], unique=False)


def downgrade() -> None:
    """Revert this revision, if every row fits the old schema (else raise, changing nothing)."""
    unfit = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT count(*) FROM rejections WHERE reason = 'too_large' "
                "OR received_count > 1 OR length(raw) <> raw_length"
            )
        )
        .scalar_one()
    )
    if unfit:
        raise RuntimeError(
            f"cannot downgrade below 0006: {unfit} rejection rows hold a too_large reason, a "
            "payload prefix or a repeat count, which revision 0005 cannot store"
        )
    with op.batch_alter_table("rejections") as batch:
        batch.drop_index("ix_rejections_raw_sha256")
        batch.drop_constraint("ck_rejections_last_received_ms", type_="check")
        batch.drop_constraint("ck_rejections_received_count", type_="check")
        batch.drop_constraint("ck_rejections_raw_length", type_="check")
        batch.drop_constraint("ck_rejections_raw_sha256_length", type_="check")
        batch.drop_constraint("ck_rejections_reason", type_="check")
        batch.create_check_constraint("ck_rejections_reason", _in(_OLD_REASONS))
        batch.drop_column("last_received_ms")
        batch.drop_column("received_count")
        batch.drop_column("raw_sha256")
        batch.drop_column("raw_length")

"""Device-initiated key rotations: the rejection reason ``bad_rotation``.

Revision ID: 0013
Revises: 0012

A device may rotate its own key with a ``key_rotation`` message signed by its current key
(docs/protocol.md §5, "Key rotations"). A refused rotation is stored with the reason
``bad_rotation``, so the rejections' reason constraint admits it. Existing rows do not change.
Downgrading refuses to run while a rejection holds the new reason, which revision 0012 cannot
store.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | None = None
depends_on: str | None = None

# Written out (not read from tracecore): a revision must not change when the code does.
_OLD_REASONS = (
    "too_large",
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
    "serial_conflict",
)
_NEW_REASONS = (*_OLD_REASONS, "bad_rotation")


def _in(values: tuple[str, ...]) -> str:
    return f"reason IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("rejections") as batch:
        batch.drop_constraint("ck_rejections_reason", type_="check")
        batch.create_check_constraint("ck_rejections_reason", _in(_NEW_REASONS))


def downgrade() -> None:
    """Revert this revision, if no rejection has the new reason (else raise, changing nothing)."""
    refused = (
        op.get_bind()
        .execute(sa.text("SELECT count(*) FROM rejections WHERE reason = 'bad_rotation'"))
        .scalar_one()
    )
    if refused:
        raise RuntimeError(
            f"cannot downgrade below 0013: {refused} rejection rows hold the reason "
            "bad_rotation, which revision 0012 cannot store"
        )
    with op.batch_alter_table("rejections") as batch:
        batch.drop_constraint("ck_rejections_reason", type_="check")
        batch.create_check_constraint("ck_rejections_reason", _in(_OLD_REASONS))

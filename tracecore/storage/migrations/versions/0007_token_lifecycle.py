"""Token lifecycle: every bearer token expires (``tokens.expires_ms``).

Revision ID: 0007
Revises: 0006

A token is accepted until ``expires_ms`` (docs/registry-api.md, "Token lifetime and
revocation"). Tokens issued before this revision had no expiry: they get one at upgrade time,
the time of the upgrade plus :data:`UPGRADE_GRACE_MS` (90 days). They keep working after the
upgrade, so no party or inspector is locked out by it, and the operator has 90 days to issue
new tokens and revoke the old ones (docs/operations.md, "Rotating a token"). A token whose
``created_ms`` lies after that time (a clock set wrong when it was issued) gets
``created_ms`` plus 90 days instead, so that ``expires_ms > created_ms`` holds for every row.
Downgrading drops the column: the tokens are then accepted without limit again.
"""

from __future__ import annotations

import time
from typing import Final

import sqlalchemy as sa
from alembic import op

__all__ = [
    "UPGRADE_GRACE_MS",
    "branch_labels",
    "depends_on",
    "down_revision",
    "downgrade",
    "revision",
    "upgrade",
]

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

#: How long a token issued before this revision stays valid after the upgrade (90 days). Written
#: out, not read from tracecore.storage.registry: a revision must not change when the code does.
UPGRADE_GRACE_MS: Final = 90 * 24 * 3600 * 1000


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("expires_ms", sa.BigInteger(), nullable=True))
    grace_end = int(time.time() * 1000) + UPGRADE_GRACE_MS
    op.get_bind().execute(
        sa.text(
            "UPDATE tokens SET expires_ms = CASE WHEN created_ms < :grace_end THEN :grace_end "
            "ELSE created_ms + :grace END WHERE expires_ms IS NULL"
        ).bindparams(grace_end=grace_end, grace=UPGRADE_GRACE_MS)
    )
    with op.batch_alter_table("tokens") as batch:
        batch.alter_column("expires_ms", existing_type=sa.BigInteger(), nullable=False)
        batch.create_check_constraint("ck_tokens_expiry", "expires_ms > created_ms")


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("tokens") as batch:
        batch.drop_constraint("ck_tokens_expiry", type_="check")
        batch.drop_column("expires_ms")

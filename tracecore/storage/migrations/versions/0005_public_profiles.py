"""Public profiles: a party's English name, place and licence; a device's place.

Revision ID: 0005
Revises: 0004

Product and stall pages show who a producer is and where (county, province), and a chart names
each series after the place of the device that measured it (docs/registry-api.md). All columns
are optional: parties and devices registered before this revision keep working and show their
name and id only.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

_PARTY = ("name_en", "place", "place_en", "licence")
_DEVICE = ("place", "place_en")


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("parties") as batch:
        for column in _PARTY:
            batch.add_column(sa.Column(column, sa.Text(), nullable=True))
    with op.batch_alter_table("devices") as batch:
        for column in _DEVICE:
            batch.add_column(sa.Column(column, sa.Text(), nullable=True))


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("devices") as batch:
        for column in reversed(_DEVICE):
            batch.drop_column(column)
    with op.batch_alter_table("parties") as batch:
        for column in reversed(_PARTY):
            batch.drop_column(column)

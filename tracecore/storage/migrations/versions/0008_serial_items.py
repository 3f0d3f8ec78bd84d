"""Serialized items: one product per GTIN + serial, whatever its lot (``products.item_key``).

Revision ID: 0008
Revises: 0007

GS1 identifies a serialized item by its GTIN and serial alone: "when combined with a GTIN, a
serial number uniquely identifies an individual item" (GS1 General Specifications §3.5.2, AI
21), and the lot "is not part of the unique identification of a trade item" (§3.4.1, AI 10).
So ``01/{gtin}/10/L1/21/C7``, ``01/{gtin}/10/L2/21/C7`` and ``01/{gtin}/21/C7`` are one item
(docs/identifiers.md).

``products.item_key`` is that identity (``01/{gtin}/21/{serial}``, NULL for a lot), a column
the database generates from the key (virtual on SQLite, stored on PostgreSQL), so no writer can
store a product without it or with a wrong one. A unique index on (``item_key``, ``item_rank``)
makes a second product of one GTIN + serial impossible.

A database may already hold several products of one GTIN + serial (before this revision ingest
accepted them). The upgrade keeps every one of them, readable and provable as before: the one
commissioned first keeps ``item_rank`` 0, the others are numbered 1, 2, … in the order they were
commissioned, so the unique index can be built, and every new product of that GTIN + serial
still collides with the first one. Downgrading drops both columns; it refuses to run while a
rejection holds the reason ``serial_conflict``, which revision 0007 cannot store.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision: str = "0008"
down_revision: str | None = "0007"
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
)
_NEW_REASONS = (*_OLD_REASONS, "serial_conflict")

# The item of a canonical key: "/" count 5 is 01/{gtin}/10/{lot}/21/{serial} (GTIN, then the
# last segment), 3 with AI 21 after the GTIN is 01/{gtin}/21/{serial} itself, else a lot.
_SLASHES = """(length("key") - length(replace("key", '/', '')))"""
_ITEM_KEY_SQL = (
    f"CASE WHEN {_SLASHES} = 5 "
    """THEN substr("key", 1, 17) || '/21/' || """
    """substr("key", length(rtrim("key", replace("key", '/', ''))) + 1) """
    f"""WHEN {_SLASHES} = 3 AND substr("key", 18, 4) = '/21/' THEN "key" END"""
)


def _in(values: tuple[str, ...]) -> str:
    return f"reason IN ({', '.join(repr(v) for v in values)})"


def _rank_collisions() -> None:
    """Number the products that share a GTIN + serial: 0 for the first commissioned, then 1, …"""
    bind = op.get_bind()
    shared = [
        row[0]
        for row in bind.execute(
            sa.text(
                "SELECT item_key FROM products WHERE item_key IS NOT NULL "
                "GROUP BY item_key HAVING count(*) > 1 ORDER BY item_key"
            )
        )
    ]
    for start in range(0, len(shared), 500):  # in pages: a large table never sits in memory
        page = shared[start : start + 500]
        rows = bind.execute(
            sa.text(
                'SELECT item_key, "key" FROM products WHERE item_key IN :items '
                # The first commissioned first; products registered but never commissioned
                # after every commissioned one; then by time and key, so the order is total.
                "ORDER BY item_key, CASE WHEN commissioned_index IS NULL THEN 1 ELSE 0 END, "
                'commissioned_index, created_ms, "key"'
            ).bindparams(sa.bindparam("items", expanding=True)),
            {"items": page},
        ).all()
        ranks: list[dict[str, object]] = []
        previous, rank = None, 0
        for item, key in rows:
            rank = rank + 1 if item == previous else 0
            previous = item
            if rank:
                ranks.append({"b_key": key, "b_rank": rank})
        if ranks:
            bind.execute(
                sa.text('UPDATE products SET item_rank = :b_rank WHERE "key" = :b_key'), ranks
            )


def upgrade() -> None:
    """Apply this revision."""
    # Added columns and an index need no table copy on SQLite (products is referenced by
    # foreign keys of six tables: copying it inside the migration's transaction would break
    # them). A virtual generated column can be added to a SQLite table; PostgreSQL stores it.
    # PostgreSQL indexes stored generated columns only (18 adds virtual ones, not indexable).
    stored = True if op.get_bind().dialect.name == "postgresql" else None
    op.add_column(
        "products",
        sa.Column(
            "item_key", sa.String(255), sa.Computed(_ITEM_KEY_SQL, persisted=stored), nullable=True
        ),
    )
    op.add_column(
        "products",
        sa.Column(
            "item_rank",
            sa.Integer(),
            sa.CheckConstraint("item_rank >= 0", name="ck_products_item_rank"),
            nullable=False,
            server_default="0",
        ),
    )
    _rank_collisions()
    op.create_index(
        "uq_products_item_key_item_rank", "products", ["item_key", "item_rank"], unique=True
    )
    with op.batch_alter_table("rejections") as batch:
        batch.drop_constraint("ck_rejections_reason", type_="check")
        batch.create_check_constraint("ck_rejections_reason", _in(_NEW_REASONS))


def downgrade() -> None:
    """Revert this revision, if no rejection has the new reason (else raise, changing nothing)."""
    refused = (
        op.get_bind()
        .execute(sa.text("SELECT count(*) FROM rejections WHERE reason = 'serial_conflict'"))
        .scalar_one()
    )
    if refused:
        raise RuntimeError(
            f"cannot downgrade below 0008: {refused} rejection rows hold the reason "
            "serial_conflict, which revision 0007 cannot store"
        )
    with op.batch_alter_table("rejections") as batch:
        batch.drop_constraint("ck_rejections_reason", type_="check")
        batch.create_check_constraint("ck_rejections_reason", _in(_OLD_REASONS))
    op.drop_index("uq_products_item_key_item_rank", table_name="products")
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35+), not a batch copy of the referenced table.
    op.drop_column("products", "item_rank")
    op.drop_column("products", "item_key")
